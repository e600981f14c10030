//! The GGUF's own tokenizer: byte-level BPE (`tokenizer.ggml.model = gpt2`) with the vocabulary
//! and merge ranks stored in the file.
//!
//! Pre-tokenization follows the file's `tokenizer.ggml.pre`. SmolLM2 says `smollm`: every digit
//! is its own piece, then the GPT-2 pattern
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` splits the rest.
//! The pattern is matched by hand below (no regex engine with look-ahead is needed). Each piece's
//! UTF-8 bytes are mapped to GPT-2's printable byte alphabet and merged by rank, lowest first.

use std::collections::HashMap;

use fastquery_table::load::Gguf;

use crate::EvalError;

/// A byte-level BPE tokenizer read from a GGUF file.
#[derive(Debug)]
pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    ranks: HashMap<(String, String), u32>,
    byte_char: [char; 256],
    digits_apart: bool,
}

/// GPT-2's map from bytes to printable characters: printable Latin-1 bytes stand for themselves,
/// the others are shifted to U+0100 and up, in byte order.
fn byte_chars() -> [char; 256] {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    let mut out = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        out[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('\0')
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('\0')
        };
    }
    out
}

impl Tokenizer {
    /// Reads the vocabulary and merges of `gguf`.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self, EvalError> {
        let model = gguf.require("tokenizer.ggml.model")?.as_str().unwrap_or("");
        if model != "gpt2" {
            return Err(EvalError::Model(format!("tokenizer model '{model}' (only byte-level BPE, gpt2)")));
        }
        let pre = gguf.meta("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
        let digits_apart = match pre {
            "smollm" | "starcoder" | "refact" | "codeshell" => true,
            "default" | "gpt2" | "gpt-2" => false,
            other => return Err(EvalError::Model(format!("pre-tokenizer '{other}' is not supported"))),
        };
        let strings = |key: &str| -> Result<Vec<String>, EvalError> {
            gguf.require(key)?
                .as_array()
                .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>())
                .ok_or_else(|| EvalError::Model(format!("'{key}' is not an array of strings")))
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let ids = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let mut ranks = HashMap::new();
        for (rank, m) in strings("tokenizer.ggml.merges")?.into_iter().enumerate() {
            let (a, b) =
                m.split_once(' ').ok_or_else(|| EvalError::Model(format!("merge '{m}' has no space")))?;
            ranks.insert((a.to_owned(), b.to_owned()), rank as u32);
        }
        Ok(Self { tokens, ids, ranks, byte_char: byte_chars(), digits_apart })
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of a vocabulary entry (in the byte alphabet, e.g. `Ġthe` for " the").
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// A token's vocabulary entry.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Text to token ids (no BOS: SmolLM2's `add_bos_token` is false).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EvalError> {
        let mut cache: HashMap<&str, Vec<u32>> = HashMap::new();
        let mut out = Vec::with_capacity(text.len() / 3);
        for piece in self.pieces(text) {
            if let Some(ids) = cache.get(piece) {
                out.extend_from_slice(ids);
                continue;
            }
            let ids = self.bpe(piece)?;
            out.extend_from_slice(&ids);
            cache.insert(piece, ids);
        }
        Ok(out)
    }

    /// Token ids back to text.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut inverse = HashMap::new();
        for (b, c) in self.byte_char.iter().enumerate() {
            inverse.insert(*c, b as u8);
        }
        let bytes: Vec<u8> = ids
            .iter()
            .filter_map(|&i| self.token(i))
            .flat_map(|t| t.chars().filter_map(|c| inverse.get(&c).copied()).collect::<Vec<_>>())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Merges one pre-tokenized piece.
    fn bpe(&self, piece: &str) -> Result<Vec<u32>, EvalError> {
        let mut symbols: Vec<String> =
            piece.bytes().map(|b| self.byte_char[usize::from(b)].to_string()).collect();
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.ranks.get(&(w[0].clone(), w[1].clone())).map(|&r| (r, i)))
                .min();
            let Some((_, i)) = best else { break };
            let right = symbols.remove(i + 1);
            symbols[i].push_str(&right);
        }
        symbols
            .iter()
            .map(|s| {
                self.token_id(s).ok_or_else(|| {
                    EvalError::Model(format!("symbol '{s}' of '{piece}' is not in the vocabulary"))
                })
            })
            .collect()
    }

    /// Pre-tokenization: the pieces that BPE merges independently.
    fn pieces<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut out = Vec::new();
        if !self.digits_apart {
            gpt2_split(text, &mut out);
            return out;
        }
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if c.is_numeric() {
                gpt2_split(&text[start..i], &mut out);
                out.push(&text[i..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        gpt2_split(&text[start..], &mut out);
        out
    }
}

/// The GPT-2 pattern, matched left to right with its alternatives in order.
fn gpt2_split<'t>(text: &'t str, out: &mut Vec<&'t str>) {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let at = |i: usize| if i < n { chars[i].0 } else { text.len() };
    let class = |c: char| {
        if c.is_alphabetic() {
            0
        } else if c.is_numeric() {
            1
        } else if c.is_whitespace() {
            3
        } else {
            2
        }
    };
    let mut i = 0;
    while i < n {
        let end = 'found: {
            // 's 't 're 've 'm 'll 'd
            if chars[i].1 == '\'' {
                for suffix in ["s", "t", "re", "ve", "m", "ll", "d"] {
                    if text[at(i + 1)..].starts_with(suffix) {
                        break 'found i + 1 + suffix.len();
                    }
                }
            }
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
            let j = if chars[i].1 == ' ' && i + 1 < n { i + 1 } else { i };
            let k = class(chars[j].1);
            if k != 3 {
                let mut e = j + 1;
                while e < n && class(chars[e].1) == k {
                    e += 1;
                }
                break 'found e;
            }
            // `\s+(?!\S)`, then `\s+`
            let mut e = i + 1;
            while e < n && chars[e].1.is_whitespace() {
                e += 1;
            }
            if e < n && e - i > 1 { e - 1 } else { e }
        };
        out.push(&text[at(i)..at(end)]);
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        let mut v = Vec::new();
        gpt2_split(s, &mut v);
        v
    }

    #[test]
    fn gpt2_pattern_splits_like_the_regex() {
        assert_eq!(split("Hello world"), ["Hello", " world"]);
        assert_eq!(split("it's  fine\n\nok"), ["it", "'s", " ", " fine", "\n", "\n", "ok"]);
        assert_eq!(split("a  b"), ["a", " ", " b"]);
        assert_eq!(split("end   "), ["end", "   "]);
        assert_eq!(split("x, (y)!"), ["x", ",", " (", "y", ")!"]);
        assert_eq!(split(" 42 x"), [" 42", " x"]);
        assert_eq!(split("\tTab"), ["\t", "Tab"]);
        // Pieces always tile the text.
        let s = "GNU GENERAL PUBLIC LICENSE\n   Version 3, 29 June 2007\n\n Copyright (C) 2007";
        assert_eq!(split(s).concat(), s);
    }

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let m = byte_chars();
        let set: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(m[usize::from(b' ')], 'Ġ');
        assert_eq!(m[usize::from(b'\n')], 'Ċ');
        assert_eq!(m[usize::from(b'A')], 'A');
    }
}
