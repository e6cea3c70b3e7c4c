//! Attention's weights from its scores in one pass per row: `softmax(scores * scale + bias)`,
//! the mask broadcast over heads, and a backward that writes the scores' gradient from the
//! weights alone. Under autodiff burn's composition is seven passes forward (scale, bias add,
//! max, subtract, exp, sum, divide), each a new `[batch, heads, queries, keys]` tensor, and
//! as many back, on the CPU backend each on one thread; without autodiff (scoring, prefill)
//! burn's CPU softmax is one threaded pass, and this saves the scale and the mask add.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Autodiff, Backend, DType, Dispatch, Flex, backend_extension};
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};

use super::host::{exp_shifted, f32_values};
use super::threads::filled_rows;
use super::launch::{WORKGROUP, Wgsl, empty, grid, launch};
use super::{Kernel, applies_with_twin};

const FORWARD: Wgsl = Wgsl { name: "attention_softmax", source: include_str!("../../shaders/attention_softmax.wgsl"), defines: &[] };
const BACKWARD: Wgsl = Wgsl { name: "attention_softmax_grad", source: include_str!("../../shaders/attention_softmax_grad.wgsl"), defines: &[] };

#[backend_extension(Cube, Flex, Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait AttentionSoftmax: Backend {
    /// `scores` `[batch, heads, queries, keys]`, `bias` `[1 or batch, 1, queries, keys]` (a
    /// constant: it gets no gradient) -> the weights, shaped as `scores`.
    #[fusion(dtype = scores, shape = scores)]
    fn attention_softmax(scores: FloatTensor<Self>, bias: FloatTensor<Self>, scale: f32) -> FloatTensor<Self>;
}

/// The two passes on one backend: the WGSL kernels on wgpu, their threaded twins on the CPU.
#[backend_extension(Cube, Flex, Fusion: cfg(feature = "fusion"))]
pub trait FusedSoftmax: Backend {
    #[fusion(dtype = scores, shape = scores, id = "attention_softmax")]
    fn forward(scores: FloatTensor<Self>, bias: FloatTensor<Self>, scale: f32) -> FloatTensor<Self>;
    /// The scores' gradient from the weights and theirs.
    #[fusion(dtype = probs, shape = probs, id = "attention_softmax_grad")]
    fn backward(probs: FloatTensor<Self>, grad: FloatTensor<Self>, scale: f32) -> FloatTensor<Self>;
}

/// Rows of keys, keys per row, queries per head, rows per batch row, rows of the bias' batch.
fn layout(scores: [usize; 4], bias: [usize; 4]) -> (usize, usize, usize, usize, usize) {
    let [b, h, q, k] = scores;
    assert!(bias[1] == 1 && bias[2] == q && bias[3] == k && (bias[0] == 1 || bias[0] == b), "attention bias {bias:?} for scores {scores:?}");
    (b * h * q, k, q, h * q, bias[0])
}

impl FusedSoftmax for CubeBackend {
    fn forward(scores: CubeTensor, bias: CubeTensor, scale: f32) -> CubeTensor {
        let (scores, bias) = (into_contiguous(scores), into_contiguous(bias));
        let shape = scores.meta.shape().clone();
        let (rows, keys, queries, per_batch, bias_batch) = layout(shape.dims::<4>(), bias.meta.shape().dims::<4>());
        let probs = empty(&scores, shape, DType::F32);
        let g = grid((rows as u32).div_ceil(WORKGROUP));
        let p = [rows, keys, queries, per_batch, bias_batch].map(|v| v as u32);
        launch(FORWARD, g, &[&scores, &bias, &probs], &[p[0], p[1], p[2], p[3], p[4], scale.to_bits(), g.0]);
        probs
    }

    fn backward(probs: CubeTensor, grad: CubeTensor, scale: f32) -> CubeTensor {
        let (probs, grad) = (into_contiguous(probs), into_contiguous(grad));
        let shape = probs.meta.shape().clone();
        let [b, h, q, k] = shape.dims::<4>();
        let rows = b * h * q;
        let out = empty(&probs, shape, DType::F32);
        let g = grid((rows as u32).div_ceil(WORKGROUP));
        launch(BACKWARD, g, &[&probs, &grad, &out], &[rows as u32, k as u32, scale.to_bits(), g.0]);
        out
    }
}

impl FusedSoftmax for Flex {
    fn forward(scores: FlexTensor, bias: FlexTensor, scale: f32) -> FlexTensor {
        let shape = scores.layout().shape().clone();
        let (rows, keys, queries, per_batch, bias_batch) = layout(shape.dims::<4>(), bias.layout().shape().dims::<4>());
        let (s, bias) = (f32_values(&scores), f32_values(&bias));
        let probs = filled_rows(rows, keys, |row, out| {
            let s = &s[row * keys..(row + 1) * keys];
            let batch_row = (row / per_batch).min(bias_batch - 1);
            let start = (batch_row * queries + row % queries) * keys;
            let bias = &bias[start..start + keys];
            out.iter_mut().zip(s).zip(bias).for_each(|((o, &s), &b)| *o = s * scale + b);
            let (_, sum) = exp_shifted(out);
            let inv = 1.0 / sum;
            out.iter_mut().for_each(|o| *o *= inv);
        });
        FlexTensor::from_data(TensorData::new(probs, shape))
    }

    fn backward(probs: FlexTensor, grad: FlexTensor, scale: f32) -> FlexTensor {
        let shape = probs.layout().shape().clone();
        let [b, h, q, keys] = shape.dims::<4>();
        let (p, g) = (f32_values(&probs), f32_values(&grad));
        let out = filled_rows(b * h * q, keys, |row, out| {
            let (p, g) = (&p[row * keys..(row + 1) * keys], &g[row * keys..(row + 1) * keys]);
            let total: f32 = p.iter().zip(g).map(|(p, g)| p * g).sum();
            for ((o, &p), &g) in out.iter_mut().zip(p).zip(g) {
                *o = scale * p * (g - total);
            }
        });
        FlexTensor::from_data(TensorData::new(out, shape))
    }
}

impl AttentionSoftmax for CubeBackend {
    fn attention_softmax(scores: CubeTensor, bias: CubeTensor, scale: f32) -> CubeTensor {
        <CubeBackend as FusedSoftmax>::forward(scores, bias, scale)
    }
}

impl AttentionSoftmax for Flex {
    fn attention_softmax(scores: FlexTensor, bias: FlexTensor, scale: f32) -> FlexTensor {
        <Flex as FusedSoftmax>::forward(scores, bias, scale)
    }
}

#[derive(Debug)]
struct AttentionSoftmaxBackward;

impl<B: FusedSoftmax> Backward<B, 1> for AttentionSoftmaxBackward {
    /// The weights, and the scale.
    type State = (FloatTensor<B>, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (probs, scale) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        if let [Some(parent)] = ops.parents {
            grads.register::<B>(parent.id, B::backward(probs, grad, scale));
        }
    }
}

impl<B: FusedSoftmax, C: CheckpointStrategy> AttentionSoftmax for Autodiff<B, C> {
    fn attention_softmax(scores: FloatTensor<Self>, bias: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        let (scores, node) = scores.into_parts();
        // A constant: its node is not a parent, so no gradient flows to it.
        let (bias, _) = bias.into_parts();
        match AttentionSoftmaxBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let probs = B::forward(scores, bias, scale);
                prep.finish((probs.clone(), scale), probs)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::forward(scores, bias, scale)),
        }
    }
}

/// `softmax(scores * scale + bias)` over the keys: attention's weights, `[batch, heads,
/// queries, keys]`, with `bias` `[1 or batch, 1, queries, keys]` (the mask; it gets no
/// gradient). The fused kernels on wgpu, their threaded twins on the CPU backend, burn's ops
/// when switched off.
pub fn attention_softmax(scores: Tensor<4>, bias: Tensor<4>, scale: f32) -> Tensor<4> {
    if applies_with_twin(Kernel::AttentionSoftmax, &scores.device()) && scores.dtype() == DType::F32 && bias.dtype() == DType::F32 {
        let bias = bias.detach();
        return Tensor::from_dispatch(<Dispatch as AttentionSoftmax>::attention_softmax(scores.into_dispatch(), bias.into_dispatch(), scale));
    }
    softmax(scores.mul_scalar(scale) + bias, 3)
}
