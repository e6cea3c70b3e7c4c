//! A model built: weights drawn from a seed (`ModelConfig::init`, a run from scratch) or read
//! by name from a checkpoint in another format (`ModelConfig::load`, Hugging Face's names and
//! layout), every shape checked.

use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::{Device, Tensor, TensorData};

use super::transformer::{Block, Model};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Where a model's weights come from when they are not drawn: a tensor by its Hugging Face
/// name (`model.layers.0.self_attn.q_proj.weight`, ...) and shape, in Hugging Face's layout
/// (a linear layer's weight is `[out, in]`), as f32 values in row-major order.
pub type WeightSource<'a> = dyn FnMut(&str, &[usize]) -> Result<Vec<f32>> + 'a;

trait WithBias {
    fn with_bias(self, bias: bool, device: &Device) -> Self;
}

impl WithBias for Linear {
    /// A zero bias when `bias` (drawn models start without one's effect).
    fn with_bias(mut self, bias: bool, device: &Device) -> Self {
        if bias {
            let d_out = self.weight.dims()[1];
            self.bias = Some(Param::from_data(TensorData::new(vec![0.0f32; d_out], [d_out]), device));
        }
        self
    }
}

/// Builds a model from a [`WeightSource`], checking every shape.
struct Loaded<'a, 'b> {
    source: &'a mut WeightSource<'b>,
    device: &'a Device,
}

impl Loaded<'_, '_> {
    fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let values = (self.source)(name, &shape)?;
        if values.len() != shape.iter().product::<usize>() {
            return Err(Error::Config(format!("{name}: {} values for shape {shape:?}", values.len())));
        }
        Ok(Tensor::from_data(TensorData::new(values, shape), self.device))
    }

    /// A linear layer stored `[out, in]`, as burn keeps it: `[in, out]`.
    fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear> {
        let weight = self.tensor(&format!("{prefix}.weight"), [d_out, d_in])?.transpose();
        let bias = if bias { Some(Param::from_tensor(self.tensor(&format!("{prefix}.bias"), [d_out])?)) } else { None };
        Ok(Linear { weight: Param::from_tensor(weight), bias })
    }

    fn norm(&mut self, name: &str, d: usize, epsilon: f64) -> Result<RmsNorm> {
        Ok(RmsNorm { gamma: Param::from_tensor(self.tensor(name, [d])?), epsilon })
    }
}

impl ModelConfig {
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
                wq: init.linear(d, d, std).with_bias(self.attention_bias, init.device),
                wk: init.linear(d, kv, std).with_bias(self.attention_bias, init.device),
                wv: init.linear(d, kv, std).with_bias(self.attention_bias, init.device),
                wo: init.linear(d, d, resid),
                mlp_norm: init.norm(d, self.norm_eps),
                w_gate: init.linear(d, self.d_ff, std),
                w_up: init.linear(d, self.d_ff, std),
                w_down: init.linear(self.d_ff, d, resid),
                adapters: None,
            })
            .collect();
        let model = Model {
            embed: Embedding { weight: init.normal([self.vocab_size, d], std) },
            blocks,
            norm: init.norm(d, self.norm_eps),
            lm_head: (!self.tie_embeddings).then(|| init.linear(d, self.vocab_size, std)),
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim(),
            rope_theta: self.rope_theta,
            max_seq_len: self.max_seq_len,
        };
        match &self.lora {
            Some(lora) => model.with_lora(lora, seed),
            None => model,
        }
    }
}

impl ModelConfig {
    /// A model whose weights come from `source` (a checkpoint in another format).
    pub fn load(&self, source: &mut WeightSource<'_>, device: &Device) -> Result<Model> {
        self.validate()?;
        let mut w = Loaded { source, device };
        let (d, kv, ff, eps) = (self.d_model, self.n_kv_heads * self.head_dim(), self.d_ff, self.norm_eps);
        let mut blocks = Vec::with_capacity(self.n_layers);
        for i in 0..self.n_layers {
            let p = format!("model.layers.{i}");
            let bias = self.attention_bias;
            blocks.push(Block {
                attn_norm: w.norm(&format!("{p}.input_layernorm.weight"), d, eps)?,
                wq: w.linear(&format!("{p}.self_attn.q_proj"), d, d, bias)?,
                wk: w.linear(&format!("{p}.self_attn.k_proj"), d, kv, bias)?,
                wv: w.linear(&format!("{p}.self_attn.v_proj"), d, kv, bias)?,
                wo: w.linear(&format!("{p}.self_attn.o_proj"), d, d, false)?,
                mlp_norm: w.norm(&format!("{p}.post_attention_layernorm.weight"), d, eps)?,
                w_gate: w.linear(&format!("{p}.mlp.gate_proj"), d, ff, false)?,
                w_up: w.linear(&format!("{p}.mlp.up_proj"), d, ff, false)?,
                w_down: w.linear(&format!("{p}.mlp.down_proj"), ff, d, false)?,
                adapters: None,
            });
        }
        let embed = Embedding { weight: Param::from_tensor(w.tensor("model.embed_tokens.weight", [self.vocab_size, d])?) };
        let norm = w.norm("model.norm.weight", d, eps)?;
        let lm_head = if self.tie_embeddings { None } else { Some(w.linear("lm_head", d, self.vocab_size, false)?) };
        Ok(Model {
            embed,
            blocks,
            norm,
            lm_head,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim(),
            rope_theta: self.rope_theta,
            max_seq_len: self.max_seq_len,
        })
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
