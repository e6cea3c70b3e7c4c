//! Token log-probabilities, fused: log-softmax over the vocabulary and the gather of each
//! target in one pass per row, and a backward that writes the logits' gradient directly. The
//! `[batch, len, vocab]` log-softmax is never materialised (the SFT loss and every DPO
//! log-prob go through here). On the CPU backend the same two passes run as threaded loops.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Backend, DType, Dispatch, Flex, backend_extension};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Shape, Tensor, TensorData};

use super::host::{exp_in_place, exp_shifted, f32_values};
use super::threads::{filled_rows, for_each_row2};
use super::launch::{WORKGROUP, Wgsl, empty, grid, launch};
use super::{Kernel, applies_with_twin};

const FORWARD: Wgsl = Wgsl { name: "token_logprobs", source: concat!(include_str!("../../shaders/row_reduce.wgsl"), include_str!("../../shaders/token_logprobs.wgsl")), defines: &[] };
const BACKWARD: Wgsl = Wgsl { name: "token_logprobs_grad", source: include_str!("../../shaders/token_logprobs_grad.wgsl"), defines: &[] };

#[backend_extension(Cube, Flex, Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait TokenLogprobs: Backend {
    /// `logits` `[rows, vocab]`, `targets` `[rows]` -> `[rows]`.
    #[fusion(dtype = logits, shape = targets)]
    fn token_logprobs(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self>;
}

/// The fused passes on one backend: the WGSL kernels on wgpu, their threaded twins on the CPU.
#[backend_extension(Cube, Flex, Fusion: cfg(feature = "fusion"))]
pub trait FusedLogprobs: Backend {
    /// The log-probs and each row's log-sum-exp.
    #[fusion(meta = |logits, targets| { let row = burn::backend::fusion::custom::TensorSpec::new(targets.shape.clone(), logits.dtype); (row.clone(), row) }, id = "token_logprobs")]
    fn forward(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// The logits' gradient, `grad[row] (onehot(target) - softmax(logits[row]))`.
    #[fusion(dtype = logits, shape = logits, id = "token_logprobs_grad")]
    fn backward(logits: FloatTensor<Self>, targets: IntTensor<Self>, lse: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl FusedLogprobs for CubeBackend {
    fn forward(logits: CubeTensor, targets: CubeTensor) -> (CubeTensor, CubeTensor) {
        let (logits, targets) = (into_contiguous(logits), into_contiguous(targets));
        let [rows, vocab] = logits.meta.shape().dims::<2>();
        let (out, lse) = (empty(&logits, Shape::new([rows]), DType::F32), empty(&logits, Shape::new([rows]), DType::F32));
        let g = grid(rows as u32);
        launch(FORWARD, g, &[&logits, &targets, &out, &lse], &[rows as u32, vocab as u32, g.0]);
        (out, lse)
    }

    fn backward(logits: CubeTensor, targets: CubeTensor, lse: CubeTensor, grad: CubeTensor) -> CubeTensor {
        let (logits, targets, grad) = (into_contiguous(logits), into_contiguous(targets), into_contiguous(grad));
        let [rows, vocab] = logits.meta.shape().dims::<2>();
        let total = rows * vocab;
        let out = empty(&logits, Shape::new([rows, vocab]), DType::F32);
        let g = grid((total as u32).div_ceil(WORKGROUP));
        launch(BACKWARD, g, &[&logits, &targets, &lse, &grad, &out], &[total as u32, vocab as u32, g.0]);
        out
    }
}

impl FusedLogprobs for Flex {
    fn forward(logits: FlexTensor, targets: FlexTensor) -> (FlexTensor, FlexTensor) {
        let [rows, vocab] = logits.layout().shape().dims::<2>();
        let (x, targets) = (f32_values(&logits), host_ids(&targets, vocab));
        let (mut out, mut lse) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        for_each_row2(&mut out, &mut lse, |row, out, lse| {
            let x = &x[row * vocab..(row + 1) * vocab];
            let (max, sum) = exp_shifted(&mut x.to_vec());
            *lse = max + sum.ln();
            *out = x[targets[row]] - *lse;
        });
        (FlexTensor::from_data(TensorData::new(out, [rows])), FlexTensor::from_data(TensorData::new(lse, [rows])))
    }

    fn backward(logits: FlexTensor, targets: FlexTensor, lse: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let [rows, vocab] = logits.layout().shape().dims::<2>();
        let (x, targets, lse, grad) = (f32_values(&logits), host_ids(&targets, vocab), f32_values(&lse), f32_values(&grad));
        let out = filled_rows(rows, vocab, |row, out| {
            let (x, g, lse) = (&x[row * vocab..(row + 1) * vocab], grad[row], lse[row]);
            out.iter_mut().zip(x).for_each(|(o, &v)| *o = v - lse);
            exp_in_place(out);
            out.iter_mut().for_each(|o| *o *= -g);
            out[targets[row]] += g;
        });
        FlexTensor::from_data(TensorData::new(out, [rows, vocab]))
    }
}

impl TokenLogprobs for CubeBackend {
    fn token_logprobs(logits: CubeTensor, targets: CubeTensor) -> CubeTensor {
        <CubeBackend as FusedLogprobs>::forward(logits, targets).0
    }
}

impl TokenLogprobs for Flex {
    fn token_logprobs(logits: FlexTensor, targets: FlexTensor) -> FlexTensor {
        <Flex as FusedLogprobs>::forward(logits, targets).0
    }
}

/// Token ids on the host, each checked against the vocabulary (the loops index by them).
fn host_ids(targets: &FlexTensor, vocab: usize) -> Vec<usize> {
    let ids: Vec<i64> = match targets.dtype() {
        DType::I32 => targets.to_contiguous().as_slice::<i32>().expect("contiguous").iter().map(|&t| t as i64).collect(),
        DType::I64 => targets.to_contiguous().as_slice::<i64>().expect("contiguous").to_vec(),
        other => panic!("token ids as {other:?}: expected I32 or I64"),
    };
    ids.into_iter()
        .map(|t| usize::try_from(t).ok().filter(|&t| t < vocab).unwrap_or_else(|| panic!("token id {t} outside the vocabulary of {vocab}")))
        .collect()
}

#[derive(Debug)]
struct TokenLogprobsBackward;

impl<B: FusedLogprobs> Backward<B, 1> for TokenLogprobsBackward {
    /// The logits and targets, and each row's log-sum-exp.
    type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, targets, lse) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        if let [Some(parent)] = ops.parents {
            grads.register::<B>(parent.id, B::backward(logits, targets, lse, grad));
        }
    }
}

impl<B: FusedLogprobs, C: CheckpointStrategy> TokenLogprobs for Autodiff<B, C> {
    fn token_logprobs(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        let (logits, node) = logits.into_parts();
        match TokenLogprobsBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, lse) = B::forward(logits.clone(), targets.clone());
                prep.finish((logits, targets, lse), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::forward(logits, targets).0),
        }
    }
}

/// `log p(targets[b, t])` under `logits`: `[batch, len]`. The fused kernel on wgpu (f32
/// logits, i32 ids), its threaded twin on the CPU backend (f32 logits); log-softmax and gather
/// in plain burn when switched off.
pub fn token_logprobs(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
    let [b, t, v] = logits.dims();
    let device = logits.device();
    // The WGSL kernel reads i32 ids; the CPU twin takes either width.
    let ids_fit = targets.dtype() == DType::I32 || crate::device::is_cpu(&device);
    if applies_with_twin(Kernel::TokenLogprobs, &device) && ids_fit && logits.dtype() == DType::F32 {
        let rows = <Dispatch as TokenLogprobs>::token_logprobs(logits.reshape([b * t, v]).into_dispatch(), targets.reshape([b * t]).into_dispatch());
        return Tensor::<1>::from_dispatch(rows).reshape([b, t]);
    }
    log_softmax(logits, 2).gather(2, targets.unsqueeze_dim(2)).squeeze_dim(2)
}
