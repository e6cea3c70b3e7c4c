//! A decoder-only transformer of the Llama family: RMSNorm, rotary position embeddings
//! (half-rotation, as in Hugging Face's Llama), a SwiGLU MLP and grouped-query attention,
//! with optional tied input/output embeddings.

use burn::module::Module;
use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::attention::{KvCache, causal_bias, repeat_kv, rope_table};
use super::lora::{Adapter, BlockAdapters};
use crate::config::{LoraTarget, ModelConfig};
use crate::kernels::{self, HeadsInto, RopeTable};
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

#[derive(Module, Debug)]
pub struct Block {
    pub(super) attn_norm: RmsNorm,
    pub(super) wq: Linear,
    pub(super) wk: Linear,
    pub(super) wv: Linear,
    pub(super) wo: Linear,
    pub(super) mlp_norm: RmsNorm,
    pub(super) w_gate: Linear,
    pub(super) w_up: Linear,
    pub(super) w_down: Linear,
    /// LoRA adapters beside the projections (none: a plain model, as every checkpoint saved
    /// before LoRA existed).
    pub(super) adapters: Option<BlockAdapters>,
}

#[derive(Module, Debug)]
pub struct Model {
    pub(super) embed: Embedding,
    pub(super) blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Linear>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    rope_theta: f64,
    max_seq_len: usize,
}

/// A tensor as Hugging Face names and lays it out, flattened.
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Tensor<1>,
}

impl Model {
    /// Every weight under its Hugging Face name and in its layout (the inverse of
    /// [`ModelConfig::load`]), adapters merged: what an exported `model.safetensors` holds.
    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        let mut matrix = |name: String, t: Tensor<2>| {
            let [r, c] = t.dims();
            out.push(NamedTensor { name, shape: vec![r, c], values: t.reshape([r * c]) });
        };
        let linear = |l: &Linear| l.weight.val().transpose();
        let merged = self.clone().merged();
        let mut vectors: Vec<(String, Tensor<1>)> = Vec::new();
        matrix("model.embed_tokens.weight".into(), merged.embed.weight.val());
        for (i, b) in merged.blocks.iter().enumerate() {
            let p = format!("model.layers.{i}");
            for (part, l) in [
                ("self_attn.q_proj", &b.wq),
                ("self_attn.k_proj", &b.wk),
                ("self_attn.v_proj", &b.wv),
                ("self_attn.o_proj", &b.wo),
                ("mlp.gate_proj", &b.w_gate),
                ("mlp.up_proj", &b.w_up),
                ("mlp.down_proj", &b.w_down),
            ] {
                matrix(format!("{p}.{part}.weight"), linear(l));
                if let Some(bias) = &l.bias {
                    vectors.push((format!("{p}.{part}.bias"), bias.val()));
                }
            }
            vectors.push((format!("{p}.input_layernorm.weight"), b.attn_norm.gamma.val()));
            vectors.push((format!("{p}.post_attention_layernorm.weight"), b.mlp_norm.gamma.val()));
        }
        vectors.push(("model.norm.weight".into(), merged.norm.gamma.val()));
        if let Some(head) = &merged.lm_head {
            matrix("lm_head.weight".into(), linear(head));
        }
        out.extend(vectors.into_iter().map(|(name, values)| NamedTensor { shape: values.dims().to_vec(), name, values }));
        out
    }
}

impl Block {
    /// The training and scoring path: every position at once, no cache; burn's ops and the
    /// kernels that carry gradients (on wgpu, attention's softmax; on the CPU, their twins).
    fn forward(&self, x: Tensor<3>, rope: &(Tensor<4>, Tensor<4>), bias: &Tensor<4>, shape: (usize, usize, usize)) -> Tensor<3> {
        let (n_heads, n_kv, hd) = shape;
        let [b, t, d] = x.dims();
        let h = kernels::rms_norm(x.clone(), &self.attn_norm);
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
        let q = kernels::rope(heads(self.project(LoraTarget::Q, h.clone()), n_heads), &rope.0, &rope.1);
        let k = kernels::rope(heads(self.project(LoraTarget::K, h.clone()), n_kv), &rope.0, &rope.1);
        let v = heads(self.project(LoraTarget::V, h), n_kv);
        let rep = n_heads / n_kv;
        let k = repeat_kv(k, rep);
        let v = repeat_kv(v, rep);
        let weights = kernels::attention_softmax(kernels::matmul4(q, k, true), bias.clone(), 1.0 / (hd as f32).sqrt());
        let attn = kernels::matmul4(weights, v, false).swap_dims(1, 2).reshape([b, t, d]);
        let x = x + self.project(LoraTarget::O, attn);
        let h = kernels::rms_norm(x.clone(), &self.mlp_norm);
        let gated = kernels::swiglu(self.project(LoraTarget::Gate, h.clone()), self.project(LoraTarget::Up, h));
        x + self.project(LoraTarget::Down, gated)
    }

    /// The decoding path: `x`'s positions continue the `start` positions in `layer`'s cache,
    /// their keys and values are written into it, and the fused kernels (`src/kernels`) do
    /// what they can on wgpu; the same maths as [`Block::forward`].
    fn forward_cached(
        &self,
        x: Tensor<3>,
        rope: &RopeTable,
        bias: &Tensor<4>,
        layer: &mut Option<(Tensor<4>, Tensor<4>)>,
        start: usize,
        shape: (usize, usize, usize),
    ) -> Tensor<3> {
        let (n_heads, _, hd) = shape;
        let [b, t, _] = x.dims();
        let (k_cache, v_cache) = layer.take().expect("KV cache allocated before the first block");
        let q = Tensor::empty([b, n_heads, t, hd], &x.device());
        let (q, k_cache, v_cache) = if [LoraTarget::Q, LoraTarget::K, LoraTarget::V].iter().all(|&p| self.adapter(p).is_none()) {
            let outs = [
                HeadsInto { layer: &self.wq, dst: q, offset: 0, rotate: true },
                HeadsInto { layer: &self.wk, dst: k_cache, offset: start, rotate: true },
                HeadsInto { layer: &self.wv, dst: v_cache, offset: start, rotate: false },
            ];
            let [q, k_cache, v_cache] = kernels::norm_linear_heads(x.clone(), &self.attn_norm, outs, rope, start);
            (q, k_cache, v_cache)
        } else {
            let h = kernels::rms_norm(x.clone(), &self.attn_norm);
            (
                kernels::rope_into(q, self.project(LoraTarget::Q, h.clone()), rope, 0, start, true),
                kernels::rope_into(k_cache, self.project(LoraTarget::K, h.clone()), rope, start, start, true),
                kernels::rope_into(v_cache, self.project(LoraTarget::V, h), rope, start, start, false),
            )
        };
        let attn = kernels::cached_attention(q, &k_cache, &v_cache, bias, start + t);
        *layer = Some((k_cache, v_cache));
        let x = self.project_add(LoraTarget::O, attn, x);
        let gated = match (self.adapter(LoraTarget::Gate), self.adapter(LoraTarget::Up)) {
            (None, None) => kernels::norm_linear_swiglu(x.clone(), &self.mlp_norm, &self.w_gate, &self.w_up),
            _ => {
                let h = kernels::rms_norm(x.clone(), &self.mlp_norm);
                kernels::swiglu(self.project(LoraTarget::Gate, h.clone()), self.project(LoraTarget::Up, h))
            }
        };
        self.project_add(LoraTarget::Down, gated, x)
    }

    pub(super) fn projection(&self, target: LoraTarget) -> &Linear {
        match target {
            LoraTarget::Q => &self.wq,
            LoraTarget::K => &self.wk,
            LoraTarget::V => &self.wv,
            LoraTarget::O => &self.wo,
            LoraTarget::Gate => &self.w_gate,
            LoraTarget::Up => &self.w_up,
            LoraTarget::Down => &self.w_down,
        }
    }

    /// Where a projection's weight sits in a block's record (`wq`, ...; a field name).
    fn projection_field(target: LoraTarget) -> &'static str {
        match target {
            LoraTarget::Q => "wq",
            LoraTarget::K => "wk",
            LoraTarget::V => "wv",
            LoraTarget::O => "wo",
            LoraTarget::Gate => "w_gate",
            LoraTarget::Up => "w_up",
            LoraTarget::Down => "w_down",
        }
    }

    pub(super) fn adapter(&self, target: LoraTarget) -> Option<&Adapter> {
        self.adapters.as_ref().and_then(|a| a.get(target))
    }

    /// A projection, plus its adapter's low-rank path when it has one.
    fn project(&self, target: LoraTarget, x: Tensor<3>) -> Tensor<3> {
        let y = kernels::linear(x.clone(), self.projection(target));
        match self.adapter(target) {
            Some(adapter) => y + adapter.forward(x),
            None => y,
        }
    }

    /// `residual + project(x)`, the add fused into the projection where it can be.
    fn project_add(&self, target: LoraTarget, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        match self.adapter(target) {
            Some(_) => residual + self.project(target, x),
            None => kernels::linear_add(x, self.projection(target), residual),
        }
    }
}

impl Model {
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Logits `[batch, len, vocab]` for `tokens` `[batch, len]`. `bias` is added to the
    /// attention scores, `[batch or 1, 1, len, cached + len]`: the causal mask, plus padding.
    /// With a cache, `tokens` continue the cached positions and are appended to it.
    pub fn forward(&self, tokens: Tensor<2, Int>, bias: Tensor<4>, cache: Option<&mut KvCache>) -> Tensor<3> {
        let hidden = self.hidden(tokens, bias, cache);
        let [b, t, d] = hidden.dims();
        self.head(hidden.reshape([b * t, d])).reshape([b, t, self.vocab_size()])
    }

    /// The final (normed) hidden states `[batch, len, d_model]`: [`Model::forward`] before the
    /// output projection.
    pub fn hidden(&self, tokens: Tensor<2, Int>, bias: Tensor<4>, cache: Option<&mut KvCache>) -> Tensor<3> {
        if let Some(cache) = cache {
            return self.hidden_cached(tokens, bias, cache);
        }
        let t = tokens.dims()[1];
        let table = rope_table(t, self.head_dim, self.rope_theta, &tokens.device());
        let half = self.head_dim / 2;
        let rope = (table.cos.reshape([1, 1, t, half]), table.sin.reshape([1, 1, t, half]));
        let shape = (self.n_heads, self.n_kv_heads, self.head_dim);
        let mut x = self.embed.forward(tokens);
        for block in &self.blocks {
            x = block.forward(x, &rope, &bias, shape);
        }
        kernels::rms_norm(x, &self.norm)
    }

    fn hidden_cached(&self, tokens: Tensor<2, Int>, bias: Tensor<4>, cache: &mut KvCache) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let start = cache.len;
        assert!(start + t <= cache.capacity, "a KV cache for {} positions holds {start}; {t} more do not fit", cache.capacity);
        if cache.layers.is_empty() {
            let shape = [b, self.n_kv_heads, cache.capacity, self.head_dim];
            cache.layers = self.blocks.iter().map(|_| Some((Tensor::zeros(shape, &device), Tensor::zeros(shape, &device)))).collect();
            cache.rope = Some(rope_table(cache.capacity, self.head_dim, self.rope_theta, &device));
        }
        let rope = cache.rope.clone().expect("rotation table made with the cache");
        let shape = (self.n_heads, self.n_kv_heads, self.head_dim);
        let mut x = self.embed.forward(tokens);
        for (block, layer) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            x = block.forward_cached(x, &rope, &bias, layer, start, shape);
        }
        cache.len += t;
        kernels::rms_norm(x, &self.norm)
    }

    /// Logits of the last position only, `[batch, vocab]`: what a decode step samples from,
    /// without the output projection of every prompt position at prefill.
    pub fn last_logits(&self, tokens: Tensor<2, Int>, bias: Tensor<4>, cache: Option<&mut KvCache>) -> Tensor<2> {
        let hidden = self.hidden(tokens, bias, cache);
        let [b, t, d] = hidden.dims();
        self.head(hidden.narrow(1, t - 1, 1).reshape([b, d]))
    }

    /// The output projection: logits `[rows, vocab]` for hidden states `[rows, d_model]`.
    pub fn head(&self, hidden: Tensor<2>) -> Tensor<2> {
        match &self.lm_head {
            // A decode step's few rows: burn's product, as measured (the tied head likewise).
            Some(head) if hidden.dims()[0] <= kernels::LINEAR_ROWS_MAX => head.forward(hidden),
            Some(head) => {
                let rows = hidden.dims()[0];
                kernels::linear(hidden.unsqueeze(), head).reshape([rows, self.vocab_size()])
            }
            None => kernels::tied_head(hidden, self.embed.weight.val()),
        }
    }

    /// The record path of layer `layer`'s `target` weight (`blocks.0.wq.weight`), as burn's
    /// parameter groups name it.
    pub fn projection_weight_path(layer: usize, target: LoraTarget) -> String {
        format!("blocks.{layer}.{}.weight", Block::projection_field(target))
    }

    pub fn vocab_size(&self) -> usize {
        self.embed.weight.dims()[0]
    }

    /// Causal-only forward for right-padded batches (training, scoring).
    pub fn forward_causal(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let t = tokens.dims()[1];
        let bias = causal_bias(t, &tokens.device());
        self.forward(tokens, bias, None)
    }

    /// Causal-only hidden states, as [`Model::forward_causal`] before the output projection.
    pub fn hidden_causal(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let t = tokens.dims()[1];
        let bias = causal_bias(t, &tokens.device());
        self.hidden(tokens, bias, None)
    }
}
