//! A LLaMA forward pass on the CPU with candle, reading its weights from a GGUF file.
//!
//! Every weight is dequantized to f32 once (exactly as ggml defines the block formats, by
//! `fastquery_table::load`), so the model evaluated is the file's model with f32 activations.
//! The input embedding is supplied by the caller per evaluation (the original or a quantized
//! table); the output head is the file's own `output.weight`, or, for a tied model such as
//! SmolLM2, the file's original `token_embd.weight`: the private query replaces the input lookup
//! and nothing else.
//!
//! RoPE rotates adjacent pairs `(x[2i], x[2i+1])`: GGUF's LLaMA Q and K weights are stored
//! permuted for that convention (llama.cpp's "normal" rope mode).

use candle_core::{D, DType, Device, Tensor};
use fastquery_table::{Table, load::Gguf};

use crate::EvalError;

/// The architecture's sizes, from the GGUF metadata.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Transformer blocks.
    pub layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// RoPE base.
    pub rope_base: f64,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// Vocabulary size.
    pub vocab: usize,
}

#[derive(Debug)]
struct Block {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    ffn_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// A LLaMA model without its input embedding.
#[derive(Debug)]
pub struct Llama {
    config: Config,
    blocks: Vec<Block>,
    norm: Tensor,
    head: Tensor,
    dev: Device,
}

fn candle(e: candle_core::Error) -> EvalError {
    EvalError::Model(e.to_string())
}

impl Llama {
    /// Loads the model of a GGUF file (`general.architecture = llama`).
    pub fn from_gguf(g: &Gguf) -> Result<Self, EvalError> {
        let arch = g.require("general.architecture")?.as_str().unwrap_or("");
        if arch != "llama" {
            return Err(EvalError::Model(format!("architecture '{arch}' (only llama)")));
        }
        let int = |k: &str| -> Result<usize, EvalError> {
            g.require(&format!("llama.{k}"))?
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| EvalError::Model(format!("llama.{k} is not an integer")))
        };
        let float =
            |k: &str, default: f64| g.meta(&format!("llama.{k}")).and_then(|v| v.as_f64()).unwrap_or(default);
        let head_table = g.tensor_info("output.weight").map_or("token_embd.weight", |_| "output.weight");
        let head = g.table(head_table)?;
        let config = Config {
            layers: int("block_count")?,
            hidden: int("embedding_length")?,
            heads: int("attention.head_count")?,
            kv_heads: int("attention.head_count_kv").unwrap_or(int("attention.head_count")?),
            rope_base: float("rope.freq_base", 10000.0),
            eps: float("attention.layer_norm_rms_epsilon", 1e-5),
            vocab: head.m(),
        };
        if config.heads == 0
            || config.kv_heads == 0
            || !config.heads.is_multiple_of(config.kv_heads)
            || !config.hidden.is_multiple_of(config.heads)
            || !(config.hidden / config.heads).is_multiple_of(2)
        {
            return Err(EvalError::Model(format!("inconsistent sizes {config:?}")));
        }
        let dev = Device::Cpu;
        let load = |name: &str, shape: &[usize]| -> Result<Tensor, EvalError> {
            let (dims, values) = g.tensor_f32(name)?;
            let want: Vec<u64> = shape.iter().rev().map(|&s| s as u64).collect();
            if dims != want {
                return Err(EvalError::Model(format!("{name} has dimensions {dims:?}, expected {want:?}")));
            }
            Tensor::from_vec(values, shape, &dev).map_err(candle)
        };
        let (h, kv) = (config.hidden, config.hidden / config.heads * config.kv_heads);
        let ff = int("feed_forward_length")?;
        let blocks = (0..config.layers)
            .map(|l| {
                let p = |s: &str| format!("blk.{l}.{s}.weight");
                // Linear weights are `out x in`; stored transposed once so that `x @ w` is a plain
                // row-major product.
                let lin = |s: &str, o: usize, i: usize| -> Result<Tensor, EvalError> {
                    load(&p(s), &[o, i])?.t().and_then(|t| t.contiguous()).map_err(candle)
                };
                Ok(Block {
                    attn_norm: load(&p("attn_norm"), &[h])?,
                    wq: lin("attn_q", h, h)?,
                    wk: lin("attn_k", kv, h)?,
                    wv: lin("attn_v", kv, h)?,
                    wo: lin("attn_output", h, h)?,
                    ffn_norm: load(&p("ffn_norm"), &[h])?,
                    gate: lin("ffn_gate", ff, h)?,
                    up: lin("ffn_up", ff, h)?,
                    down: lin("ffn_down", h, ff)?,
                })
            })
            .collect::<Result<Vec<_>, EvalError>>()?;
        if head.d() != h {
            return Err(EvalError::Model(format!("{head_table} has width {}, hidden size {h}", head.d())));
        }
        let head = Tensor::from_vec(head.data().to_vec(), (head.m(), h), &dev)
            .and_then(|t| t.t())
            .and_then(|t| t.contiguous())
            .map_err(candle)?;
        let norm = load("output_norm.weight", &[h])?;
        Ok(Self { config, blocks, norm, head, dev })
    }

    /// The architecture.
    pub fn config(&self) -> Config {
        self.config
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(ms + self.config.eps)?.sqrt()?)?.broadcast_mul(w)
    }

    /// Rotates adjacent pairs of `x` (`heads x T x hd`) by position.
    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        let (hn, t, hd) = x.dims3()?;
        let x = x.reshape((hn, t, hd / 2, 2))?;
        let (a, b) = (x.narrow(3, 0, 1)?, x.narrow(3, 1, 1)?);
        let ra = (a.broadcast_mul(cos)? - b.broadcast_mul(sin)?)?;
        let rb = (a.broadcast_mul(sin)? + b.broadcast_mul(cos)?)?;
        Tensor::cat(&[ra, rb], 3)?.reshape((hn, t, hd))
    }

    /// The sum of `-ln p(tokens[i+1] | tokens[..=i])` over one window, with the input embedding
    /// rows taken from `embed`; returns (sum, count).
    fn window_nll(&self, tokens: &[u32], embed: &Table) -> candle_core::Result<(f64, usize)> {
        let c = self.config;
        let (t, hd) = (tokens.len(), c.hidden / c.heads);
        let group = c.heads / c.kv_heads;
        let rows: Vec<f32> = tokens.iter().flat_map(|&k| embed.row(k as usize).iter().copied()).collect();
        let mut x = Tensor::from_vec(rows, (t, c.hidden), &self.dev)?;
        // Position p, pair i: angle p * base^(-2i/hd).
        let angles: Vec<f32> = (0..t)
            .flat_map(|p| {
                (0..hd / 2).map(move |i| (p as f64 * c.rope_base.powf(-2.0 * i as f64 / hd as f64)) as f32)
            })
            .collect();
        let angles = Tensor::from_vec(angles, (1, t, hd / 2, 1), &self.dev)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let mask: Vec<f32> =
            (0..t * t).map(|i| if i % t > i / t { f32::NEG_INFINITY } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, (1, t, t), &self.dev)?;
        let scale = 1.0 / (hd as f64).sqrt();
        for b in &self.blocks {
            let h = self.rms_norm(&x, &b.attn_norm)?;
            let heads =
                |w: &Tensor, n: usize| h.matmul(w)?.reshape((t, n, hd))?.transpose(0, 1)?.contiguous();
            let q = self.rope(&heads(&b.wq, c.heads)?, &cos, &sin)?;
            let k = self.rope(&heads(&b.wk, c.kv_heads)?, &cos, &sin)?;
            let v = heads(&b.wv, c.kv_heads)?;
            // Query head j reads key/value head j / group.
            let expand = |z: Tensor| -> candle_core::Result<Tensor> {
                z.unsqueeze(1)?.expand((c.kv_heads, group, t, hd))?.reshape((c.heads, t, hd))
            };
            let (k, v) = (expand(k)?, expand(v)?);
            let att = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&mask)?;
            let att = att.broadcast_sub(&att.max_keepdim(D::Minus1)?)?.exp()?;
            let att = att.broadcast_div(&att.sum_keepdim(D::Minus1)?)?;
            let o = att.matmul(&v)?.transpose(0, 1)?.contiguous()?.reshape((t, c.hidden))?;
            x = (x + o.matmul(&b.wo)?)?;
            let h = self.rms_norm(&x, &b.ffn_norm)?;
            let f = (h.matmul(&b.gate)?.silu()? * h.matmul(&b.up)?)?;
            x = (x + f.matmul(&b.down)?)?;
        }
        let x = self.rms_norm(&x.narrow(0, 0, t - 1)?, &self.norm)?;
        let logits = x.matmul(&self.head)?;
        let lse = logits.log_sum_exp(D::Minus1)?;
        let targets: Vec<u32> = tokens[1..].to_vec();
        let targets = Tensor::from_vec(targets, (t - 1, 1), &self.dev)?;
        let picked = logits.gather(&targets, 1)?.squeeze(1)?;
        let nll = (lse - picked)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        Ok((nll, t - 1))
    }

    /// Perplexity over `tokens` in non-overlapping windows of `window` tokens (each window starts
    /// with an empty context; its first token is context only), with the input embedding from
    /// `embed`.
    pub fn perplexity(&self, tokens: &[u32], embed: &Table, window: usize) -> Result<Perplexity, EvalError> {
        if (embed.m(), embed.d()) != (self.config.vocab, self.config.hidden) {
            return Err(EvalError::Model(format!(
                "embedding table {} x {} for a model of {} x {}",
                embed.m(),
                embed.d(),
                self.config.vocab,
                self.config.hidden
            )));
        }
        if window < 2 {
            return Err(EvalError::Model("the window must hold at least 2 tokens".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&k| k as usize >= embed.m()) {
            return Err(EvalError::Model(format!("token id {bad} outside the vocabulary")));
        }
        let (mut nll, mut count) = (0.0, 0);
        for w in tokens.chunks(window).filter(|w| w.len() >= 2) {
            let (s, n) = self.window_nll(w, embed).map_err(candle)?;
            nll += s;
            count += n;
        }
        if count == 0 {
            return Err(EvalError::Model("fewer than two tokens to evaluate".into()));
        }
        Ok(Perplexity { ppl: (nll / count as f64).exp(), nll, predicted: count })
    }
}

/// A perplexity measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood).
    pub ppl: f64,
    /// The summed negative log-likelihood (nats).
    pub nll: f64,
    /// Tokens predicted.
    pub predicted: usize,
}
