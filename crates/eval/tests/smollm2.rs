//! The tokenizer and the model on the real SmolLM2-135M-Instruct file (workloads.md).
//! scripts/test.sh installs it and sets FASTQUERY_SMOLLM2, which makes these tests required;
//! elsewhere they say on stderr that they were skipped.

use std::{io::Write, path::PathBuf};

use fastquery_eval::{Evaluator, GPL3_PATH, Tokenizer};
use fastquery_table::{Table, load::Gguf};

fn model_path() -> Option<PathBuf> {
    let p = std::env::var_os("FASTQUERY_SMOLLM2").map(PathBuf::from);
    if p.is_none() {
        let _ =
            writeln!(std::io::stderr(), "SKIPPED: FASTQUERY_SMOLLM2 not set (scripts/install_smollm2.sh)");
    }
    p
}

/// Expected tokenizations, written as vocabulary entries (GPT-2 byte alphabet: `Ġ` is a space,
/// `Ċ` a newline) and turned into ids through the model's own vocabulary. The entries were
/// produced by the Hugging Face `tokenizers` BPE built from this GGUF's vocabulary and merges
/// with SmolLM2's pre-tokenizer (digits apart, then byte-level).
const CASES: &[(&str, &[&str])] = &[
    ("Hello world", &["Hello", "Ġworld"]),
    (" the License", &["Ġthe", "ĠLicense"]),
    ("GNU GENERAL PUBLIC LICENSE", &["GN", "U", "ĠGEN", "ERAL", "ĠPU", "BLIC", "ĠLICENSE"]),
    ("Version 3, 29 June 2007", &["Version", "Ġ", "3", ",", "Ġ", "2", "9", "ĠJune", "Ġ", "2", "0", "0", "7"]),
    ("it's   done\n\n", &["it", "'s", "ĠĠ", "Ġdone", "ĊĊ"]),
];

#[test]
fn tokenizer_reproduces_the_vocabulary_s_tokenization() {
    let Some(path) = model_path() else { return };
    let g = Gguf::open(&path).expect("the installed GGUF parses");
    let tk = Tokenizer::from_gguf(&g).expect("byte-level BPE");
    assert_eq!(tk.vocab_size(), 49152);
    for (text, entries) in CASES {
        let want: Vec<u32> = entries
            .iter()
            .map(|e| tk.token_id(e).unwrap_or_else(|| panic!("'{e}' in the vocabulary")))
            .collect();
        assert_eq!(tk.encode(text).unwrap(), want, "{text:?}");
        assert_eq!(tk.decode(&want), *text);
    }
    // The whole evaluation text: tokens decode back to it, and BPE compresses English.
    let text = std::fs::read_to_string(GPL3_PATH).expect("Debian's GPL-3 text");
    let ids = tk.encode(&text).unwrap();
    assert_eq!(tk.decode(&ids), text);
    assert!(ids.len() * 3 < text.len(), "{} tokens for {} bytes", ids.len(), text.len());
}

#[test]
fn the_model_predicts_english_and_reads_the_table_it_is_given() {
    let Some(path) = model_path() else { return };
    let ev = Evaluator::new(&path, GPL3_PATH.as_ref(), 128, Some(256)).expect("model loads");
    let c = ev.model().config();
    assert_eq!((c.layers, c.hidden, c.heads, c.kv_heads, c.vocab), (30, 576, 9, 3, 49152));
    let orig = ev.perplexity(ev.original()).unwrap();
    assert_eq!(orig.predicted, 254);
    // A working 135M model on license English: far below the vocabulary's 49152 (a wrong rope,
    // norm or head layout lands in the hundreds or thousands).
    assert!(orig.ppl > 1.0 && orig.ppl < 60.0, "perplexity {}", orig.ppl);
    // Deterministic.
    assert_eq!(ev.perplexity(ev.original()).unwrap().ppl, orig.ppl);
    // The input lookup reads the table given: rows moved to other tokens ruin the prediction,
    // while the output head (tied, the original) is unchanged.
    let t = ev.original();
    let shifted: Vec<f32> = (0..t.m()).flat_map(|k| t.row((k + 1) % t.m()).to_vec()).collect();
    let shifted = Table::new(t.m(), t.d(), shifted).unwrap();
    let bad = ev.perplexity(&shifted).unwrap();
    assert!(bad.ppl > 3.0 * orig.ppl, "shifted rows: {} vs {}", bad.ppl, orig.ppl);
    // A wrong shape is an error, not a panic.
    assert!(ev.perplexity(&Table::new(2, 576, vec![0.0; 1152]).unwrap()).is_err());
}
