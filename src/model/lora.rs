//! LoRA: low-rank adapters computed beside the frozen projections (`x·W + x·A·B·scale`), so a
//! forward pass never rebuilds a weight-sized matrix and only A and B get gradients and
//! optimiser state. The model with its adapters off is the frozen base, sharing its tensors.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

use super::transformer::{Block, Model, NamedTensor};
use crate::config::{LoraConfig, LoraTarget};
use crate::rng::Rng;

/// One projection's adapter: A `[in, rank]`, B `[rank, out]` (burn's row layout, as `Linear`).
#[derive(Module, Debug)]
pub struct Adapter {
    a: Param<Tensor<2>>,
    b: Param<Tensor<2>>,
    scale: f64,
}

impl Adapter {
    /// A drawn uniformly in ±1/sqrt(in) (PEFT's Kaiming-uniform bound), B zero.
    fn new(d_in: usize, d_out: usize, lora: &LoraConfig, rng: &mut Rng, device: &Device) -> Self {
        let bound = 1.0 / (d_in as f32).sqrt();
        let a: Vec<f32> = (0..d_in * lora.rank).map(|_| (2.0 * rng.next_f32() - 1.0) * bound).collect();
        Self {
            a: Param::from_data(TensorData::new(a, [d_in, lora.rank]), device),
            b: Param::from_data(TensorData::new(vec![0.0f32; lora.rank * d_out], [lora.rank, d_out]), device),
            scale: lora.scale(),
        }
    }

    /// `x·A·B·scale` for `x` `[batch, len, in]`: two thin matmuls, never an `[in, out]` matrix;
    /// the scale applied to the rank-wide `x·A`, not to the output-wide result.
    pub(super) fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let out = self.b.dims()[1];
        x.reshape([b * t, d]).matmul(self.a.val()).mul_scalar(self.scale).matmul(self.b.val()).reshape([b, t, out])
    }

    /// The weight change `A·B·scale`, `[in, out]`: what merging adds to the frozen weight.
    fn delta(&self) -> Tensor<2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
    }
}

/// A block's adapters, one per targeted projection.
#[derive(Module, Debug)]
pub struct BlockAdapters {
    q: Option<Adapter>,
    k: Option<Adapter>,
    v: Option<Adapter>,
    o: Option<Adapter>,
    gate: Option<Adapter>,
    up: Option<Adapter>,
    down: Option<Adapter>,
}

impl BlockAdapters {
    pub(super) fn get(&self, target: LoraTarget) -> Option<&Adapter> {
        match target {
            LoraTarget::Q => self.q.as_ref(),
            LoraTarget::K => self.k.as_ref(),
            LoraTarget::V => self.v.as_ref(),
            LoraTarget::O => self.o.as_ref(),
            LoraTarget::Gate => self.gate.as_ref(),
            LoraTarget::Up => self.up.as_ref(),
            LoraTarget::Down => self.down.as_ref(),
        }
    }
}

impl Block {
    fn with_adapters(mut self, lora: &LoraConfig, rng: &mut Rng, device: &Device) -> Self {
        let mut make = |target: LoraTarget| {
            lora.targets(target).then(|| {
                let [d_in, d_out] = self.projection(target).weight.dims();
                Adapter::new(d_in, d_out, lora, rng, device)
            })
        };
        let adapters = BlockAdapters {
            q: make(LoraTarget::Q),
            k: make(LoraTarget::K),
            v: make(LoraTarget::V),
            o: make(LoraTarget::O),
            gate: make(LoraTarget::Gate),
            up: make(LoraTarget::Up),
            down: make(LoraTarget::Down),
        };
        self.adapters = Some(adapters);
        self
    }

    /// The projection with its adapter folded in, as a plain trainable `Linear`.
    fn merged(&self, target: LoraTarget) -> Linear {
        let linear = self.projection(target).clone();
        match self.adapter(target) {
            Some(adapter) => {
                let weight = (linear.weight.val() + adapter.delta()).detach();
                Linear { weight: Param::from_tensor(weight), bias: linear.bias }
            }
            None => linear,
        }
    }
}

impl Model {
    /// This model frozen, with fresh adapters (B = 0: it computes what it computed before).
    /// Only the adapters require gradients from here on, so an optimiser holds state for them
    /// alone. A model that already has adapters gets them merged first.
    pub fn with_lora(self, lora: &LoraConfig, seed: u64) -> Self {
        let mut model = self.merged().no_grad();
        let device = model.embed.weight.device();
        let mut rng = Rng::new(seed).fork(0x10_4a);
        model.blocks = model.blocks.into_iter().map(|b| b.with_adapters(lora, &mut rng, &device)).collect();
        model
    }

    /// The parameters an optimiser updates: the adapters' with LoRA, else all of them.
    pub fn trainable_params(&self) -> usize {
        let adapters: usize = self
            .blocks
            .iter()
            .flat_map(|b| LoraTarget::ALL.into_iter().filter_map(|t| b.adapter(t)))
            .map(|a| a.num_params())
            .sum();
        if self.has_adapters() { adapters } else { self.num_params() }
    }

    pub fn has_adapters(&self) -> bool {
        self.blocks.iter().any(|b| b.adapters.is_some())
    }

    /// The frozen base: the same tensors, adapters off (DPO's reference for a LoRA policy).
    pub fn without_adapters(&self) -> Self {
        let mut model = self.clone();
        for block in &mut model.blocks {
            block.adapters = None;
        }
        model
    }

    /// The model to decode with: no autodiff, adapters merged into their projections (a decode
    /// step is bound by the number of ops it issues; unmerged, each adapted projection is
    /// three more).
    pub fn for_decoding(&self) -> Self {
        self.valid().merged()
    }

    /// The adapters folded into the weights, every parameter trainable again: the model as a
    /// plain checkpoint (what export writes, and what a new LoRA run starts from).
    pub fn merged(self) -> Self {
        if !self.has_adapters() {
            return self;
        }
        let mut model = self;
        model.blocks = model
            .blocks
            .iter()
            .map(|b| Block {
                wq: b.merged(LoraTarget::Q),
                wk: b.merged(LoraTarget::K),
                wv: b.merged(LoraTarget::V),
                wo: b.merged(LoraTarget::O),
                w_gate: b.merged(LoraTarget::Gate),
                w_up: b.merged(LoraTarget::Up),
                w_down: b.merged(LoraTarget::Down),
                adapters: None,
                ..b.clone()
            })
            .collect();
        model.set_require_grad(true)
    }

    /// The adapters under PEFT's names and layout (`lora_A.weight` `[rank, in]`, `lora_B.weight`
    /// `[out, rank]`): what `adapter_model.safetensors` holds.
    pub fn adapter_tensors(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            for target in LoraTarget::ALL {
                let Some(adapter) = block.adapter(target) else { continue };
                let prefix = format!("base_model.model.model.layers.{i}.{}", target.path());
                for (name, t) in [("lora_A", adapter.a.val()), ("lora_B", adapter.b.val())] {
                    let t = t.transpose();
                    let [r, c] = t.dims();
                    out.push(NamedTensor { name: format!("{prefix}.{name}.weight"), shape: vec![r, c], values: t.reshape([r * c]) });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::readback::max_diff;
    use burn::tensor::Int;

    fn logits(model: &Model, device: &Device) -> Vec<f32> {
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(vec![5i32, 9, 2, 7, 1, 3], [1, 6]), device);
        model.forward_causal(tokens).into_data().iter::<f32>().collect()
    }

    /// With B drawn non-zero (as after training), adapters change the output; merging them
    /// gives the same function as computing them beside the weights; switching them off gives
    /// the base back exactly.
    #[test]
    fn merged_adapters_compute_what_adapters_beside_the_weights_do() {
        let device = Device::flex();
        let config = ModelConfig::tiny(40).with_attention_bias(true);
        let base = config.init(1, &device);
        let mut lora = LoraConfig::new(4);
        lora.targets = vec![LoraTarget::Q, LoraTarget::V, LoraTarget::Down];
        let mut adapted = base.clone().with_lora(&lora, 2);
        let mut rng = Rng::new(9);
        for block in &mut adapted.blocks {
            let adapters = block.adapters.as_mut().unwrap();
            assert!(adapters.k.is_none() && adapters.q.is_some());
            for adapter in [&mut adapters.q, &mut adapters.v, &mut adapters.down].into_iter().flatten() {
                let [r, c] = adapter.b.dims();
                let values: Vec<f32> = (0..r * c).map(|_| rng.next_f32() - 0.5).collect();
                adapter.b = Param::from_data(TensorData::new(values, [r, c]), &device);
            }
        }
        let fresh = logits(&base.clone().with_lora(&lora, 2), &device);
        assert_eq!(max_diff(&fresh, &logits(&base, &device)), 0.0, "a fresh adapter (B = 0) changes nothing");
        let with = logits(&adapted, &device);
        let off = logits(&adapted.without_adapters(), &device);
        assert_eq!(max_diff(&off, &logits(&base, &device)), 0.0);
        assert!(max_diff(&with, &off) > 1e-2, "trained adapters change the logits");
        assert!(max_diff(&with, &logits(&adapted.clone().merged(), &device)) < 1e-5);
        assert_eq!(adapted.adapter_tensors().len(), config.n_layers * 3 * 2);
    }
}
