//! RMSNorm, `x / sqrt(mean(x²) + eps) * gamma` over each row: the decode kernel (forward only,
//! `DecodeOps::rms_norm`, on wgpu and as a CPU twin) and, under autodiff on the CPU backend, a
//! twin with its backward: one threaded pass per row each way, where burn's composition is six
//! passes forward (square, mean, add, root, divide, scale), each a new tensor on one thread,
//! and more back. On wgpu under autodiff burn's ops run (no WGSL backward yet).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::nn::RmsNorm;
use burn::tensor::{Tensor, TensorData};

use super::host::{dot, f32_values, filled_rows, summed_blocks};
use super::inference::DecodeOps;
use super::{Kernel, applies_forward_with_twin, applies_with_gradient_on_cpu};

#[backend_extension(Flex, Autodiff)]
pub trait TrainedRmsNorm: Backend {
    /// `x` `[.., width]`, `gamma` `[width]` -> shaped as `x`.
    fn trained_rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;
}

/// The two passes on one backend (the CPU's; a WGSL pair would make wgpu's).
pub trait FusedRmsNorm: Backend {
    fn forward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;
    /// The gradients of `x` and `gamma` from the output's.
    fn backward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f32) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl FusedRmsNorm for Flex {
    fn forward(x: FlexTensor, gamma: FlexTensor, eps: f32) -> FlexTensor {
        <Flex as DecodeOps>::rms_norm(x, gamma, eps)
    }

    fn backward(x: FlexTensor, gamma: FlexTensor, grad: FlexTensor, eps: f32) -> (FlexTensor, FlexTensor) {
        let shape = x.layout().shape().clone();
        let width = shape[shape.num_dims() - 1];
        let rows = shape.num_elements() / width;
        let (x, gamma, grad) = (f32_values(&x), f32_values(&gamma), f32_values(&grad));
        let row = |r: usize| (&x[r * width..(r + 1) * width], &grad[r * width..(r + 1) * width]);
        let inv_rms = |x: &[f32]| 1.0 / (dot(x, x) / width as f32 + eps).sqrt();
        // y = x r g with r = (mean(x²) + eps)^-1/2, so dx = r g dy - x r³ (Σ g dy x) / width.
        let dx = filled_rows(rows, width, |r, out| {
            let (x, dy) = row(r);
            let inv = inv_rms(x);
            let along: f32 = x.iter().zip(dy).zip(gamma.iter()).map(|((x, dy), g)| x * dy * g).sum();
            let c = inv * inv * inv * along / width as f32;
            for (((o, &x), &dy), &g) in out.iter_mut().zip(x).zip(dy).zip(gamma.iter()) {
                *o = inv * g * dy - x * c;
            }
        });
        // dgamma = Σ over rows of dy x r.
        let dgamma = summed_blocks(rows, width, |r, out| {
            let (x, dy) = row(r);
            let inv = inv_rms(x);
            out.iter_mut().zip(x).zip(dy).for_each(|((o, &x), &dy)| *o += dy * x * inv);
        });
        (FlexTensor::from_data(TensorData::new(dx, shape)), FlexTensor::from_data(TensorData::new(dgamma, [width])))
    }
}

impl TrainedRmsNorm for Flex {
    fn trained_rms_norm(x: FlexTensor, gamma: FlexTensor, eps: f32) -> FlexTensor {
        <Flex as FusedRmsNorm>::forward(x, gamma, eps)
    }
}

#[derive(Debug)]
struct RmsNormBackward;

impl<B: FusedRmsNorm> Backward<B, 2> for RmsNormBackward {
    /// The input, the gains, epsilon.
    type State = (FloatTensor<B>, FloatTensor<B>, f32);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, gamma, eps) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let (dx, dgamma) = B::backward(x, gamma, grad, eps);
        let [x_node, gamma_node] = ops.parents;
        if let Some(node) = x_node {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = gamma_node {
            grads.register::<B>(node.id, dgamma);
        }
    }
}

impl<B: FusedRmsNorm, C: CheckpointStrategy> TrainedRmsNorm for Autodiff<B, C> {
    fn trained_rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let (x, x_node) = x.into_parts();
        let (gamma, gamma_node) = gamma.into_parts();
        match RmsNormBackward.prepare::<C>([x_node, gamma_node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::forward(x.clone(), gamma.clone(), eps);
                prep.finish((x, gamma, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::forward(x, gamma, eps)),
        }
    }
}

/// `norm`'s RMSNorm of `x`'s rows: the decode kernel without autodiff (wgpu, or its CPU
/// twin), the CPU twin with its backward under autodiff, burn's ops elsewhere or when
/// switched off (`rms_norm`).
pub fn rms_norm(x: Tensor<3>, norm: &RmsNorm) -> Tensor<3> {
    let eps = norm.epsilon as f32;
    if applies_forward_with_twin(Kernel::RmsNorm, &x) {
        return Tensor::from_dispatch(<Dispatch as DecodeOps>::rms_norm(x.into_dispatch(), norm.gamma.val().into_dispatch(), eps));
    }
    if applies_with_gradient_on_cpu(Kernel::RmsNorm, &x) {
        return Tensor::from_dispatch(<Dispatch as TrainedRmsNorm>::trained_rms_norm(x.into_dispatch(), norm.gamma.val().into_dispatch(), eps));
    }
    norm.forward(x)
}
