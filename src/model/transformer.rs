//! A decoder-only transformer of the Llama family: RMSNorm, rotary position embeddings
//! (half-rotation, as in Hugging Face's Llama), a SwiGLU MLP and grouped-query attention,
//! with optional tied input/output embeddings.

use burn::module::Module;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::attention::{KvCache, causal_bias, padded_bias, rope_table};
use super::lora::{Adapter, BlockAdapters};
use crate::config::LoraTarget;
use crate::error::Result;
use crate::kernels::{self, DecodeWeights, PackedLayer, RopeTable};
use crate::readback;

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
    pub(super) norm: RmsNorm,
    pub(super) lm_head: Option<Linear>,
    pub(super) n_heads: usize,
    pub(super) n_kv_heads: usize,
    pub(super) head_dim: usize,
    pub(super) rope_theta: f64,
    pub(super) max_seq_len: usize,
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
        // Grouped heads: each query head meets its key/value head in the products, unrepeated.
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
        derived: &mut DecodeWeights,
        start: usize,
        shape: (usize, usize, usize),
    ) -> Tensor<3> {
        let (n_heads, _, hd) = shape;
        let [b, t, _] = x.dims();
        let (k_cache, v_cache) = layer.take().expect("KV cache allocated before the first block");
        let [q, k_cache, v_cache] = if [LoraTarget::Q, LoraTarget::K, LoraTarget::V].iter().all(|&p| self.adapter(p).is_none()) {
            kernels::norm_linear_qkv(x.clone(), &self.attn_norm, [&self.wq, &self.wk, &self.wv], (k_cache, v_cache), derived, rope, start)
        } else {
            let q = Tensor::empty([b, n_heads, t, hd], &x.device());
            let h = kernels::rms_norm(x.clone(), &self.attn_norm);
            [
                kernels::rope_into(q, self.project(LoraTarget::Q, h.clone()), rope, 0, start, true),
                kernels::rope_into(k_cache, self.project(LoraTarget::K, h.clone()), rope, start, start, true),
                kernels::rope_into(v_cache, self.project(LoraTarget::V, h), rope, start, start, false),
            ]
        };
        let attn = kernels::cached_attention(q, &k_cache, &v_cache, bias, start + t);
        *layer = Some((k_cache, v_cache));
        let packed = derived.packed.as_ref();
        let x = self.project_add(LoraTarget::O, attn, x, packed.and_then(|p| p.o.as_ref()));
        let gated = match (self.adapter(LoraTarget::Gate), self.adapter(LoraTarget::Up)) {
            (None, None) => kernels::norm_linear_swiglu(x.clone(), &self.mlp_norm, &self.w_gate, &self.w_up, packed),
            _ => {
                let h = kernels::rms_norm(x.clone(), &self.mlp_norm);
                kernels::swiglu(self.project(LoraTarget::Gate, h.clone()), self.project(LoraTarget::Up, h))
            }
        };
        self.project_add(LoraTarget::Down, gated, x, packed.and_then(|p| p.down.as_ref()))
    }

    /// The layer's projections packed for a decode step's products where that applies
    /// (`kernels::pack`: the CPU backend with AVX-512); `None` for a layer with adapters, whose
    /// decode step does not take them.
    fn packed(&self) -> Option<PackedLayer> {
        if self.adapters.is_some() {
            return None;
        }
        Some(PackedLayer::new([&self.wq, &self.wk, &self.wv, &self.wo, &self.w_gate, &self.w_up, &self.w_down]))
    }

    /// `residual + project(x)`, the add fused into the projection where it can be, from the
    /// `packed` weight where given (a decode step's).
    fn project_add(&self, target: LoraTarget, x: Tensor<3>, residual: Tensor<3>, packed: Option<&Tensor<3>>) -> Tensor<3> {
        match self.adapter(target) {
            Some(_) => residual + self.project(target, x),
            None => kernels::linear_decoding(x, self.projection(target), packed, Some(residual)),
        }
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
            cache.derived = vec![DecodeWeights::default(); self.blocks.len()];
            cache.rope = Some(rope_table(cache.capacity, self.head_dim, self.rope_theta, &device));
            // A decode step's rows are the batch's: packed weights pay for 9 to 16 of them.
            if (kernels::PACKED_ROWS_MIN..=kernels::PACKED_ROWS_MAX).contains(&b) && kernels::packing_applies(&device) {
                for (derived, block) in cache.derived.iter_mut().zip(&self.blocks) {
                    derived.packed = block.packed();
                }
                cache.packed_head = match &self.lm_head {
                    Some(head) => kernels::pack(head.weight.val(), false),
                    None => kernels::pack(self.embed.weight.val(), true),
                };
            }
        }
        let rope = cache.rope.clone().expect("rotation table made with the cache");
        let shape = (self.n_heads, self.n_kv_heads, self.head_dim);
        let mut x = self.embed.forward(tokens);
        for ((block, layer), derived) in self.blocks.iter().zip(cache.layers.iter_mut()).zip(cache.derived.iter_mut()) {
            x = block.forward_cached(x, &rope, &bias, layer, derived, start, shape);
        }
        cache.len += t;
        kernels::rms_norm(x, &self.norm)
    }

    /// Logits of the last position only, `[batch, vocab]`: what a decode step samples from,
    /// without the output projection of every prompt position at prefill.
    pub fn last_logits(&self, tokens: Tensor<2, Int>, bias: Tensor<4>, mut cache: Option<&mut KvCache>) -> Tensor<2> {
        let hidden = self.hidden(tokens, bias, cache.as_deref_mut());
        let [b, t, d] = hidden.dims();
        self.head_from(hidden.narrow(1, t - 1, 1).reshape([b, d]), cache.and_then(|c| c.packed_head.as_ref()))
    }

    /// The last position's logits of a cached decode, read back: a prefill of `prompts` (rows
    /// of one length, the first `pads[r]` positions of row `r` padding), then one step per
    /// entry of `steps` (a token per row, teacher-forced). What `sgpo bench --check` and the
    /// wgpu tests compare between backends.
    pub async fn forced_decode_logits(&self, prompts: &[Vec<i32>], pads: &[usize], steps: &[Vec<i32>], device: &Device) -> Result<Vec<f32>> {
        let (rows, len) = (prompts.len(), prompts[0].len());
        let ids = |v: Vec<i32>, len: usize| Tensor::<2, Int>::from_data(TensorData::new(v, [rows, len]), device);
        let mut valid: Vec<Vec<bool>> = pads.iter().map(|&pad| (0..len).map(|i| i >= pad).collect()).collect();
        let mut cache = KvCache::new(len + steps.len());
        let prefill = self.last_logits(ids(prompts.concat(), len), padded_bias(&valid, len, device), Some(&mut cache));
        let mut out = readback::floats(prefill).await?;
        for v in valid.iter_mut() {
            v.resize(len + steps.len(), true);
        }
        let bias = padded_bias(&valid, 1, device);
        for step in steps {
            out.extend(readback::floats(self.last_logits(ids(step.clone(), 1), bias.clone(), Some(&mut cache))).await?);
        }
        Ok(out)
    }

    /// The output projection: logits `[rows, vocab]` for hidden states `[rows, d_model]`.
    pub fn head(&self, hidden: Tensor<2>) -> Tensor<2> {
        self.head_from(hidden, None)
    }

    /// [`Model::head`], from its weight `packed` with a decode step's KV cache where given.
    fn head_from(&self, hidden: Tensor<2>, packed: Option<&Tensor<3>>) -> Tensor<2> {
        let rows = hidden.dims()[0];
        match &self.lm_head {
            Some(head) if packed.is_some() => kernels::linear_decoding(hidden.unsqueeze(), head, packed, None).reshape([rows, self.vocab_size()]),
            // A decode step's few rows: burn's product, as measured (the tied head likewise).
            Some(head) if rows <= kernels::LINEAR_ROWS_MAX => head.forward(hidden),
            Some(head) => kernels::linear(hidden.unsqueeze(), head).reshape([rows, self.vocab_size()]),
            None => kernels::tied_head_decoding(hidden, self.embed.weight.val(), packed),
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
