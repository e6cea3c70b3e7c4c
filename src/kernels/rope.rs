//! RoPE's rotation of the training path's queries and keys (`[batch, heads, len, head_dim]`,
//! every position at once): one pass, and under autodiff a backward that is the same pass
//! rotating back; on wgpu `rope_into.wgsl` (which reads the heads where the projection wrote
//! them), on the CPU backend a threaded twin. burn's composition is two slices, four products,
//! a difference, a sum and a concatenation, each a pass (a dispatch; on the CPU on one thread),
//! and as many back. Under `rope_into`'s switch (the decode path's RoPE).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Autodiff, Backend, DType, Dispatch, Flex, backend_extension};
use burn::tensor::{Shape, Tensor, TensorData};

use super::host::f32_values;
use super::threads::filled_rows;
use super::inference::{Rotation, launch_rope_into};
use super::launch::empty;
use super::{Kernel, applies_with_twin};

#[backend_extension(Cube, Flex, Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait RopeOps: Backend {
    /// `x` `[batch, heads, len, head_dim]`, `cos`, `sin` `[len, head_dim / 2]` (constants: they
    /// get no gradient) -> `x` rotated, each position by its angles.
    #[fusion(dtype = x, shape = x)]
    fn rope(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The rotation on one backend, forward or back.
#[backend_extension(Cube, Flex, Fusion: cfg(feature = "fusion"))]
pub trait FusedRope: Backend {
    /// `x` rotated by the angles, or by their negatives where `back` (the gradient's pass).
    #[fusion(dtype = x, shape = x, id = "rope_rotated")]
    fn rotated(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, back: bool) -> FloatTensor<Self>;
}

impl FusedRope for CubeBackend {
    fn rotated(x: CubeTensor, cos: CubeTensor, sin: CubeTensor, back: bool) -> CubeTensor {
        let [batch, heads, len, head_dim] = x.meta.shape().dims::<4>();
        // The heads as a projection lays them out, [batch, len, heads * head_dim]: the model's
        // queries and keys are a swapped view of that, so no copy is made for them.
        let src = into_contiguous(<CubeBackend as FloatTensorOps<CubeBackend>>::float_swap_dims(x, 1, 2));
        let src = <CubeBackend as FloatTensorOps<CubeBackend>>::float_reshape(src, Shape::new([batch, len, heads * head_dim]));
        let dst = empty(&src, Shape::new([batch, heads, len, head_dim]), DType::F32);
        launch_rope_into(dst, src, cos, sin, 0, 0, if back { Rotation::Back } else { Rotation::Forward })
    }
}

impl RopeOps for CubeBackend {
    fn rope(x: CubeTensor, cos: CubeTensor, sin: CubeTensor) -> CubeTensor {
        <CubeBackend as FusedRope>::rotated(x, cos, sin, false)
    }
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
/// of `cos` and `sin` `[1, 1, len, head_dim / 2]`: `rope_into.wgsl` on wgpu and the CPU twin
/// on burn's CPU backend (each with its backward under autodiff), burn's ops elsewhere or when
/// `rope_into` is switched off.
pub fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    if applies_with_twin(Kernel::RopeInto, &x.device()) && x.dtype() == DType::F32 {
        let [_, _, len, half] = cos.dims();
        let table = |t: &Tensor<4>| t.clone().detach().reshape([len, half]).into_dispatch();
        return Tensor::from_dispatch(<Dispatch as RopeOps>::rope(x.into_dispatch(), table(cos), table(sin)));
    }
    crate::model::attention::rotate(x, cos, sin)
}
