//! AdamW's update of one parameter in one pass (`shaders/adamw.wgsl` on wgpu, a threaded loop
//! on the CPU backend), and the gradients' squared sum for clipping (`shaders/squared_sum.wgsl`:
//! one dispatch per gradient and one for the total; one threaded pass per gradient on the CPU).
//! burn's ops take about a dozen passes per parameter for the update and three for the squared
//! sum, so a SmolLM2 step's optimiser alone issued thousands of dispatches, and on the CPU a
//! dozen single-threaded passes over 135M values.

use burn::backend::flex::FlexTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Backend, DType, Dispatch, Flex, backend_extension};
use burn::backend::tensor::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorData};

use super::host::{f32_values, owned_f32, values_mut};
use super::threads::{for_each_chunk3, sum_chunks};
use super::launch::{WORKGROUP, Wgsl, empty, grid, launch};
use super::{Kernel, applies_forward, applies_forward_with_twin, applies_on_cpu};

const ADAMW: Wgsl = Wgsl { name: "adamw", source: include_str!("../../shaders/adamw.wgsl"), defines: &[] };
const SQUARED_SUM: Wgsl = Wgsl {
    name: "squared_sum",
    source: concat!(include_str!("../../shaders/row_reduce.wgsl"), include_str!("../../shaders/squared_sum.wgsl")),
    defines: &[],
};
/// Values per workgroup of a gradient's pass (16 per invocation).
const CHUNK: usize = 16 * WORKGROUP as usize;

/// One update's numbers: `keep` is `1 - lr weight_decay` (1 where nothing decays), `biasN` is
/// `1 - betaN^step`, and `max_norm` the global gradient norm the step is clipped to (0: not
/// clipped). The norm itself comes from the step's report on the device (see [`adamw`]).
#[derive(Debug, Clone, Copy)]
pub struct AdamWRule {
    pub beta1: f32,
    pub beta2: f32,
    pub lr: f32,
    pub keep: f32,
    pub bias1: f32,
    pub bias2: f32,
    pub eps: f32,
    pub max_norm: f32,
}

/// Added to the norm clipping divides by, as torch's `clip_grad_norm_` does.
const CLIP_EPS: f32 = 1e-6;

impl AdamWRule {
    /// The factor a step's gradients are multiplied by, from its loss and the gradients' squared
    /// sum: `None` when either is not finite (the step changes nothing), else
    /// `max_norm / (norm + 1e-6)` where the norm exceeds a positive `max_norm`, 1 otherwise.
    pub fn grad_scale(&self, loss: f32, squares: f32) -> Option<f32> {
        if !(loss.is_finite() && squares.is_finite()) {
            return None;
        }
        let norm = squares.sqrt();
        Some(if self.max_norm > 0.0 && norm > self.max_norm { self.max_norm / (norm + CLIP_EPS) } else { 1.0 })
    }

    /// The new weight and moments of one value, its gradient multiplied by `grad_scale`.
    #[inline(always)]
    fn apply(&self, grad_scale: f32, weight: f32, grad: f32, first: f32, second: f32) -> (f32, f32, f32) {
        let g = grad * grad_scale;
        let m = self.beta1 * first + (1.0 - self.beta1) * g;
        let v = self.beta2 * second + (1.0 - self.beta2) * (g * g);
        let delta = (m / self.bias1) / ((v / self.bias2).sqrt() + self.eps);
        (weight * self.keep - delta * self.lr, m, v)
    }
}

#[backend_extension(Cube, Flex, Fusion: cfg(feature = "fusion"))]
pub trait OptimizerOps: Backend {
    #[fusion(meta = |weight, _grad, _first, _second, _report, _rule| (weight.clone(), weight.clone(), weight.clone()))]
    fn adamw(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        first: FloatTensor<Self>,
        second: FloatTensor<Self>,
        report: FloatTensor<Self>,
        rule: AdamWRule,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl OptimizerOps for CubeBackend {
    fn adamw(weight: CubeTensor, grad: CubeTensor, first: CubeTensor, second: CubeTensor, report: CubeTensor, rule: AdamWRule) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (weight, grad) = (into_contiguous(weight), into_contiguous(grad));
        let (first, second, report) = (into_contiguous(first), into_contiguous(second), into_contiguous(report));
        let shape = weight.meta.shape().clone();
        let len = shape.num_elements();
        let [weight_out, first_out, second_out] = [(); 3].map(|_| empty(&weight, shape.clone(), DType::F32));
        let g = grid((len as u32).div_ceil(WORKGROUP));
        let AdamWRule { beta1, beta2, lr, keep, bias1, bias2, eps, max_norm } = rule;
        let p = [len as u32, g.0, beta1.to_bits(), beta2.to_bits(), lr.to_bits(), keep.to_bits(), bias1.to_bits(), bias2.to_bits(), eps.to_bits(), max_norm.to_bits()];
        launch(ADAMW, g, &[&weight, &grad, &first, &second, &report, &weight_out, &first_out, &second_out], &p);
        (weight_out, first_out, second_out)
    }
}

/// In place where the optimiser owns the buffers alone (the moments; a weight is copied first
/// when anything else holds it, as the trainer's own handle on the model does during the
/// update), all threads.
impl OptimizerOps for Flex {
    fn adamw(weight: FlexTensor, grad: FlexTensor, first: FlexTensor, second: FlexTensor, report: FlexTensor, rule: AdamWRule) -> (FlexTensor, FlexTensor, FlexTensor) {
        let report = f32_values(&report);
        let Some(grad_scale) = rule.grad_scale(report[0], report[1]) else { return (weight, first, second) };
        let (mut weight, mut first, mut second) = (owned_f32(weight), owned_f32(first), owned_f32(second));
        let grad = f32_values(&grad);
        for_each_chunk3(values_mut(&mut weight), values_mut(&mut first), values_mut(&mut second), &grad, |w, m, v, g| {
            for (((w, m), v), g) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                (*w, *m, *v) = rule.apply(grad_scale, *w, *g, *m, *v);
            }
        });
        (weight, first, second)
    }
}

#[backend_extension(Flex)]
pub trait SquaredSum: Backend {
    /// `sum(x^2)` over every value: `[1]`.
    fn squared_sum(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl SquaredSum for Flex {
    fn squared_sum(x: FlexTensor) -> FlexTensor {
        let sum = sum_chunks(&f32_values(&x), |piece| piece.iter().map(|v| v * v).sum::<f32>() as f64);
        FlexTensor::from_data(TensorData::new(vec![sum as f32], [1]))
    }
}

/// The squared sum on wgpu in two kinds of pass (`squared_sum.wgsl`).
#[backend_extension(Cube, Fusion: cfg(feature = "fusion"))]
pub trait SquaredSumParts: Backend {
    /// The squared sum of each `CHUNK` of `x`'s values into `parts` from `offset` on, in place;
    /// `parts` comes back (the same buffer: under burn's fusion the op consumes its inputs, and
    /// this is the live handle on what it wrote).
    #[fusion(dtype = parts, shape = parts)]
    fn squared_sum_parts(parts: FloatTensor<Self>, x: FloatTensor<Self>, offset: usize) -> FloatTensor<Self>;
    /// The sum of every value of `parts`, `[1]`, added in a fixed order.
    #[fusion(dtype = parts, shape = Shape::new([1]))]
    fn sum_parts(parts: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl SquaredSumParts for CubeBackend {
    fn squared_sum_parts(parts: CubeTensor, x: CubeTensor, offset: usize) -> CubeTensor {
        let x = into_contiguous(x);
        let len = x.meta.shape().num_elements();
        let g = grid(len.div_ceil(CHUNK) as u32);
        launch(SQUARED_SUM, g, &[&x, &parts], &[len as u32, offset as u32, CHUNK as u32, g.0, 1]);
        parts
    }

    fn sum_parts(parts: CubeTensor) -> CubeTensor {
        let len = parts.meta.shape().num_elements();
        let out = empty(&parts, Shape::new([1]), DType::F32);
        launch(SQUARED_SUM, (1, 1), &[&parts, &out], &[len as u32, 0, len as u32, 1, 0]);
        out
    }
}

/// `sum(x^2)` over every value of every tensor of `xs` (a step's gradients, for clipping), `[1]`;
/// `None` for no tensors. On wgpu one `squared_sum.wgsl` dispatch per tensor, all leaving their
/// partial sums in one buffer, and one that adds those up; on the CPU backend one threaded pass
/// per tensor; burn's square and sum elsewhere (part of the `adamw` kernel's switch: it is the
/// optimiser's other pass over every gradient). The tensors are added in the order given.
pub fn squared_sum(xs: &[Tensor<1>]) -> Option<Tensor<1>> {
    let first = xs.first()?;
    if applies_forward(Kernel::Adamw, first) {
        let counts: Vec<usize> = xs.iter().map(|x| x.dims()[0].div_ceil(CHUNK)).collect();
        let mut parts = Tensor::<1>::empty([counts.iter().sum::<usize>().max(1)], &first.device()).into_dispatch();
        let mut offset = 0;
        for (x, count) in xs.iter().zip(counts) {
            parts = <Dispatch as SquaredSumParts>::squared_sum_parts(parts, x.clone().into_dispatch(), offset);
            offset += count;
        }
        return Some(Tensor::from_dispatch(<Dispatch as SquaredSumParts>::sum_parts(parts)));
    }
    let each = xs.iter().map(|x| {
        if applies_on_cpu(Kernel::Adamw, x) {
            return Tensor::from_dispatch(<Dispatch as SquaredSum>::squared_sum(x.clone().into_dispatch()));
        }
        x.clone().square().sum()
    });
    each.reduce(|total, s| total + s)
}

/// `rule`'s update of a flat parameter `weight` with gradient `grad` and moments `first` and
/// `second`: the weight and moments after it. `report` is the step's `[loss, squared sum of
/// every gradient, ..]` as it stands on the device: the update clips by that norm
/// ([`AdamWRule::grad_scale`]) and, when either number is not finite, leaves weight and moments
/// as they were, so a step nobody has read yet cannot spoil the model. One `adamw.wgsl`
/// dispatch on wgpu, one threaded pass on the CPU backend; the same rule in burn ops when the
/// kernel is off.
pub fn adamw(weight: Tensor<1>, grad: Tensor<1>, first: Tensor<1>, second: Tensor<1>, report: Tensor<1>, rule: AdamWRule) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    if applies_forward_with_twin(Kernel::Adamw, &weight) {
        let (w, m, v) = <Dispatch as OptimizerOps>::adamw(
            weight.into_dispatch(),
            grad.into_dispatch(),
            first.into_dispatch(),
            second.into_dispatch(),
            report.into_dispatch(),
            rule,
        );
        return (Tensor::from_dispatch(w), Tensor::from_dispatch(m), Tensor::from_dispatch(v));
    }
    let AdamWRule { beta1, beta2, lr, keep, bias1, bias2, eps, max_norm } = rule;
    let (loss, squares) = (report.clone().narrow(0, 0, 1), report.narrow(0, 1, 1));
    let norm = squares.sqrt();
    let apply = loss.is_finite().bool_and(norm.clone().is_finite());
    let mut grad_scale = Tensor::ones([1], &grad.device());
    if max_norm > 0.0 {
        let clipped = Tensor::full([1], max_norm, &grad.device()).div(norm.clone().add_scalar(CLIP_EPS));
        grad_scale = grad_scale.mask_where(norm.greater_elem(max_norm), clipped);
    }
    let n = weight.dims()[0];
    let (apply, grad_scale) = (apply.expand([n]), grad_scale.expand([n]));
    let grad = grad * grad_scale;
    let new_first = first.clone().mul_scalar(beta1).add(grad.clone().mul_scalar(1.0 - beta1));
    let new_second = second.clone().mul_scalar(beta2).add(grad.square().mul_scalar(1.0 - beta2));
    let step = new_first.clone().div_scalar(bias1).div(new_second.clone().div_scalar(bias2).sqrt().add_scalar(eps));
    let new_weight = if keep == 1.0 { weight.clone() } else { weight.clone().mul_scalar(keep) } - step.mul_scalar(lr);
    let kept = |old: Tensor<1>, new: Tensor<1>| old.mask_where(apply.clone(), new);
    (kept(weight, new_weight), kept(first, new_first), kept(second, new_second))
}
