//! RMSNorm, `x / sqrt(mean(x²) + eps) * gamma` over each row: the decode kernel (forward only,
//! `DecodeOps::rms_norm`, on wgpu and as a CPU twin) and, under autodiff, the same forward with
//! a backward of one pass per row (`rms_norm_grad.wgsl` on wgpu, whose gains' gradient burn's
//! reduction sums over the rows; a threaded twin on the CPU backend), where burn's composition
//! is six passes forward (square, mean, add, root, divide, scale), each a new tensor (on the
//! CPU on one thread), and more back. On wgpu each has two variants: a workgroup per row on a
//! GPU, an invocation per row on a software adapter (`rms_norm.wgsl` says why).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Autodiff, Backend, DType, Dispatch, Flex, backend_extension};
use burn::nn::RmsNorm;
use burn::tensor::{Tensor, TensorData};

use super::host::{dot, f32_values};
use super::threads::{filled_rows, summed_blocks};
use super::inference::DecodeOps;
use super::launch::{WORKGROUP, Wgsl, empty, grid, launch};
use super::{Kernel, applies_forward_with_twin, applies_with_gradient};

/// The forward's variants: for GPUs (a workgroup per row), for software adapters (an
/// invocation per row).
const FORWARD: [Wgsl; 2] = [
    Wgsl { name: "rms_norm", source: FORWARD_SOURCE, defines: &[("lane_per_row", "false")] },
    Wgsl { name: "rms_norm_lane", source: FORWARD_SOURCE, defines: &[("lane_per_row", "true")] },
];
const FORWARD_SOURCE: &str = concat!(include_str!("../../shaders/row_reduce.wgsl"), include_str!("../../shaders/row_rms.wgsl"), include_str!("../../shaders/rms_norm.wgsl"));
/// The backward's, likewise.
const BACKWARD: [Wgsl; 2] = [
    Wgsl { name: "rms_norm_grad", source: BACKWARD_SOURCE, defines: &[("lane_per_row", "false")] },
    Wgsl { name: "rms_norm_grad_lane", source: BACKWARD_SOURCE, defines: &[("lane_per_row", "true")] },
];
const BACKWARD_SOURCE: &str = concat!(include_str!("../../shaders/row_reduce.wgsl"), include_str!("../../shaders/row_rms.wgsl"), include_str!("../../shaders/rms_norm_grad.wgsl"));

/// The variant of `kernels` for this adapter and its grid for `rows` rows: a workgroup per row,
/// or on a software adapter an invocation per row.
fn for_adapter(kernels: [Wgsl; 2], rows: usize) -> (Wgsl, (u32, u32)) {
    if super::software_adapter() { (kernels[1], grid(rows.div_ceil(WORKGROUP as usize) as u32)) } else { (kernels[0], grid(rows as u32)) }
}

/// RMSNorm of `x`'s rows by `gamma` on wgpu: the forward of training and of the decode path.
pub(super) fn launch_forward(x: CubeTensor, gamma: CubeTensor, eps: f32) -> CubeTensor {
    let (x, gamma) = (into_contiguous(x), into_contiguous(gamma));
    let dims = x.meta.shape().clone();
    let width = dims[dims.num_dims() - 1];
    let rows = dims.num_elements() / width;
    let out = empty(&x, dims, DType::F32);
    let (kernel, g) = for_adapter(FORWARD, rows);
    launch(kernel, g, &[&x, &gamma, &out], &[rows as u32, width as u32, g.0, eps.to_bits()]);
    out
}

#[backend_extension(Cube, Flex, Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait TrainedRmsNorm: Backend {
    /// `x` `[.., width]`, `gamma` `[width]` -> shaped as `x`.
    #[fusion(dtype = x, shape = x)]
    fn trained_rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;
}

/// The two passes on one backend: WGSL kernels on wgpu, threaded twins on the CPU.
#[backend_extension(Cube, Flex, Fusion: cfg(feature = "fusion"))]
pub trait FusedRmsNorm: Backend {
    #[fusion(dtype = x, shape = x, id = "rms_norm")]
    fn forward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;
    /// The gradients of `x` and `gamma` from the output's.
    #[fusion(meta = |x, gamma, _grad, _eps| (x.clone(), gamma.clone()), id = "rms_norm_grad")]
    fn backward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, grad: FloatTensor<Self>, eps: f32) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl FusedRmsNorm for CubeBackend {
    fn forward(x: CubeTensor, gamma: CubeTensor, eps: f32) -> CubeTensor {
        launch_forward(x, gamma, eps)
    }

    fn backward(x: CubeTensor, gamma: CubeTensor, grad: CubeTensor, eps: f32) -> (CubeTensor, CubeTensor) {
        let (x, gamma, grad) = (into_contiguous(x), into_contiguous(gamma), into_contiguous(grad));
        let shape = x.meta.shape().clone();
        let width = shape[shape.num_dims() - 1];
        let rows = shape.num_elements() / width;
        let dx = empty(&x, shape, DType::F32);
        let dgamma_rows = empty(&x, burn::tensor::Shape::new([rows, width]), DType::F32);
        let (kernel, g) = for_adapter(BACKWARD, rows);
        launch(kernel, g, &[&x, &gamma, &grad, &dx, &dgamma_rows], &[rows as u32, width as u32, g.0, eps.to_bits()]);
        let dgamma = <CubeBackend as FloatTensorOps<CubeBackend>>::float_sum_dim(dgamma_rows, 0);
        (dx, <CubeBackend as FloatTensorOps<CubeBackend>>::float_reshape(dgamma, burn::tensor::Shape::new([width])))
    }
}

impl TrainedRmsNorm for CubeBackend {
    fn trained_rms_norm(x: CubeTensor, gamma: CubeTensor, eps: f32) -> CubeTensor {
        <CubeBackend as FusedRmsNorm>::forward(x, gamma, eps)
    }
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
/// twin), the kernel or twin with its backward under autodiff, burn's ops elsewhere or when
/// switched off (`rms_norm`).
pub fn rms_norm(x: Tensor<3>, norm: &RmsNorm) -> Tensor<3> {
    let eps = norm.epsilon as f32;
    if applies_forward_with_twin(Kernel::RmsNorm, &x) {
        return Tensor::from_dispatch(<Dispatch as DecodeOps>::rms_norm(x.into_dispatch(), norm.gamma.val().into_dispatch(), eps));
    }
    if applies_with_gradient(Kernel::RmsNorm, &x) {
        return Tensor::from_dispatch(<Dispatch as TrainedRmsNorm>::trained_rms_norm(x.into_dispatch(), norm.gamma.val().into_dispatch(), eps));
    }
    norm.forward(x)
}
