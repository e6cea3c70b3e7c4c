//! SwiGLU's gate, `silu(gate) * up`: the decode kernel (forward only, `DecodeOps::swiglu`, on
//! wgpu and as a CPU twin) and, under autodiff, the same forward with a backward of one pass
//! (`swiglu_grad.wgsl` on wgpu, a threaded twin on the CPU backend), where burn's composition
//! is a sigmoid, two products and their backward: several passes (dispatches on wgpu, passes on
//! one thread on the CPU).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Autodiff, Backend, DType, Dispatch, Flex, backend_extension};
use burn::tensor::activation::silu;
use burn::tensor::{Tensor, TensorData};

use super::host::{exp_in_place, f32_values};
use super::threads::filled_rows2;
use super::inference::DecodeOps;
use super::launch::{WORKGROUP, Wgsl, empty, grid, launch};
use super::{Kernel, applies_forward_with_twin, applies_with_gradient};

const BACKWARD: Wgsl = Wgsl { name: "swiglu_grad", source: include_str!("../../shaders/swiglu_grad.wgsl"), defines: &[] };

#[backend_extension(Cube, Flex, Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait TrainedSwiglu: Backend {
    /// `gate`, `up` of one shape -> `silu(gate) * up`.
    #[fusion(dtype = gate, shape = gate)]
    fn trained_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The two passes on one backend: WGSL kernels on wgpu, threaded twins on the CPU.
#[backend_extension(Cube, Flex, Fusion: cfg(feature = "fusion"))]
pub trait FusedSwiglu: Backend {
    #[fusion(dtype = gate, shape = gate, id = "swiglu")]
    fn forward(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradients of `gate` and `up` from the output's.
    #[fusion(meta = |gate, up, _grad| (gate.clone(), up.clone()), id = "swiglu_grad")]
    fn backward(gate: FloatTensor<Self>, up: FloatTensor<Self>, grad: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl FusedSwiglu for CubeBackend {
    fn forward(gate: CubeTensor, up: CubeTensor) -> CubeTensor {
        <CubeBackend as DecodeOps>::swiglu(gate, up)
    }

    fn backward(gate: CubeTensor, up: CubeTensor, grad: CubeTensor) -> (CubeTensor, CubeTensor) {
        let (gate, up, grad) = (into_contiguous(gate), into_contiguous(up), into_contiguous(grad));
        let shape = gate.meta.shape().clone();
        let len = shape.num_elements();
        let (d_gate, d_up) = (empty(&gate, shape.clone(), DType::F32), empty(&gate, shape, DType::F32));
        let g = grid((len as u32).div_ceil(WORKGROUP));
        launch(BACKWARD, g, &[&gate, &up, &grad, &d_gate, &d_up], &[len as u32, g.0]);
        (d_gate, d_up)
    }
}

impl TrainedSwiglu for CubeBackend {
    fn trained_swiglu(gate: CubeTensor, up: CubeTensor) -> CubeTensor {
        <CubeBackend as FusedSwiglu>::forward(gate, up)
    }
}

impl FusedSwiglu for Flex {
    fn forward(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        <Flex as DecodeOps>::swiglu(gate, up)
    }

    fn backward(gate: FlexTensor, up: FlexTensor, grad: FlexTensor) -> (FlexTensor, FlexTensor) {
        let shape = gate.layout().shape().clone();
        let width = shape[shape.num_dims() - 1];
        let (gate, up, grad) = (f32_values(&gate), f32_values(&up), f32_values(&grad));
        // y = g s(g) u: dy/du = g s(g), dy/dg = u s(g) (1 + g (1 - s(g))).
        let (d_gate, d_up) = filled_rows2(shape.num_elements() / width, width, |row, d_gate, d_up| {
            let at = row * width;
            let (gate, up, grad) = (&gate[at..at + width], &up[at..at + width], &grad[at..at + width]);
            d_up.iter_mut().zip(gate).for_each(|(e, &g)| *e = -g);
            exp_in_place(d_up);
            for i in 0..width {
                let (g, u, dy) = (gate[i], up[i], grad[i]);
                let s = 1.0 / (1.0 + d_up[i]);
                d_up[i] = dy * g * s;
                d_gate[i] = dy * u * s * (1.0 + g * (1.0 - s));
            }
        });
        (FlexTensor::from_data(TensorData::new(d_gate, shape.clone())), FlexTensor::from_data(TensorData::new(d_up, shape)))
    }
}

impl TrainedSwiglu for Flex {
    fn trained_swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        <Flex as FusedSwiglu>::forward(gate, up)
    }
}

#[derive(Debug)]
struct SwigluBackward;

impl<B: FusedSwiglu> Backward<B, 2> for SwigluBackward {
    /// The gate and up projections.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (gate, up) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let (d_gate, d_up) = B::backward(gate, up, grad);
        let [gate_node, up_node] = ops.parents;
        if let Some(node) = gate_node {
            grads.register::<B>(node.id, d_gate);
        }
        if let Some(node) = up_node {
            grads.register::<B>(node.id, d_up);
        }
    }
}

impl<B: FusedSwiglu, C: CheckpointStrategy> TrainedSwiglu for Autodiff<B, C> {
    fn trained_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let (gate, gate_node) = gate.into_parts();
        let (up, up_node) = up.into_parts();
        match SwigluBackward.prepare::<C>([gate_node, up_node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::forward(gate.clone(), up.clone());
                prep.finish((gate, up), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::forward(gate, up)),
        }
    }
}

/// `silu(gate) * up`: the decode kernel without autodiff (wgpu, or its CPU twin), the kernel
/// or twin with its backward under autodiff, burn's ops elsewhere or when switched off
/// (`swiglu`).
pub fn swiglu(gate: Tensor<3>, up: Tensor<3>) -> Tensor<3> {
    if applies_forward_with_twin(Kernel::Swiglu, &gate) {
        return Tensor::from_dispatch(<Dispatch as DecodeOps>::swiglu(gate.into_dispatch(), up.into_dispatch()));
    }
    if applies_with_gradient(Kernel::Swiglu, &gate) {
        return Tensor::from_dispatch(<Dispatch as TrainedSwiglu>::trained_swiglu(gate.into_dispatch(), up.into_dispatch()));
    }
    silu(gate) * up
}
