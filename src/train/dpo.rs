//! DPO's half of the preference stage: pairs scored once under the frozen reference, and the
//! learner that takes one DPO step (any loss of the family, optionally plus an improver-SFT
//! term) at a time.

use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::objective::{PairLogps, dpo_loss, sequence_logprobs, sft_loss, target_logprobs};
use super::adamw::AdamW;
use super::optim::{autodiff, load_optimizer, step_report};
use super::reports::{READ_EVERY, Reported, StepReports, StepValues};
use crate::config::{DpoLoss, SgpoConfig};
use crate::data::{Batch, PreferencePair, TokenSeq, Tokenizer};
use crate::error::Result;
use crate::metrics::{DpoStep, now_seconds};
use crate::model::Model;
use crate::readback;

/// A pair as token sequences in the policy role, with the frozen reference's log-probs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoredPair {
    pub chosen: TokenSeq,
    pub rejected: TokenSeq,
    pub reference_chosen: f32,
    pub reference_rejected: f32,
}

/// Per-sequence log-probs of the response tokens, summed, or averaged when `normalize`.
fn batch_logps(model: &Model, seqs: &[&TokenSeq], pad: u32, normalize: bool, device: &Device) -> (Tensor<1>, Batch) {
    let batch = Batch::new(seqs, pad, device);
    let tokens = target_logprobs(model, batch.inputs.clone(), batch.targets.clone());
    let mut logps = sequence_logprobs(tokens, batch.mask.clone());
    if normalize {
        let lengths: Vec<f32> = batch.row_targets.iter().map(|&n| n.max(1) as f32).collect();
        let n = lengths.len();
        logps = logps / Tensor::<1>::from_data(TensorData::new(lengths, [n]), device);
    }
    (logps, batch)
}

/// Each sequence's response log-prob under `model` (summed, or averaged per token when
/// `normalize`), 32 sequences a batch.
pub async fn sequence_scores(model: &Model, seqs: &[TokenSeq], pad: u32, normalize: bool, device: &Device) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(64) {
        let refs: Vec<&TokenSeq> = chunk.iter().collect();
        let (logps, _) = batch_logps(model, &refs, pad, normalize, device);
        out.extend(readback::floats(logps).await?);
    }
    Ok(out)
}

/// Tokenise pairs in the policy role and score them once under the frozen `reference` model.
pub async fn score_pairs(
    reference: &Model,
    tok: &Tokenizer,
    pairs: &[PreferencePair],
    normalize: bool,
    max_len: usize,
    device: &Device,
) -> Result<Vec<ScoredPair>> {
    let mut seqs = Vec::with_capacity(pairs.len() * 2);
    for p in pairs {
        seqs.push(TokenSeq::policy(tok, &p.prompt, &p.chosen)?.fit(max_len + 1));
        seqs.push(TokenSeq::policy(tok, &p.prompt, &p.rejected)?.fit(max_len + 1));
    }
    let logps = sequence_scores(reference, &seqs, tok.special.pad, normalize, device).await?;
    let mut it = seqs.into_iter();
    Ok(logps
        .chunks(2)
        .map(|pair_logps| {
            let (chosen, rejected) = (it.next().expect("chosen"), it.next().expect("rejected"));
            ScoredPair { chosen, rejected, reference_chosen: pair_logps[0], reference_rejected: pair_logps[1] }
        })
        .collect())
}

/// The DPO learner: the policy being trained and its optimiser.
pub struct PreferenceTrainer {
    pub model: Model,
    optim: AdamW,
    config: SgpoConfig,
    pad: u32,
    device: Device,
    pub step: usize,
    /// Steps done whose numbers are still on the device.
    reports: StepReports<DpoStep>,
}

impl PreferenceTrainer {
    /// A fresh optimiser over `model` (which records gradients).
    pub fn new(model: Model, config: SgpoConfig, pad: u32, device: &Device) -> Self {
        let optim = config.dpo_optim.init();
        Self { model, optim, config, pad, device: autodiff(device), step: 0, reports: StepReports::new(READ_EVERY) }
    }

    /// Continue from a saved optimiser state after `step` updates.
    pub fn restore(model: Model, config: SgpoConfig, pad: u32, optimizer: Option<&[u8]>, step: usize, device: &Device) -> Result<Self> {
        let optim = load_optimizer(&config.dpo_optim, optimizer)?;
        Ok(Self { model, optim, config, pad, device: autodiff(device), step, reports: StepReports::new(READ_EVERY) })
    }

    /// Read the steps' numbers back every `steps` steps (1: each step, before it is applied).
    pub fn set_read_every(&mut self, steps: usize) {
        self.reports.read_every = steps;
    }

    /// The records of the steps not read yet, each handed to `on_record`: due at the end of an
    /// iteration and before a checkpoint. A step read as not finite is the error, after the
    /// steps before it.
    pub async fn flush(&mut self, on_record: &mut dyn FnMut(DpoStep)) -> Result<()> {
        self.reports.flush(on_record).await
    }

    pub fn all_read(&self) -> bool {
        self.reports.is_clear()
    }

    pub async fn optimizer_bytes(&self) -> Result<Vec<u8>> {
        self.optim.to_bytes().await
    }

    /// One DPO update on `pairs`; with `improver` sequences and a positive weight, plus that
    /// much improver-SFT loss, so the shared weights keep the improver role. Returns the records
    /// of the steps read back with it (every `read_every` steps; [`PreferenceTrainer::flush`]
    /// reads the rest).
    pub async fn step(&mut self, pairs: &[&ScoredPair], improver: &[&TokenSeq], iteration: usize) -> Result<Vec<DpoStep>> {
        self.reports.check()?;
        let started = now_seconds();
        let n = pairs.len();
        let normalize = self.config.loss == DpoLoss::Ipo;
        let seqs: Vec<&TokenSeq> = pairs.iter().map(|p| &p.chosen).chain(pairs.iter().map(|p| &p.rejected)).collect();
        let (logps, batch) = batch_logps(&self.model, &seqs, self.pad, normalize, &self.device);
        let reference = |f: fn(&ScoredPair) -> f32| {
            let v: Vec<f32> = pairs.iter().map(|&p| f(p)).collect();
            Tensor::<1>::from_data(TensorData::new(v, [n]), &self.device)
        };
        let logps = PairLogps {
            policy_chosen: logps.clone().narrow(0, 0, n),
            policy_rejected: logps.narrow(0, n, n),
            reference_chosen: reference(|p| p.reference_chosen),
            reference_rejected: reference(|p| p.reference_rejected),
        };
        let (policy_chosen, policy_rejected) = (logps.policy_chosen.clone().detach(), logps.policy_rejected.clone().detach());
        let (mut loss, rewards_chosen, rewards_rejected) =
            dpo_loss(logps, self.config.loss, self.config.beta, self.config.label_smoothing);
        let mut tokens = batch.n_tokens;
        if self.config.improver_sft_weight > 0.0 && !improver.is_empty() {
            let b = Batch::new(improver, self.pad, &self.device);
            tokens += b.n_tokens;
            let tokens = target_logprobs(&self.model, b.inputs, b.targets);
            loss = loss + sft_loss(tokens, b.mask, b.n_targets).mul_scalar(self.config.improver_sft_weight);
        }
        let lr = self.config.dpo_optim.lr_at(self.step, usize::MAX);
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let per_pair_values = vec![rewards_chosen, rewards_rejected, policy_chosen, policy_rejected];
        let report = step_report(&self.model, &grads, loss.detach(), per_pair_values);
        let record = DpoStep { stage: "dpo".into(), iteration, step: self.step + 1, lr, tokens, ..DpoStep::default() };
        // Before the update: a step read as not finite is refused with nothing applied.
        let read = if self.reports.push(report.clone(), record, started, tokens) { self.reports.read().await? } else { Vec::new() };
        self.model = self.optim.step(lr, report, self.model.clone(), grads);
        self.step += 1;
        Ok(read)
    }
}

/// A DPO step's metrics are TRL's: the means over its pairs of the implicit rewards, their
/// margins and accuracy, and the policy's log-probs, from the four values per pair the step
/// reports (rewards chosen, rewards rejected, log-probs chosen, log-probs rejected).
impl Reported for DpoStep {
    fn stage_step(&self) -> (&str, usize) {
        (&self.stage, self.step)
    }

    fn fill(&mut self, values: StepValues, tokens_per_s: f32) {
        let n = values.also.len() / 4;
        debug_assert_eq!(values.also.len(), 4 * n, "four values per pair");
        let per_pair = |i: usize| &values.also[i * n..(i + 1) * n];
        let (rc, rr, policy_chosen, policy_rejected) = (per_pair(0), per_pair(1), per_pair(2), per_pair(3));
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
        let margins: Vec<f32> = rc.iter().zip(rr).map(|(c, r)| c - r).collect();
        let accuracy: Vec<f32> = margins.iter().map(|m| if *m > 0.0 { 1.0 } else { 0.0 }).collect();
        self.loss = values.loss;
        self.grad_norm = values.grad_norm;
        self.rewards_chosen = mean(rc);
        self.rewards_rejected = mean(rr);
        self.rewards_margins = mean(&margins);
        self.rewards_accuracies = mean(&accuracy);
        self.logps_chosen = mean(policy_chosen);
        self.logps_rejected = mean(policy_rejected);
        self.tokens_per_s = tokens_per_s;
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use crate::config::ModelConfig;
    use burn::tensor::Int;

    /// A step reports what it computed before its update, read back in one piece: the policy's
    /// log-probs, the implicit rewards against the pairs' reference log-probs, and the sigmoid
    /// loss over them, each checked against the same quantities worked out on the host.
    #[test]
    fn a_step_reports_its_rewards_and_loss() {
        let device = Device::flex();
        let tok = Tokenizer::train_on(&crate::data::tasks::generate(100, 1), 150).unwrap();
        let model = ModelConfig::tiny(tok.vocab_size()).init(5, &autodiff(&device));
        let pairs = vec![
            PreferencePair { prompt: "add: 1 + 2".into(), chosen: "3".into(), rejected: "4 5".into() },
            PreferencePair { prompt: "last word: cat dog".into(), chosen: "dog".into(), rejected: "cat".into() },
            PreferencePair { prompt: "add: 2 + 2".into(), chosen: "4".into(), rejected: "5 6 7".into() },
        ];
        let policy = pollster::block_on(score_pairs(&model.valid(), &tok, &pairs, false, 128, &device)).unwrap();
        // References away from the policy, so that the rewards differ from pair to pair in sign.
        let shifts = [(-1.0, 0.5), (0.75, -0.25), (0.2, 0.1)];
        let scored: Vec<ScoredPair> = policy
            .iter()
            .zip(shifts)
            .map(|(p, (c, r))| ScoredPair { reference_chosen: p.reference_chosen + c, reference_rejected: p.reference_rejected + r, ..p.clone() })
            .collect();
        let config = SgpoConfig::default();
        let beta = config.beta as f32;
        let mut trainer = PreferenceTrainer::new(model, config, tok.special.pad, &device);
        let refs: Vec<&ScoredPair> = scored.iter().collect();
        trainer.set_read_every(2);
        assert!(pollster::block_on(trainer.step(&refs, &[], 1)).unwrap().is_empty(), "the first of two steps is not read yet");
        let read = pollster::block_on(trainer.step(&refs, &[], 1)).unwrap();
        assert_eq!(read.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2], "both steps, read together");
        let step = &read[0];

        let n = pairs.len() as f32;
        let mean = |f: &dyn Fn(usize) -> f32| (0..pairs.len()).map(f).sum::<f32>() / n;
        let chosen = |i: usize| beta * (policy[i].reference_chosen - scored[i].reference_chosen);
        let rejected = |i: usize| beta * (policy[i].reference_rejected - scored[i].reference_rejected);
        let close = |what: &str, got: f32, expected: f32| assert!((got - expected).abs() < 1e-4, "{what}: {got} vs {expected}");
        close("logps/chosen", step.logps_chosen, mean(&|i| policy[i].reference_chosen));
        close("logps/rejected", step.logps_rejected, mean(&|i| policy[i].reference_rejected));
        close("rewards/chosen", step.rewards_chosen, mean(&chosen));
        close("rewards/rejected", step.rewards_rejected, mean(&rejected));
        close("rewards/margins", step.rewards_margins, mean(&|i| chosen(i) - rejected(i)));
        close("rewards/accuracies", step.rewards_accuracies, mean(&|i| if chosen(i) > rejected(i) { 1.0 } else { 0.0 }));
        close("loss", step.loss, mean(&|i| (1.0 + (rejected(i) - chosen(i)).exp()).ln()));
        assert!(step.rewards_accuracies > 0.0 && step.rewards_accuracies < 1.0, "the shifts make some pairs right, some wrong");
        assert!(step.grad_norm.is_finite() && step.grad_norm > 0.0);
    }

    /// A pair's reference log-prob is the sum of its response tokens' log-probs under the
    /// model (recomputed here on the host from the raw logits); IPO's length normalisation
    /// divides that by the number of response tokens (the answer plus `<|end|>`).
    #[test]
    fn scores_are_response_log_probs_summed_or_averaged() {
        let device = Device::flex();
        let tok = Tokenizer::train_on(&crate::data::tasks::generate(100, 1), 150).unwrap();
        let model = ModelConfig::tiny(tok.vocab_size()).init(3, &device);
        let pairs = vec![PreferencePair { prompt: "add: 1 + 2".into(), chosen: "3".into(), rejected: "4 5 6 7".into() }];
        let raw = pollster::block_on(score_pairs(&model, &tok, &pairs, false, 128, &device)).unwrap();
        let norm = pollster::block_on(score_pairs(&model, &tok, &pairs, true, 128, &device)).unwrap();
        for (answer, got) in [("3", raw[0].reference_chosen), ("4 5 6 7", raw[0].reference_rejected)] {
            let seq = TokenSeq::policy(&tok, "add: 1 + 2", answer).unwrap();
            let n = seq.tokens.len();
            let ids: Vec<i32> = seq.tokens[..n - 1].iter().map(|&t| t as i32).collect();
            let inputs = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n - 1]), &device);
            let logits: Vec<f32> = model.forward_causal(inputs).into_data().iter::<f32>().collect();
            let vocab = logits.len() / (n - 1);
            let expected: f32 = (seq.prompt_len - 1..n - 1)
                .map(|i| {
                    let row = &logits[i * vocab..(i + 1) * vocab];
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let log_z = max + row.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
                    row[seq.tokens[i + 1] as usize] - log_z
                })
                .sum();
            assert!((got - expected).abs() < 1e-4, "{answer}: {got} vs {expected}");
        }
        let n_chosen = tok.response("3").unwrap().len() as f32;
        let n_rejected = tok.response("4 5 6 7").unwrap().len() as f32;
        assert!(n_rejected > n_chosen);
        assert!((norm[0].reference_chosen - raw[0].reference_chosen / n_chosen).abs() < 1e-5);
        assert!((norm[0].reference_rejected - raw[0].reference_rejected / n_rejected).abs() < 1e-5);
    }
}
