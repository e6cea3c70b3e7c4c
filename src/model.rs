//! A decoder-only transformer of the Llama family: RMSNorm, rotary position embeddings
//! (half-rotation, as in Hugging Face's Llama), a SwiGLU MLP and grouped-query attention,
//! with optional tied input/output embeddings. One config with named presets.

use burn::config::Config;
use burn::module::Module;
use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{self, Error};
use crate::rng::Rng;

/// Added to attention scores that must not be attended to. Finite, so a query with no
/// visible key (a left pad) gets a uniform, harmless distribution instead of NaN.
pub const MASKED: f32 = -1e9;

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

    /// The largest single f32 tensor a training step on `batch` full-length rows holds, and
    /// what it is: the one that must fit a GPU's per-buffer limit.
    pub fn largest_buffer(&self, batch: usize) -> (&'static str, u64) {
        let (b, t) = (batch as u64, self.max_seq_len as u64);
        let candidates = [
            ("logits", b * t * self.vocab_size as u64),
            ("embedding", (self.vocab_size * self.d_model) as u64),
            ("MLP weight", (self.d_ff * self.d_model) as u64),
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
        Ok(())
    }

    /// A model with weights drawn on the host from `seed`: the same numbers on every backend
    /// and independent of any other random draws (burn's device RNG is shared and lazy).
    pub fn init(&self, seed: u64, device: &Device) -> Model {
        let mut init = Init { rng: Rng::new(seed), device };
        // GPT-2's scaling of the residual projections keeps the stream's variance flat in depth.
        let (std, resid) = (0.02, 0.02 / (2.0 * self.n_layers as f32).sqrt());
        let kv = self.n_kv_heads * self.head_dim();
        let d = self.d_model;
        let blocks = (0..self.n_layers)
            .map(|_| Block {
                attn_norm: init.norm(d, self.norm_eps),
                wq: init.linear(d, d, std),
                wk: init.linear(d, kv, std),
                wv: init.linear(d, kv, std),
                wo: init.linear(d, d, resid),
                mlp_norm: init.norm(d, self.norm_eps),
                w_gate: init.linear(d, self.d_ff, std),
                w_up: init.linear(d, self.d_ff, std),
                w_down: init.linear(self.d_ff, d, resid),
            })
            .collect();
        Model {
            embed: Embedding { weight: init.normal([self.vocab_size, d], std) },
            blocks,
            norm: init.norm(d, self.norm_eps),
            lm_head: (!self.tie_embeddings).then(|| init.linear(d, self.vocab_size, std)),
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim(),
            rope_theta: self.rope_theta,
            max_seq_len: self.max_seq_len,
        }
    }
}

struct Init<'a> {
    rng: Rng,
    device: &'a Device,
}

impl Init<'_> {
    /// N(0, std²) by Box-Muller.
    fn normal(&mut self, shape: [usize; 2], std: f32) -> Param<Tensor<2>> {
        let n = shape[0] * shape[1];
        let mut v = Vec::with_capacity(n + 1);
        while v.len() < n {
            let u1 = self.rng.next_f32().max(f32::MIN_POSITIVE);
            let u2 = self.rng.next_f32();
            let r = (-2.0 * u1.ln()).sqrt() * std;
            let theta = 2.0 * std::f32::consts::PI * u2;
            v.push(r * theta.cos());
            v.push(r * theta.sin());
        }
        v.truncate(n);
        Param::from_data(TensorData::new(v, shape), self.device)
    }

    /// Weight stored `[d_in, d_out]`, burn's row layout; no bias, as in Llama.
    fn linear(&mut self, d_in: usize, d_out: usize, std: f32) -> Linear {
        Linear { weight: self.normal([d_in, d_out], std), bias: None }
    }

    fn norm(&mut self, d: usize, epsilon: f64) -> RmsNorm {
        RmsNorm { gamma: Param::from_data(TensorData::new(vec![1.0f32; d], [d]), self.device), epsilon }
    }
}

#[derive(Module, Debug)]
pub struct Block {
    attn_norm: RmsNorm,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    mlp_norm: RmsNorm,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
}

#[derive(Module, Debug)]
pub struct Model {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Linear>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    rope_theta: f64,
    max_seq_len: usize,
}

/// Keys and values of the positions seen so far, per layer: `[batch, kv_heads, len, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// cos and sin of the rotation angles for positions `start..start + len`: `[1, 1, len, half]`.
fn rope_tables(start: usize, len: usize, head_dim: usize, theta: f64, device: &Device) -> (Tensor<4>, Tensor<4>) {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(len * half);
    let mut sin = Vec::with_capacity(len * half);
    for pos in start..start + len {
        for i in 0..half {
            let inv_freq = theta.powf(-2.0 * i as f64 / head_dim as f64);
            let angle = pos as f64 * inv_freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let table = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, len, half]), device);
    (table(cos), table(sin))
}

fn rotate(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(
        vec![
            x1.clone() * cos.clone() - x2.clone() * sin.clone(),
            x2 * cos.clone() + x1 * sin.clone(),
        ],
        3,
    )
}

/// `[b, kv, t, d]` -> `[b, kv * rep, t, d]`, each kv head serving `rep` query heads.
fn repeat_kv(x: Tensor<4>, rep: usize) -> Tensor<4> {
    if rep == 1 {
        return x;
    }
    let [b, kv, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kv, rep, t, d]).reshape([b, kv * rep, t, d])
}

impl Block {
    fn forward(
        &self,
        x: Tensor<3>,
        rope: &(Tensor<4>, Tensor<4>),
        bias: &Tensor<4>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
        shape: (usize, usize, usize),
    ) -> Tensor<3> {
        let (n_heads, n_kv, hd) = shape;
        let [b, t, d] = x.dims();
        let h = self.attn_norm.forward(x.clone());
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
        let q = rotate(heads(self.wq.forward(h.clone()), n_heads), &rope.0, &rope.1);
        let mut k = rotate(heads(self.wk.forward(h.clone()), n_kv), &rope.0, &rope.1);
        let mut v = heads(self.wv.forward(h), n_kv);
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.take() {
                k = Tensor::cat(vec![pk, k], 2);
                v = Tensor::cat(vec![pv, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let rep = n_heads / n_kv;
        let k = repeat_kv(k, rep);
        let v = repeat_kv(v, rep);
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (hd as f64).sqrt()) + bias.clone();
        let attn = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        let x = x + self.wo.forward(attn);
        let h = self.mlp_norm.forward(x.clone());
        let mlp = self.w_down.forward(silu(self.w_gate.forward(h.clone())) * self.w_up.forward(h));
        x + mlp
    }
}

impl Model {
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Logits `[batch, len, vocab]` for `tokens` `[batch, len]`. `bias` is added to the
    /// attention scores, `[batch or 1, 1, len, cached + len]`: the causal mask, plus padding.
    /// With a cache, `tokens` continue the cached positions and are appended to it.
    pub fn forward(&self, tokens: Tensor<2, Int>, bias: Tensor<4>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let start = cache.as_ref().map_or(0, |c| c.len);
        let rope = rope_tables(start, t, self.head_dim, self.rope_theta, &device);
        let shape = (self.n_heads, self.n_kv_heads, self.head_dim);
        if let Some(c) = cache.as_deref_mut() {
            c.layers.resize(self.blocks.len(), None);
            c.len += t;
        }
        let mut x = self.embed.forward(tokens);
        for (i, block) in self.blocks.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = block.forward(x, &rope, &bias, slot, shape);
        }
        let x = self.norm.forward(x);
        match &self.lm_head {
            Some(head) => head.forward(x),
            None => {
                let d = x.dims()[2];
                let w = self.embed.weight.val();
                let vocab = w.dims()[0];
                x.reshape([b * t, d]).matmul(w.transpose()).reshape([b, t, vocab])
            }
        }
    }

    /// Causal-only forward for right-padded batches (training, scoring).
    pub fn forward_causal(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let t = tokens.dims()[1];
        let bias = causal_bias(t, &tokens.device());
        self.forward(tokens, bias, None)
    }
}

/// `[1, 1, t, t]`: 0 on and below the diagonal, [`MASKED`] above.
pub fn causal_bias(t: usize, device: &Device) -> Tensor<4> {
    let mut v = vec![0.0f32; t * t];
    for i in 0..t {
        for j in i + 1..t {
            v[i * t + j] = MASKED;
        }
    }
    Tensor::from_data(TensorData::new(v, [1, 1, t, t]), device)
}

/// Attention bias for `q_len` new queries over `key_valid.len()` keys per row, where the last
/// `q_len` keys are the new positions: a key is visible if valid and not in the future.
pub fn padded_bias(key_valid: &[Vec<bool>], q_len: usize, device: &Device) -> Tensor<4> {
    let b = key_valid.len();
    let k_len = key_valid[0].len();
    let offset = k_len - q_len;
    let mut v = vec![0.0f32; b * q_len * k_len];
    for (row, valid) in key_valid.iter().enumerate() {
        for i in 0..q_len {
            for (j, ok) in valid.iter().enumerate() {
                if !ok || j > offset + i {
                    v[(row * q_len + i) * k_len + j] = MASKED;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [b, 1, q_len, k_len]), device)
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
