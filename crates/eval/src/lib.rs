//! # fastquery-eval
//!
//! Accuracy measured on a real LLM rather than on reconstruction error alone (issue 4): the
//! model's own tokenizer read from its GGUF file ([`Tokenizer`]), a LLaMA forward pass on the CPU
//! with candle ([`Llama`]), and perplexity over a text with the original input-embedding table
//! and with a quantized one, every other weight unchanged ([`Evaluator`]).
//!
//! The workload is SmolLM2-135M-Instruct over the GPL-3 text Debian installs at
//! `/usr/share/common-licenses/GPL-3` (workloads.md).
#![forbid(unsafe_code)]

mod model;
mod tokenizer;

use std::path::Path;

use fastquery_table::{Table, TableError, load::Gguf};
use thiserror::Error;

pub use model::{Config, Llama, Perplexity};
pub use tokenizer::Tokenizer;

/// Where Debian installs the GPL-3 text.
pub const GPL3_PATH: &str = "/usr/share/common-licenses/GPL-3";

/// Errors of this crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The model file.
    #[error(transparent)]
    Table(#[from] TableError),
    /// A model or tokenizer the evaluator cannot run, or a failed computation.
    #[error("model: {0}")]
    Model(String),
    /// The evaluation text.
    #[error("cannot read the evaluation text {path}: {reason}")]
    Text { path: String, reason: String },
}

/// A model, its original input-embedding table and a tokenized text, ready to measure
/// perplexity with any table of the same shape.
#[derive(Debug)]
pub struct Evaluator {
    model: Llama,
    tokenizer: Tokenizer,
    original: Table,
    tokens: Vec<u32>,
    window: usize,
}

impl Evaluator {
    /// Loads the model and tokenizer of `gguf`, and tokenizes the text at `text` (at most
    /// `max_tokens` of it), to be evaluated in windows of `window` tokens.
    pub fn new(
        gguf: &Path,
        text: &Path,
        window: usize,
        max_tokens: Option<usize>,
    ) -> Result<Self, EvalError> {
        let g = Gguf::open(gguf)?;
        let tokenizer = Tokenizer::from_gguf(&g)?;
        let model = Llama::from_gguf(&g)?;
        let original = g.table("token_embd.weight")?;
        drop(g);
        let s = std::fs::read_to_string(text)
            .map_err(|e| EvalError::Text { path: text.display().to_string(), reason: e.to_string() })?;
        let mut tokens = tokenizer.encode(&s)?;
        if let Some(n) = max_tokens {
            tokens.truncate(n);
        }
        Ok(Self { model, tokenizer, original, tokens, window })
    }

    /// The original input-embedding table (`token_embd.weight`, dequantized).
    pub fn original(&self) -> &Table {
        &self.original
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The evaluation tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The model.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// Perplexity with `embed` as the input lookup (the output head is always the original).
    pub fn perplexity(&self, embed: &Table) -> Result<Perplexity, EvalError> {
        self.model.perplexity(&self.tokens, embed, self.window)
    }
}
