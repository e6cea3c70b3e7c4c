//! The transformer's shape: one config with named presets, checked before anything is built.

use burn::config::Config;

use super::LoraConfig;
use crate::error::{self, Error};

#[derive(Config, Debug)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_ff: usize,
    #[config(default = 256)]
    pub max_seq_len: usize,
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    #[config(default = true)]
    pub tie_embeddings: bool,
    /// Biases on the query, key and value projections (Qwen2).
    #[config(default = false)]
    pub attention_bias: bool,
    /// LoRA adapters beside the projections, trained while the rest stays frozen.
    pub lora: Option<LoraConfig>,
}

pub const PRESETS: &[&str] = &["tiny", "small", "smollm2-135m"];

impl ModelConfig {
    /// Test size: builds and trains in seconds, even on a software GPU.
    pub fn tiny(vocab_size: usize) -> Self {
        Self::new(vocab_size, 32, 2, 4, 2, 64).with_max_seq_len(128)
    }

    /// The built-in demo: a few million parameters.
    pub fn small(vocab_size: usize) -> Self {
        Self::new(vocab_size, 192, 4, 6, 2, 512).with_max_seq_len(160)
    }

    /// SmolLM2-135M's shape, for its real weights.
    pub fn smollm2_135m() -> Self {
        Self::new(49152, 576, 30, 9, 3, 1536)
            .with_max_seq_len(2048)
            .with_rope_theta(100000.0)
    }

    pub fn preset(name: &str, vocab_size: usize) -> error::Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny(vocab_size)),
            "small" => Ok(Self::small(vocab_size)),
            "smollm2-135m" => Ok(Self::smollm2_135m()),
            other => Err(Error::Config(format!(
                "unknown model preset {other:?}; choose one of {}",
                PRESETS.join(", ")
            ))),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// The largest single f32 tensor a training step on `batch` rows of `seq_len` tokens, or a
    /// decode step, holds, and what it is: the one that must fit a GPU's per-buffer limit.
    pub fn largest_buffer(&self, batch: usize, seq_len: usize) -> (&'static str, u64) {
        let (b, t) = (batch as u64, seq_len as u64);
        let kv_width = self.n_kv_heads * self.head_dim();
        let candidates = [
            ("logits", b * t * self.vocab_size as u64),
            ("embedding", (self.vocab_size * self.d_model) as u64),
            ("MLP weight", (self.d_ff * self.d_model) as u64),
            // A decode step's q, k and v weights side by side, with a row for their biases
            // (`kernels::qkv`): the largest weight of a model with few MLP columns per head.
            ("joined q/k/v weight", ((self.d_model + 1) * (self.d_model + 2 * kv_width)) as u64),
            ("attention scores", b * self.n_heads as u64 * t * t),
            ("MLP activations", b * t * self.d_ff as u64),
        ];
        let (what, n) = candidates.into_iter().max_by_key(|c| c.1).expect("non-empty");
        (what, n * 4)
    }

    pub fn validate(&self) -> error::Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.d_model % self.n_heads != 0 {
            return fail(format!("d_model {} is not a multiple of n_heads {}", self.d_model, self.n_heads));
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return fail(format!("n_heads {} is not a multiple of n_kv_heads {}", self.n_heads, self.n_kv_heads));
        }
        if self.head_dim() % 2 != 0 {
            return fail(format!("head dim {} must be even for rotary embeddings", self.head_dim()));
        }
        if self.vocab_size == 0 || self.n_layers == 0 {
            return fail("vocab_size and n_layers must be positive".into());
        }
        match &self.lora {
            // A rank above the narrowest projection's width is no longer low-rank.
            Some(lora) => lora.validate(self.d_model.min(self.n_kv_heads * self.head_dim())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for p in PRESETS {
            ModelConfig::preset(p, 512).unwrap().validate().unwrap();
        }
        assert!(ModelConfig::preset("huge", 10).is_err());
        let bad = ModelConfig::new(10, 30, 1, 4, 2, 8);
        assert!(bad.validate().unwrap_err().to_string().contains("multiple of n_heads"));
    }
}
