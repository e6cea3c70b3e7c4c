//! Training objectives over token log-probabilities: SFT's likelihood and the DPO family.

use burn::tensor::activation::{log_sigmoid, relu};
use burn::tensor::{Int, Tensor};

use crate::config::DpoLoss;

use crate::kernels::token_logprobs;
use crate::model::Model;

/// On a GPU, the most bytes of logits one chunk of rows produces: a `[batch, len, vocab]`
/// tensor of a real vocabulary outgrows a GPU's per-buffer limit (WebGPU's default binding is
/// 128 MiB). The CPU backend has no such limit, and chunks cost it time (the output
/// projection's gradient is made once per chunk), so there the logits stay whole.
const GPU_LOGITS_CHUNK_BYTES: usize = 64 << 20;

/// `log p(targets[b, t] | inputs[b, ..=t])` under `model`, causally: `[batch, len]`. On a GPU
/// the logits are made and consumed a chunk of rows at a time, never as one
/// `[batch, len, vocab]` tensor.
pub fn target_logprobs(model: &Model, inputs: Tensor<2, Int>, targets: Tensor<2, Int>) -> Tensor<2> {
    let [b, t] = targets.dims();
    let on_gpu = crate::device::is_gpu(&inputs.device());
    let hidden = model.hidden_causal(inputs);
    let d = hidden.dims()[2];
    let (hidden, targets) = (hidden.reshape([b * t, d]), targets.reshape([b * t, 1]));
    let rows = if on_gpu { (GPU_LOGITS_CHUNK_BYTES / (4 * model.vocab_size())).max(1) } else { b * t };
    if rows >= b * t {
        return token_logprobs(model.head(hidden).reshape([b, t, model.vocab_size()]), targets.reshape([b, t]));
    }
    let chunks: Vec<Tensor<1>> = (0..b * t)
        .step_by(rows)
        .map(|start| {
            let n = rows.min(b * t - start);
            let logits = model.head(hidden.clone().narrow(0, start, n));
            token_logprobs(logits.unsqueeze_dim(0), targets.clone().narrow(0, start, n).reshape([1, n])).reshape([n])
        })
        .collect();
    Tensor::cat(chunks, 0).reshape([b, t])
}

/// Sum of the masked tokens' log-probabilities per sequence: `[batch]`.
pub fn sequence_logprobs(token_logprobs: Tensor<2>, mask: Tensor<2>) -> Tensor<1> {
    (token_logprobs * mask).sum_dim(1).squeeze_dim(1)
}

/// SFT: mean negative log-likelihood over the `n_targets` masked (response) tokens.
pub fn sft_loss(token_logprobs: Tensor<2>, mask: Tensor<2>, n_targets: usize) -> Tensor<1> {
    (token_logprobs * mask).sum().neg().div_scalar(n_targets.max(1) as f64)
}

/// Sequence log-probs of the chosen and rejected answers, under the policy and the frozen
/// reference, each `[batch]`. For `ipo` they must already be divided by the answer length.
pub struct PairLogps {
    pub policy_chosen: Tensor<1>,
    pub policy_rejected: Tensor<1>,
    pub reference_chosen: Tensor<1>,
    pub reference_rejected: Tensor<1>,
}

/// The mean DPO loss over the batch and the implicit rewards `β (log π - log π_ref)` of the
/// chosen and rejected answers (detached, for logging).
pub fn dpo_loss(logps: PairLogps, kind: DpoLoss, beta: f64, label_smoothing: f64) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let chosen = logps.policy_chosen - logps.reference_chosen;
    let rejected = logps.policy_rejected - logps.reference_rejected;
    let h = chosen.clone() - rejected.clone();
    let eps = label_smoothing;
    let losses = match kind {
        DpoLoss::Sigmoid => {
            log_sigmoid(h.clone().mul_scalar(beta)).mul_scalar(-(1.0 - eps))
                - log_sigmoid(h.mul_scalar(-beta)).mul_scalar(eps)
        }
        DpoLoss::Robust => (log_sigmoid(h.clone().mul_scalar(beta)).mul_scalar(-(1.0 - eps))
            + log_sigmoid(h.mul_scalar(-beta)).mul_scalar(eps))
        .div_scalar(1.0 - 2.0 * eps),
        DpoLoss::Hinge => relu(h.mul_scalar(-beta).add_scalar(1.0)),
        DpoLoss::Ipo => h.sub_scalar(1.0 / (2.0 * beta)).square(),
    };
    (
        losses.mean(),
        chosen.detach().mul_scalar(beta),
        rejected.detach().mul_scalar(beta),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn logprobs_match_hand_computation() {
        let device = Device::flex();
        // One row, two positions, vocab 2: logits [0, ln 3] -> p = [1/4, 3/4].
        let l3 = 3f32.ln();
        let logits = Tensor::<3>::from_data(TensorData::new(vec![0.0, l3, 0.0, l3], [1, 2, 2]), &device);
        let targets = Tensor::<2, Int>::from_data(TensorData::new(vec![1i32, 0], [1, 2]), &device);
        let mask = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 1.0], [1, 2]), &device);
        let lp = token_logprobs(logits, targets);
        let seq: Vec<f32> = sequence_logprobs(lp.clone(), mask.clone()).into_data().iter().collect();
        let expect = 0.75f32.ln() + 0.25f32.ln();
        assert!((seq[0] - expect).abs() < 1e-5, "{seq:?}");
        let loss: Vec<f32> = sft_loss(lp, mask, 2).into_data().iter().collect();
        assert!((loss[0] + expect / 2.0).abs() < 1e-5);
    }

    fn pair(device: &Device, pc: f32, pr: f32, rc: f32, rr: f32) -> PairLogps {
        let t = |x: f32| Tensor::<1>::from_data(TensorData::new(vec![x], [1]), device);
        PairLogps { policy_chosen: t(pc), policy_rejected: t(pr), reference_chosen: t(rc), reference_rejected: t(rr) }
    }

    fn value(t: Tensor<1>) -> f64 {
        t.into_data().iter::<f32>().next().unwrap() as f64
    }

    /// Hand-computed: policy (-1, -3), reference (-2, -2): h = (−1+2) − (−3+2) = 2.
    #[test]
    fn dpo_losses_match_hand_computed_values() {
        let device = Device::flex();
        let beta = 0.1;
        let log_sigmoid = |x: f64| -(1.0 + (-x).exp()).ln();
        let cases = [
            (DpoLoss::Sigmoid, 0.0, -log_sigmoid(0.2)),
            (DpoLoss::Sigmoid, 0.1, -0.9 * log_sigmoid(0.2) - 0.1 * log_sigmoid(-0.2)),
            (DpoLoss::Robust, 0.1, (-0.9 * log_sigmoid(0.2) + 0.1 * log_sigmoid(-0.2)) / 0.8),
            (DpoLoss::Hinge, 0.0, 1.0 - 0.2),
            (DpoLoss::Ipo, 0.0, (2.0f64 - 5.0).powi(2)),
        ];
        for (kind, eps, expected) in cases {
            let (loss, chosen, rejected) = dpo_loss(pair(&device, -1.0, -3.0, -2.0, -2.0), kind, beta, eps);
            let got = value(loss);
            assert!((got - expected).abs() < 1e-5, "{kind:?} eps {eps}: {got} vs {expected}");
            assert!((value(chosen) - 0.1).abs() < 1e-6 && (value(rejected) + 0.1).abs() < 1e-6);
        }
        // Hand-computed by hand, not by formula: -log σ(0.2) = 0.598139.
        let (loss, _, _) = dpo_loss(pair(&device, -1.0, -3.0, -2.0, -2.0), DpoLoss::Sigmoid, beta, 0.0);
        assert!((value(loss) - 0.598139).abs() < 1e-5);
    }
}
