//! Token log-probabilities, fused: log-softmax over the vocabulary and the gather of each
//! target in one pass per row, and a backward that writes the logits' gradient directly. The
//! `[batch, len, vocab]` log-softmax is never materialised (the SFT loss and every DPO
//! log-prob go through here).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::backend::{Autodiff, Backend, Cube, DType, Dispatch, backend_extension};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Shape, Tensor};

use super::launch::{WORKGROUP, Wgsl, empty, grid, launch};

const FORWARD: Wgsl = Wgsl { name: "token_logprobs", source: include_str!("../../shaders/token_logprobs.wgsl"), defines: &[] };
const BACKWARD: Wgsl = Wgsl { name: "token_logprobs_grad", source: include_str!("../../shaders/token_logprobs_grad.wgsl"), defines: &[] };

#[backend_extension(Cube, Autodiff)]
pub trait TokenLogprobs: Backend {
    /// `logits` `[rows, vocab]`, `targets` `[rows]` -> `[rows]`.
    fn token_logprobs(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self>;
}

/// The log-probs and each row's log-sum-exp.
fn forward(logits: CubeTensor, targets: CubeTensor) -> (CubeTensor, CubeTensor) {
    let (logits, targets) = (into_contiguous(logits), into_contiguous(targets));
    let [rows, vocab] = logits.meta.shape().dims::<2>();
    let (out, lse) = (empty(&logits, Shape::new([rows]), DType::F32), empty(&logits, Shape::new([rows]), DType::F32));
    let g = grid(rows as u32);
    launch(FORWARD, g, &[&logits, &targets, &out, &lse], &[rows as u32, vocab as u32, g.0]);
    (out, lse)
}

fn backward(logits: CubeTensor, targets: CubeTensor, lse: CubeTensor, grad: CubeTensor) -> CubeTensor {
    let grad = into_contiguous(grad);
    let [rows, vocab] = logits.meta.shape().dims::<2>();
    let total = rows * vocab;
    let out = empty(&logits, Shape::new([rows, vocab]), DType::F32);
    let g = grid((total as u32).div_ceil(WORKGROUP));
    launch(BACKWARD, g, &[&logits, &targets, &lse, &grad, &out], &[total as u32, vocab as u32, g.0]);
    out
}

impl TokenLogprobs for Cube {
    fn token_logprobs(logits: CubeTensor, targets: CubeTensor) -> CubeTensor {
        forward(logits, targets).0
    }
}

#[derive(Debug)]
struct TokenLogprobsBackward;

impl Backward<Cube, 1> for TokenLogprobsBackward {
    /// The (contiguous) logits and targets, and each row's log-sum-exp.
    type State = (CubeTensor, CubeTensor, CubeTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, targets, lse) = ops.state;
        let grad = grads.consume::<Cube>(&ops.node);
        if let [Some(parent)] = ops.parents {
            grads.register::<Cube>(parent.id, backward(logits, targets, lse, grad));
        }
    }
}

impl<C: CheckpointStrategy> TokenLogprobs for Autodiff<Cube, C> {
    fn token_logprobs(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        let (logits, node) = logits.into_parts();
        match TokenLogprobsBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (logits, targets) = (into_contiguous(logits), into_contiguous(targets));
                let (out, lse) = forward(logits.clone(), targets.clone());
                prep.finish((logits, targets, lse), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(logits, targets).0),
        }
    }
}

/// `log p(targets[b, t])` under `logits`: `[batch, len]`. The fused kernel on wgpu (f32
/// logits, i32 ids); log-softmax and gather in plain burn elsewhere.
pub fn token_logprobs(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
    let [b, t, v] = logits.dims();
    if super::applies(super::Kernel::TokenLogprobs, &logits.device()) && logits.dtype() == DType::F32 && targets.dtype() == DType::I32 {
        let rows = <Dispatch as TokenLogprobs>::token_logprobs(logits.reshape([b * t, v]).into_dispatch(), targets.reshape([b * t]).into_dispatch());
        return Tensor::<1>::from_dispatch(rows).reshape([b, t]);
    }
    log_softmax(logits, 2).gather(2, targets.unsqueeze_dim(2)).squeeze_dim(2)
}
