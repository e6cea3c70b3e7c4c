//! AdamW's update of one parameter in one pass (`shaders/adamw.wgsl`). burn's ops take about a
//! dozen dispatches per parameter for it, so a SmolLM2 step's optimiser alone issued thousands.

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::backend::{Backend, Cube, DType, Dispatch, backend_extension};
use burn::backend::tensor::FloatTensor;
use burn::tensor::Tensor;

use super::launch::{WORKGROUP, Wgsl, empty, grid, launch};
use super::{Kernel, applies_forward};

const ADAMW: Wgsl = Wgsl { name: "adamw", source: include_str!("../../shaders/adamw.wgsl"), defines: &[] };

/// One update's numbers: `keep` is `1 - lr weight_decay` (1 where nothing decays), `biasN` is
/// `1 - betaN^step`.
#[derive(Debug, Clone, Copy)]
pub struct AdamWRule {
    pub beta1: f32,
    pub beta2: f32,
    pub lr: f32,
    pub keep: f32,
    pub bias1: f32,
    pub bias2: f32,
    pub eps: f32,
}

#[backend_extension(Cube)]
pub trait OptimizerOps: Backend {
    fn adamw(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        first: FloatTensor<Self>,
        second: FloatTensor<Self>,
        rule: AdamWRule,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl OptimizerOps for Cube {
    fn adamw(weight: CubeTensor, grad: CubeTensor, first: CubeTensor, second: CubeTensor, rule: AdamWRule) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (weight, grad) = (into_contiguous(weight), into_contiguous(grad));
        let (first, second) = (into_contiguous(first), into_contiguous(second));
        let shape = weight.meta.shape().clone();
        let len = shape.num_elements();
        let [weight_out, first_out, second_out] = [(); 3].map(|_| empty(&weight, shape.clone(), DType::F32));
        let g = grid((len as u32).div_ceil(WORKGROUP));
        let AdamWRule { beta1, beta2, lr, keep, bias1, bias2, eps } = rule;
        let p = [len as u32, g.0, beta1.to_bits(), beta2.to_bits(), lr.to_bits(), keep.to_bits(), bias1.to_bits(), bias2.to_bits(), eps.to_bits()];
        launch(ADAMW, g, &[&weight, &grad, &first, &second, &weight_out, &first_out, &second_out], &p);
        (weight_out, first_out, second_out)
    }
}

/// `rule`'s update of a flat parameter `weight` with gradient `grad` and moments `first` and
/// `second`: the weight and moments after it. One `adamw.wgsl` dispatch on wgpu; the same rule
/// in burn ops elsewhere.
pub fn adamw(weight: Tensor<1>, grad: Tensor<1>, first: Tensor<1>, second: Tensor<1>, rule: AdamWRule) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    if applies_forward(Kernel::Adamw, &weight) {
        let (w, m, v) = <Dispatch as OptimizerOps>::adamw(weight.into_dispatch(), grad.into_dispatch(), first.into_dispatch(), second.into_dispatch(), rule);
        return (Tensor::from_dispatch(w), Tensor::from_dispatch(m), Tensor::from_dispatch(v));
    }
    let AdamWRule { beta1, beta2, lr, keep, bias1, bias2, eps } = rule;
    let first = first.mul_scalar(beta1).add(grad.clone().mul_scalar(1.0 - beta1));
    let second = second.mul_scalar(beta2).add(grad.square().mul_scalar(1.0 - beta2));
    let step = first.clone().div_scalar(bias1).div(second.clone().div_scalar(bias2).sqrt().add_scalar(eps));
    let weight = if keep == 1.0 { weight } else { weight.mul_scalar(keep) };
    (weight - step.mul_scalar(lr), first, second)
}
