//! RoPE's rotation of the training path's queries and keys (`[batch, heads, len, head_dim]`,
//! every position at once), on the CPU backend: one threaded pass, and under autodiff a
//! backward that is the same pass rotating back. burn's composition is two slices, four
//! products, a difference, a sum and a concatenation, each a pass on one thread, and as many
//! back. Under `rope_into`'s switch (the decode path's RoPE); on wgpu burn's ops run.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{Tensor, TensorData};

use super::host::{f32_values, filled_rows};
use super::{Kernel, applies_on_cpu, applies_with_gradient_on_cpu};

#[backend_extension(Flex, Autodiff)]
pub trait RopeOps: Backend {
    /// `x` `[batch, heads, len, head_dim]`, `cos`, `sin` `[len, head_dim / 2]` (constants: they
    /// get no gradient) -> `x` rotated, each position by its angles.
    fn rope(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The rotation on one backend (the CPU's), forward or back.
pub trait FusedRope: Backend {
    /// `x` rotated by the angles, or by their negatives where `back` (the gradient's pass).
    fn rotated(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, back: bool) -> FloatTensor<Self>;
}

impl FusedRope for Flex {
    fn rotated(x: FlexTensor, cos: FlexTensor, sin: FlexTensor, back: bool) -> FlexTensor {
        let shape = x.layout().shape().clone();
        let [_, _, len, head_dim] = shape.dims::<4>();
        let half = head_dim / 2;
        let (x, cos, sin) = (f32_values(&x), f32_values(&cos), f32_values(&sin));
        let sign = if back { -1.0 } else { 1.0 };
        let out = filled_rows(shape.num_elements() / head_dim, head_dim, |row, out| {
            let x = &x[row * head_dim..(row + 1) * head_dim];
            let at = row % len * half;
            let (cos, sin) = (&cos[at..at + half], &sin[at..at + half]);
            for i in 0..half {
                let (x1, x2, s) = (x[i], x[i + half], sign * sin[i]);
                out[i] = x1 * cos[i] - x2 * s;
                out[i + half] = x2 * cos[i] + x1 * s;
            }
        });
        FlexTensor::from_data(TensorData::new(out, shape))
    }
}

impl RopeOps for Flex {
    fn rope(x: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
        <Flex as FusedRope>::rotated(x, cos, sin, false)
    }
}

#[derive(Debug)]
struct RopeBackward;

impl<B: FusedRope> Backward<B, 1> for RopeBackward {
    /// The angles' cosines and sines.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (cos, sin) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        if let [Some(parent)] = ops.parents {
            // A rotation's transpose is the rotation back.
            grads.register::<B>(parent.id, B::rotated(grad, cos, sin, true));
        }
    }
}

impl<B: FusedRope, C: CheckpointStrategy> RopeOps for Autodiff<B, C> {
    fn rope(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, node) = x.into_parts();
        let ((cos, _), (sin, _)) = (cos.into_parts(), sin.into_parts());
        match RopeBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::rotated(x, cos.clone(), sin.clone(), false);
                prep.finish((cos, sin), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rotated(x, cos, sin, false)),
        }
    }
}

/// `x` `[batch, heads, len, head_dim]` rotated by RoPE, position `p` by the angles in row `p`
/// of `cos` and `sin` `[1, 1, len, head_dim / 2]`: the CPU twin (with its backward under
/// autodiff) on burn's CPU backend, burn's ops elsewhere or when `rope_into` is switched off.
pub fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    if applies_on_cpu(Kernel::RopeInto, &x) || applies_with_gradient_on_cpu(Kernel::RopeInto, &x) {
        let [_, _, len, half] = cos.dims();
        let table = |t: &Tensor<4>| t.clone().detach().reshape([len, half]).into_dispatch();
        return Tensor::from_dispatch(<Dispatch as RopeOps>::rope(x.into_dispatch(), table(cos), table(sin)));
    }
    crate::model::attention::rotate(x, cos, sin)
}
