//! SGPO: Self-Generated Preference Optimization based on a self-improver (arXiv 2507.20181).
//!
//! One model, two roles. Stage 1 teaches the model to improve its own answers a step toward
//! the SFT answers (the improver role). Stage 2 repeats: the policy samples a draft, the same
//! model improves it, and DPO trains the policy to prefer the improvement, against the model
//! frozen at the start of the iteration. SPIN and plain DPO differ only in how pairs are built.

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::batch::{Batch, TokenSeq};
use crate::data::{Example, PreferencePair};
use crate::error::{Error, Result};
use crate::eval::{answer, complete};
use crate::generate::SamplingConfig;
use crate::improve::partial_edit;
use crate::metrics::{DpoStep, Event, IterationSummary, Progress, Sample, now_seconds};
use crate::model::{Model, ModelConfig};
use crate::objective::{DpoLoss, PairLogps, dpo_loss, sequence_logprobs, sft_loss};
use crate::readback;
use crate::rng::Rng;
use crate::tasks::judge;
use crate::tokenizer::Tokenizer;
use crate::checkpoint::{Checkpoint, LoopState};
use crate::train::{OptimConfig, SftConfig, SftRun, clip_grad_norm, load_model, load_optimizer, model_bytes, optimizer_bytes};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// chosen = the model's improvement of its own draft, rejected = the draft.
    Sgpo,
    /// chosen = the SFT answer, rejected = the model's draft.
    Spin,
    /// Fixed pairs from a prompt/chosen/rejected file; reference = the SFT model.
    Dpo,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sgpo => "sgpo",
            Self::Spin => "spin",
            Self::Dpo => "dpo",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sgpo" => Ok(Self::Sgpo),
            "spin" => Ok(Self::Spin),
            "dpo" => Ok(Self::Dpo),
            other => Err(Error::Config(format!("unknown method {other:?}; use sgpo, spin or dpo"))),
        }
    }
}

/// How stage 1 builds the improver's targets (SGPO.md, `improver_targets`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ImproverTargets {
    /// Apply the first ceil(alpha * n) edits of the token edit script from draft to SFT answer.
    Edit(f32),
    /// The model itself, shown the draft and the SFT answer, writes the target.
    Reference,
    /// The SFT answer itself (ablation: no incremental step).
    Sft,
}

impl TryFrom<String> for ImproverTargets {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "reference" => Ok(Self::Reference),
            "sft" => Ok(Self::Sft),
            _ => match s.strip_prefix("edit:").map(str::parse::<f32>) {
                Some(Ok(a)) if (0.0..=1.0).contains(&a) && a > 0.0 => Ok(Self::Edit(a)),
                _ => Err(format!("improver_targets {s:?}: use edit:ALPHA (0 < ALPHA <= 1), reference or sft")),
            },
        }
    }
}

impl From<ImproverTargets> for String {
    fn from(t: ImproverTargets) -> String {
        match t {
            ImproverTargets::Edit(a) => format!("edit:{a}"),
            ImproverTargets::Reference => "reference".into(),
            ImproverTargets::Sft => "sft".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgpoConfig {
    pub method: Method,
    /// Preference iterations T.
    pub iterations: usize,
    pub improver_targets: ImproverTargets,
    /// Stage 1: optimiser steps on improver examples mixed with policy examples.
    pub improver_steps: usize,
    /// Stage 1: examples whose drafts become improver data.
    pub improver_examples: usize,
    pub improver_optim: OptimConfig,
    /// Rebuild and retrain the improver with the current model before each later iteration.
    pub refresh_improver: bool,
    /// Prompts drawn per iteration to build pairs from.
    pub prompts_per_iteration: usize,
    /// Passes over each iteration's pairs.
    pub dpo_epochs: usize,
    pub batch_size: usize,
    pub loss: DpoLoss,
    pub beta: f64,
    pub label_smoothing: f64,
    /// Weight of an improver-SFT term added to every DPO step (0: off).
    pub improver_sft_weight: f64,
    pub dpo_optim: OptimConfig,
    /// Temperature of the policy's drafts (the rejected side).
    pub draft_temperature: f32,
    pub max_new_tokens: usize,
    /// Held-out prompts for the per-iteration win rate against the SFT model.
    pub eval_examples: usize,
    pub seed: u64,
}

impl Default for SgpoConfig {
    fn default() -> Self {
        Self {
            method: Method::Sgpo,
            iterations: 3,
            improver_targets: ImproverTargets::Edit(0.5),
            improver_steps: 300,
            improver_examples: 2000,
            improver_optim: OptimConfig { lr: 1e-3, warmup_steps: 20, ..OptimConfig::default() },
            refresh_improver: false,
            prompts_per_iteration: 512,
            dpo_epochs: 1,
            batch_size: 16,
            loss: DpoLoss::Sigmoid,
            beta: 0.1,
            label_smoothing: 0.0,
            improver_sft_weight: 0.0,
            // Measured on the built-in tasks (README): at 2e-4 for two epochs DPO lowered the held-out
            // score even with SPIN's ground-truth chosen answers; 5e-5 for one epoch did not.
            dpo_optim: OptimConfig { lr: 5e-5, warmup_steps: 0, min_lr_ratio: 1.0, weight_decay: 0.0, ..OptimConfig::default() },
            draft_temperature: 1.0,
            max_new_tokens: 32,
            eval_examples: 180,
            seed: 1,
        }
    }
}

/// A prompt, with its SFT answer where one is known.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptItem {
    pub prompt: String,
    pub reference: Option<String>,
}

/// A preference pair, with the judge's reference answer when there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub reference: Option<String>,
}

impl Pair {
    /// As TRL reads it.
    pub fn to_trl(&self) -> PreferencePair {
        PreferencePair { prompt: self.prompt.clone(), chosen: self.chosen.clone(), rejected: self.rejected.clone() }
    }
}

/// The pairs of one iteration.
#[derive(Debug, Clone, Default)]
pub struct PairSet {
    pub pairs: Vec<Pair>,
    /// Candidates dropped because chosen == rejected (no discernible improvement).
    pub unchanged: usize,
    pub improver_win_rate: Option<f32>,
    /// The first few candidates, kept or not, with the judge's scores where there is a
    /// reference (for the UI).
    pub samples: Vec<Candidate>,
    /// Tokens the model generated (drafts and improvements).
    pub generated_tokens: usize,
}

/// A draft and the answer preferred over it, as the judge sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub prompt: String,
    pub draft: String,
    pub improved: String,
    pub draft_score: Option<f32>,
    pub improved_score: Option<f32>,
}

/// Candidates kept per iteration for the sample table.
const SAMPLES_PER_ITERATION: usize = 8;

/// The improver role: rewrite each draft, greedily.
#[allow(clippy::too_many_arguments)]
pub async fn improve(
    model: &Model,
    tok: &Tokenizer,
    prompts: &[String],
    drafts: &[String],
    max_new_tokens: usize,
    rng: &mut Rng,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<String>> {
    let ids = prompts.iter().zip(drafts).map(|(p, d)| tok.improver_prompt(p, d)).collect::<Result<Vec<_>>>()?;
    complete(model, tok, &ids, &SamplingConfig::greedy(max_new_tokens), GENERATION_BATCH, rng, device, progress).await
}

/// Rows generated at once when building data.
const GENERATION_BATCH: usize = 64;

/// The text a reference-guided improver sees as its prompt.
fn with_reference(prompt: &str, reference: &str) -> String {
    format!("{prompt}\nreference answer: {reference}")
}

/// Stage 1 data: the policy's own drafts, each with a target a step closer to the SFT answer,
/// as improver sequences.
#[allow(clippy::too_many_arguments)]
pub async fn improver_data(
    model: &Model,
    tok: &Tokenizer,
    examples: &[Example],
    targets: ImproverTargets,
    cfg: &SgpoConfig,
    max_len: usize,
    rng: &mut Rng,
    device: &Device,
) -> Result<Vec<TokenSeq>> {
    let prompts: Vec<String> = examples.iter().map(|e| e.prompt.clone()).collect();
    let sampling = SamplingConfig { max_new_tokens: cfg.max_new_tokens, temperature: cfg.draft_temperature, top_k: 0, top_p: 1.0 };
    let drafts = answer(model, tok, &prompts, &sampling, GENERATION_BATCH, rng, device).await?;
    let goals: Vec<String> = match targets {
        ImproverTargets::Sft => examples.iter().map(|e| e.response.clone()).collect(),
        ImproverTargets::Edit(alpha) => examples
            .iter()
            .zip(&drafts)
            .map(|(e, d)| tok.decode(&partial_edit(&tok.encode(d)?, &tok.encode(&e.response)?, alpha)))
            .collect::<Result<_>>()?,
        ImproverTargets::Reference => {
            let guided: Vec<String> = examples.iter().map(|e| with_reference(&e.prompt, &e.response)).collect();
            improve(model, tok, &guided, &drafts, cfg.max_new_tokens, rng, device, &mut |_, _| {}).await?
        }
    };
    examples
        .iter()
        .zip(drafts.iter().zip(&goals))
        .map(|(e, (d, g))| Ok(TokenSeq::improver(tok, &e.prompt, d, g)?.fit(max_len + 1)))
        .collect()
}

fn same_answer(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// Stage 2, one iteration's pairs. For SGPO: the policy samples a draft, the same model
/// improves it, and (improved, draft) is a pair unless nothing changed.
#[allow(clippy::too_many_arguments)]
pub async fn build_pairs(
    method: Method,
    model: &Model,
    tok: &Tokenizer,
    items: &[PromptItem],
    fixed: &[PreferencePair],
    cfg: &SgpoConfig,
    iteration: usize,
    rng: &mut Rng,
    device: &Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<PairSet> {
    if method == Method::Dpo {
        let pairs = fixed
            .iter()
            .map(|p| Pair { prompt: p.prompt.clone(), chosen: p.chosen.clone(), rejected: p.rejected.clone(), reference: None })
            .collect();
        return Ok(PairSet { pairs, ..PairSet::default() });
    }
    let items: Vec<&PromptItem> = items.iter().filter(|i| method == Method::Sgpo || i.reference.is_some()).collect();
    let prompts: Vec<String> = items.iter().map(|i| i.prompt.clone()).collect();
    let total = prompts.len();
    let report = |stage: &'static str, started: f64| {
        move |done: usize, tokens: usize| Progress {
            stage: stage.to_string(),
            iteration,
            done,
            total,
            tokens_per_s: (tokens as f64 / (now_seconds() - started).max(1e-9)) as f32,
        }
    };
    let sampling = SamplingConfig { max_new_tokens: cfg.max_new_tokens, temperature: cfg.draft_temperature, top_k: 0, top_p: 1.0 };
    let ids = prompts.iter().map(|p| tok.policy_prompt(p)).collect::<Result<Vec<_>>>()?;
    let mut generated = [0usize; 2];
    let progress = report("generating", now_seconds());
    let drafts = complete(model, tok, &ids, &sampling, GENERATION_BATCH, rng, device, &mut |d, t| {
        generated[0] = t;
        on_event(Event::Progress(progress(d, t)))
    })
    .await?;
    let chosen = match method {
        Method::Sgpo => {
            let progress = report("improving", now_seconds());
            improve(model, tok, &prompts, &drafts, cfg.max_new_tokens, rng, device, &mut |d, t| {
                generated[1] = t;
                on_event(Event::Progress(progress(d, t)))
            })
            .await?
        }
        _ => items.iter().map(|i| i.reference.clone().unwrap_or_default()).collect(),
    };
    let mut set = PairSet { generated_tokens: generated[0] + generated[1], ..PairSet::default() };
    let (mut wins, mut judged) = (0usize, 0usize);
    for ((item, draft), better) in items.iter().zip(drafts).zip(chosen) {
        let scores = item.reference.as_ref().map(|r| (judge(&draft, r), judge(&better, r)));
        if let Some((d, b)) = scores {
            judged += 1;
            wins += usize::from(b > d);
        }
        if set.samples.len() < SAMPLES_PER_ITERATION {
            set.samples.push(Candidate {
                prompt: item.prompt.clone(),
                draft: draft.clone(),
                improved: better.clone(),
                draft_score: scores.map(|s| s.0),
                improved_score: scores.map(|s| s.1),
            });
        }
        if same_answer(&better, &draft) {
            set.unchanged += 1;
        } else {
            set.pairs.push(Pair { prompt: item.prompt.clone(), chosen: better, rejected: draft, reference: item.reference.clone() });
        }
    }
    set.improver_win_rate = (judged > 0).then(|| wins as f32 / judged as f32);
    Ok(set)
}

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
    let logits = model.forward_causal(batch.inputs.clone());
    let mut logps = sequence_logprobs(logits, batch.targets.clone(), batch.mask.clone());
    if normalize {
        let lengths: Vec<f32> = batch.row_targets.iter().map(|&n| n.max(1) as f32).collect();
        let n = lengths.len();
        logps = logps / Tensor::<1>::from_data(TensorData::new(lengths, [n]), device);
    }
    (logps, batch)
}

/// Tokenise pairs in the policy role and score them once under the frozen `reference` model.
pub async fn score_pairs(
    reference: &Model,
    tok: &Tokenizer,
    pairs: &[Pair],
    normalize: bool,
    max_len: usize,
    device: &Device,
) -> Result<Vec<ScoredPair>> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(32) {
        let mut seqs = Vec::with_capacity(chunk.len() * 2);
        for p in chunk {
            seqs.push(TokenSeq::policy(tok, &p.prompt, &p.chosen)?.fit(max_len + 1));
            seqs.push(TokenSeq::policy(tok, &p.prompt, &p.rejected)?.fit(max_len + 1));
        }
        let refs: Vec<&TokenSeq> = seqs.iter().collect();
        let (logps, _) = batch_logps(reference, &refs, tok.special.pad, normalize, device);
        let logps = readback::floats(logps).await?;
        let mut it = seqs.into_iter();
        for pair_logps in logps.chunks(2) {
            let (chosen, rejected) = (it.next().expect("chosen"), it.next().expect("rejected"));
            out.push(ScoredPair { chosen, rejected, reference_chosen: pair_logps[0], reference_rejected: pair_logps[1] });
        }
    }
    Ok(out)
}

/// The DPO learner: the policy being trained and its optimiser.
pub struct PreferenceTrainer {
    pub model: Model,
    optim: ModuleOptimizer,
    config: SgpoConfig,
    pad: u32,
    device: Device,
    pub step: usize,
}

impl PreferenceTrainer {
    pub fn new(model: Model, config: SgpoConfig, pad: u32, device: &Device) -> Self {
        let optim = config.dpo_optim.init();
        Self { model, optim, config, pad, device: device.clone().autodiff(), step: 0 }
    }

    /// One DPO update on `pairs`; with `improver` sequences and a positive weight, plus that
    /// much improver-SFT loss, so the shared weights keep the improver role.
    pub async fn step(&mut self, pairs: &[&ScoredPair], improver: &[&TokenSeq], iteration: usize) -> Result<DpoStep> {
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
            let logits = self.model.forward_causal(b.inputs);
            loss = loss + sft_loss(logits, b.targets, b.mask, b.n_targets).mul_scalar(self.config.improver_sft_weight);
        }
        let lr = self.config.dpo_optim.lr_at(self.step, usize::MAX);
        let mut grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let grad_norm = clip_grad_norm(&self.model, &mut grads, self.config.dpo_optim.grad_clip).await?;
        self.model = self.optim.step(lr, self.model.clone(), grads);
        self.step += 1;

        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
        let rc = readback::floats(rewards_chosen).await?;
        let rr = readback::floats(rewards_rejected).await?;
        let margins: Vec<f32> = rc.iter().zip(&rr).map(|(c, r)| c - r).collect();
        let accuracy: Vec<f32> = margins.iter().map(|m| if *m > 0.0 { 1.0 } else { 0.0 }).collect();
        let elapsed = (now_seconds() - started).max(1e-9);
        Ok(DpoStep {
            stage: "dpo".into(),
            iteration,
            step: self.step,
            loss: readback::scalar(loss.detach()).await?,
            rewards_chosen: mean(&rc),
            rewards_rejected: mean(&rr),
            rewards_margins: mean(&margins),
            rewards_accuracies: mean(&accuracy),
            logps_chosen: mean(&readback::floats(policy_chosen).await?),
            logps_rejected: mean(&readback::floats(policy_rejected).await?),
            grad_norm,
            lr,
            tokens,
            tokens_per_s: (tokens as f64 / elapsed) as f32,
        })
    }
}

/// Held-out win rate of `policy` against `baseline` (judge-based, ties half), and the policy's
/// mean score.
pub async fn win_rate(
    policy: &Model,
    baseline: &Model,
    tok: &Tokenizer,
    examples: &[Example],
    max_new_tokens: usize,
    device: &Device,
) -> Result<(f32, f32)> {
    let prompts: Vec<String> = examples.iter().map(|e| e.prompt.clone()).collect();
    let greedy = SamplingConfig::greedy(max_new_tokens);
    let mine = answer(policy, tok, &prompts, &greedy, GENERATION_BATCH, &mut Rng::new(0), device).await?;
    let theirs = answer(baseline, tok, &prompts, &greedy, GENERATION_BATCH, &mut Rng::new(0), device).await?;
    let (mut wins, mut score) = (0.0, 0.0);
    for ((e, a), b) in examples.iter().zip(&mine).zip(&theirs) {
        let (sa, sb) = (judge(a, &e.response), judge(b, &e.response));
        score += sa;
        wins += if sa > sb { 1.0 } else if sa == sb { 0.5 } else { 0.0 };
    }
    let n = examples.len().max(1) as f32;
    Ok((wins / n, score / n))
}

/// The data a preference run draws on.
#[derive(Debug, Clone, Default)]
pub struct PreferenceData {
    /// Prompts with SFT answers: stage 1, SPIN, and the judge.
    pub labeled: Vec<Example>,
    /// Prompts without answers (SGPO only).
    pub unlabeled: Vec<String>,
    /// Fixed pairs (DPO only).
    pub pairs: Vec<PreferencePair>,
    /// Held-out examples for the win rate.
    pub eval: Vec<Example>,
}

/// Where a preference run's inputs came from; saved in its config so `--resume` and `eval`
/// find them again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceSource {
    /// The SFT run the policy starts from.
    pub init: String,
    pub data: Option<String>,
    pub prompts: Option<String>,
}

/// Assemble a preference run's data (native edge: reads files). Without `--data`, the SFT
/// run's own examples; `--data` may add or replace them and bring fixed pairs; `--prompts`
/// adds unlabeled prompts (any rows' prompts, answers ignored).
#[cfg(not(target_arch = "wasm32"))]
pub fn load_preference_data(source: &PreferenceSource, sft: &SftConfig, eval_examples: usize) -> Result<PreferenceData> {
    let mut data = PreferenceData::default();
    match &source.data {
        Some(path) => {
            let file = crate::data::load_jsonl(std::path::Path::new(path))?;
            let (train, eval) = crate::data::split_examples(file.examples, 0.1, sft.seed);
            data.labeled = train;
            data.eval = eval;
            data.pairs = file.preferences;
            data.unlabeled = file.prompts;
        }
        None => {
            let (train, eval) = crate::train::load_examples(&sft.data, sft.seed)?;
            data.labeled = train;
            data.eval = eval;
        }
    }
    if let Some(path) = &source.prompts {
        let file = crate::data::load_jsonl(std::path::Path::new(path))?;
        data.unlabeled.extend(file.prompts);
        data.unlabeled.extend(file.examples.into_iter().map(|e| e.prompt));
        data.unlabeled.extend(file.preferences.into_iter().map(|p| p.prompt));
    }
    data.eval.truncate(eval_examples);
    Ok(data)
}

/// Where a preference run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Nothing done yet.
    Start,
    /// Stage 1: fine-tuning the improver role.
    Improver,
    /// Between iterations: the next step builds an iteration's pairs.
    Pairs,
    /// DPO on the current iteration's pairs.
    Dpo,
    Done,
}

/// DPO's position within one iteration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DpoProgress {
    pub pairs: Vec<Pair>,
    pub scored: Vec<ScoredPair>,
    pub order: Vec<usize>,
    pub cursor: usize,
    pub epoch: usize,
    /// What building the pairs measured; the win rate is added when the iteration ends.
    pub summary: IterationSummary,
}

/// Everything of a run's position that is not weights or optimiser state (`run_state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedProgress {
    stage: Stage,
    iteration: usize,
    improver_round: usize,
    step: usize,
    rng: Rng,
    improver_seqs: Vec<TokenSeq>,
    /// Stage 1 underway: its training sequences and loop position.
    improver_run: Option<(Vec<TokenSeq>, LoopState)>,
    dpo: Option<DpoProgress>,
}

/// Refuse a preference run that could not start: before any work, not after SFT.
pub fn check_inputs(config: &SgpoConfig, data: &PreferenceData) -> Result<()> {
    match config.method {
        Method::Dpo if data.pairs.is_empty() => {
            return Err(Error::Config("method dpo needs preference pairs (prompt/chosen/rejected rows in --data)".into()));
        }
        Method::Spin if data.labeled.is_empty() => {
            return Err(Error::Config("method spin needs examples with reference answers".into()));
        }
        Method::Sgpo if data.labeled.is_empty() => {
            return Err(Error::Config("method sgpo needs examples with reference answers to train the improver".into()));
        }
        _ => {}
    }
    if config.batch_size == 0 || config.iterations == 0 {
        return Err(Error::Config("batch_size and iterations must be at least 1".into()));
    }
    Ok(())
}

/// A whole SGPO / SPIN / DPO run from an SFT model, advanced one unit of work at a time (an
/// optimiser step, or building one iteration's pairs), so a driver can report progress,
/// yield, and checkpoint anywhere.
pub struct SgpoRun {
    pub config: SgpoConfig,
    pub model_config: ModelConfig,
    pub sft_config: SftConfig,
    pub tokenizer: Tokenizer,
    pub trainer: PreferenceTrainer,
    /// The SFT model, frozen: DPO's reference and the win-rate baseline.
    sft_model: Model,
    data: PreferenceData,
    pub stage: Stage,
    /// Iterations started (the current one while in `Dpo`).
    pub iteration: usize,
    /// Stage 1 runs before iteration `improver_round + 1` (more than once with refresh).
    improver_round: usize,
    /// Stage 1 in progress: it owns the model until it finishes.
    improver_run: Option<SftRun>,
    /// The last improver data, for the improver-SFT term.
    improver_seqs: Vec<TokenSeq>,
    dpo: Option<DpoProgress>,
    /// The pairs of the last finished iteration, for export.
    pub last_pairs: Vec<Pair>,
    rng: Rng,
    device: Device,
}

impl SgpoRun {
    pub fn new(
        config: SgpoConfig,
        model_config: ModelConfig,
        sft_config: SftConfig,
        tokenizer: Tokenizer,
        sft_model: Model,
        data: PreferenceData,
        device: &Device,
    ) -> Result<Self> {
        check_inputs(&config, &data)?;
        let ad = device.clone().autodiff();
        let trainer = PreferenceTrainer::new(sft_model.clone().fork(&ad).train(), config.clone(), tokenizer.special.pad, device);
        let rng = Rng::new(config.seed);
        Ok(Self {
            config,
            model_config,
            sft_config,
            tokenizer,
            trainer,
            sft_model: sft_model.valid(),
            data,
            stage: Stage::Start,
            iteration: 0,
            improver_round: 0,
            improver_run: None,
            improver_seqs: Vec::new(),
            dpo: None,
            last_pairs: Vec::new(),
            rng,
            device: device.clone(),
        })
    }

    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Optimiser steps so far: stage 1's while it runs, then the preference stage's.
    pub fn step(&self) -> usize {
        self.improver_run.as_ref().map_or(self.trainer.step, |r| r.state.step)
    }

    /// The current policy, for evaluation.
    pub fn policy(&self) -> Model {
        match &self.improver_run {
            Some(run) => run.model.valid(),
            None => self.trainer.model.valid(),
        }
    }

    /// Do the next unit of work: one optimiser step, or building one iteration's pairs.
    pub async fn advance(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<()> {
        match self.stage {
            Stage::Start if self.config.method == Method::Sgpo => self.start_improver().await?,
            Stage::Start => self.stage = Stage::Pairs,
            Stage::Improver => self.improver_step(on_event).await?,
            Stage::Pairs if self.iteration >= self.config.iterations => self.stage = Stage::Done,
            Stage::Pairs
                if self.config.refresh_improver
                    && self.config.method == Method::Sgpo
                    && self.improver_round < self.iteration =>
            {
                self.improver_round = self.iteration;
                self.start_improver().await?;
            }
            Stage::Pairs => self.start_iteration(on_event).await?,
            Stage::Dpo => self.dpo_step(on_event).await?,
            Stage::Done => {}
        }
        Ok(())
    }

    /// Stage 1 begins: improver data from the current policy, mixed with as many policy
    /// examples so neither role is forgotten.
    async fn start_improver(&mut self) -> Result<()> {
        let max_len = self.model_config.max_seq_len;
        let policy = self.trainer.model.valid();
        let n = self.config.improver_examples.min(self.data.labeled.len());
        let mut picked = self.data.labeled.clone();
        self.rng.shuffle(&mut picked);
        picked.truncate(n);
        let improver = improver_data(&policy, &self.tokenizer, &picked, self.config.improver_targets, &self.config, max_len, &mut self.rng, &self.device).await?;
        let mut seqs = improver.clone();
        seqs.extend(crate::batch::policy_seqs(&self.tokenizer, &picked, max_len)?);
        let run = SftRun::from_model("improver", self.improver_sft_config(), self.model_config.clone(), self.tokenizer.clone(), self.trainer.model.clone(), seqs, &self.device)?;
        self.improver_run = Some(run);
        self.improver_seqs = improver;
        self.stage = Stage::Improver;
        Ok(())
    }

    fn improver_sft_config(&self) -> SftConfig {
        SftConfig {
            steps: self.config.improver_steps,
            optim: self.config.improver_optim.clone(),
            seed: self.config.seed + self.improver_round as u64,
            ..self.sft_config.clone()
        }
    }

    async fn improver_step(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<()> {
        let run = self.improver_run.as_mut().expect("stage 1 has its run");
        if !run.is_done() {
            on_event(Event::Train(run.step().await?));
        }
        if run.is_done() {
            let run = self.improver_run.take().expect("stage 1 has its run");
            let step = self.trainer.step;
            self.trainer = PreferenceTrainer::new(run.model, self.config.clone(), self.tokenizer.special.pad, &self.device);
            self.trainer.step = step;
            self.stage = Stage::Pairs;
            // Where the policy stands after stage 1, before the next preference step.
            let summary = self.finish_summary(IterationSummary::empty(self.iteration, self.trainer.step)).await?;
            on_event(Event::Iteration(summary));
        }
        Ok(())
    }

    /// This iteration's prompts: labeled and unlabeled for SGPO, labeled only for SPIN.
    fn draw_prompts(&mut self) -> Vec<PromptItem> {
        let unlabeled: &[String] = if self.config.method == Method::Sgpo { &self.data.unlabeled } else { &[] };
        let mut items: Vec<PromptItem> = self
            .data
            .labeled
            .iter()
            .map(|e| PromptItem { prompt: e.prompt.clone(), reference: Some(e.response.clone()) })
            .chain(unlabeled.iter().map(|p| PromptItem { prompt: p.clone(), reference: None }))
            .collect();
        self.rng.shuffle(&mut items);
        items.truncate(self.config.prompts_per_iteration);
        items
    }

    /// An iteration begins: pairs from the current model, scored once by the reference (the
    /// model as it is now; the SFT model for DPO).
    async fn start_iteration(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<()> {
        self.iteration += 1;
        let started = now_seconds();
        let policy = self.trainer.model.valid();
        let items = self.draw_prompts();
        let set = build_pairs(self.config.method, &policy, &self.tokenizer, &items, &self.data.pairs, &self.config, self.iteration, &mut self.rng, &self.device, on_event).await?;
        let gen_rate = set.generated_tokens as f64 / (now_seconds() - started).max(1e-9);
        for c in set.samples {
            on_event(Event::Sample(Sample {
                iteration: self.iteration,
                step: self.trainer.step,
                prompt: c.prompt,
                draft: c.draft,
                improved: c.improved,
                draft_score: c.draft_score,
                improved_score: c.improved_score,
            }));
        }
        let reference = if self.config.method == Method::Dpo { &self.sft_model } else { &policy };
        let normalize = self.config.loss == DpoLoss::Ipo;
        let scored = score_pairs(reference, &self.tokenizer, &set.pairs, normalize, self.model_config.max_seq_len, &self.device).await?;
        let mut order: Vec<usize> = (0..scored.len()).collect();
        self.rng.shuffle(&mut order);
        let summary = IterationSummary {
            prompts: items.len(),
            pairs_built: set.pairs.len(),
            pairs_unchanged: set.unchanged,
            improver_win_rate: set.improver_win_rate,
            tokens_per_s: gen_rate as f32,
            ..IterationSummary::empty(self.iteration, self.trainer.step)
        };
        self.dpo = Some(DpoProgress { pairs: set.pairs, scored, order, cursor: 0, epoch: 0, summary });
        self.stage = Stage::Dpo;
        Ok(())
    }

    /// One DPO step on the next batch of this iteration's pairs; the iteration ends after
    /// `dpo_epochs` passes.
    async fn dpo_step(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<()> {
        let dpo = self.dpo.as_mut().expect("the DPO stage has its pairs");
        if dpo.cursor >= dpo.order.len() {
            dpo.epoch += 1;
            dpo.cursor = 0;
            self.rng.shuffle(&mut dpo.order);
        }
        if dpo.epoch < self.config.dpo_epochs && !dpo.order.is_empty() {
            let end = (dpo.cursor + self.config.batch_size).min(dpo.order.len());
            let pairs: Vec<&ScoredPair> = dpo.order[dpo.cursor..end].iter().map(|&i| &dpo.scored[i]).collect();
            dpo.cursor = end;
            let k = if self.config.improver_sft_weight > 0.0 { self.config.batch_size.min(self.improver_seqs.len()) } else { 0 };
            let improver: Vec<&TokenSeq> = (0..k).map(|_| &self.improver_seqs[self.rng.below(self.improver_seqs.len())]).collect();
            let m = self.trainer.step(&pairs, &improver, self.iteration).await?;
            on_event(Event::Dpo(m));
            return Ok(());
        }
        let dpo = self.dpo.take().expect("the DPO stage has its pairs");
        let summary = self.finish_summary(IterationSummary { step: self.trainer.step, ..dpo.summary }).await?;
        on_event(Event::Iteration(summary));
        self.last_pairs = dpo.pairs;
        self.stage = Stage::Pairs;
        Ok(())
    }

    /// Add the held-out win rate against the SFT model and the mean score.
    async fn finish_summary(&self, mut summary: IterationSummary) -> Result<IterationSummary> {
        if !self.data.eval.is_empty() {
            let (w, s) = win_rate(&self.policy(), &self.sft_model, &self.tokenizer, &self.data.eval, self.config.max_new_tokens, &self.device).await?;
            summary.policy_win_rate_vs_sft = Some(w);
            summary.mean_score = Some(s);
        }
        Ok(summary)
    }

    /// True between units that end a stage or an iteration: natural checkpoint points.
    pub fn at_boundary(&self) -> bool {
        matches!(self.stage, Stage::Pairs | Stage::Done)
    }

    /// The whole position: weights and optimiser of whichever stage owns the model, and the
    /// rest as `run_state.json`. `config` is the run's config JSON (the caller's: it knows
    /// where the SFT model came from).
    pub async fn checkpoint(&self, config: String) -> Result<Checkpoint> {
        let (model, optimizer) = match &self.improver_run {
            Some(run) => (model_bytes(&run.model).await?, run.optimizer_bytes()?),
            None => (model_bytes(&self.trainer.model).await?, optimizer_bytes(&self.trainer.optim)?),
        };
        let progress = SavedProgress {
            stage: self.stage,
            iteration: self.iteration,
            improver_round: self.improver_round,
            step: self.trainer.step,
            rng: self.rng,
            improver_seqs: self.improver_seqs.clone(),
            improver_run: self.improver_run.as_ref().map(|r| (r.seqs().to_vec(), r.state.clone())),
            dpo: self.dpo.clone(),
        };
        Ok(Checkpoint {
            config,
            tokenizer: self.tokenizer.to_json()?,
            model,
            optimizer,
            state: LoopState { step: self.step(), epoch: 0, cursor: 0, rng: self.rng },
            progress: Some(serde_json::to_string(&progress).expect("progress serialises")),
        })
    }

    /// Continue exactly from a checkpoint written by [`SgpoRun::checkpoint`].
    pub fn restore(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let source = crate::checkpoint::PROGRESS_FILE;
        let text = checkpoint
            .progress
            .as_deref()
            .ok_or_else(|| Error::checkpoint(source, "missing: not a preference run's checkpoint"))?;
        let saved: SavedProgress = serde_json::from_str(text).map_err(|e| Error::checkpoint(source, e))?;
        let ad = self.device.clone().autodiff();
        let model = load_model(&self.model_config, &checkpoint.model, &ad, crate::checkpoint::MODEL_FILE)?;
        self.stage = saved.stage;
        self.iteration = saved.iteration;
        self.improver_round = saved.improver_round;
        self.rng = saved.rng;
        self.improver_seqs = saved.improver_seqs;
        self.dpo = saved.dpo;
        match saved.improver_run {
            Some((seqs, state)) => {
                let config = self.improver_sft_config();
                let run = SftRun::restore("improver", config, self.model_config.clone(), self.tokenizer.clone(), model, &checkpoint.optimizer, seqs, state, &self.device)?;
                self.improver_run = Some(run);
                self.trainer.step = saved.step;
            }
            None => {
                self.trainer = PreferenceTrainer::new(model, self.config.clone(), self.tokenizer.special.pad, &self.device);
                self.trainer.optim = load_optimizer(&self.config.dpo_optim, &checkpoint.optimizer)?;
                self.trainer.step = saved.step;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn improver_targets_parse_and_print() {
        let t: ImproverTargets = "edit:0.5".to_string().try_into().unwrap();
        assert_eq!(t, ImproverTargets::Edit(0.5));
        assert_eq!(String::from(t), "edit:0.5");
        assert_eq!(ImproverTargets::try_from("sft".to_string()).unwrap(), ImproverTargets::Sft);
        assert!(ImproverTargets::try_from("edit:1.5".to_string()).is_err());
        assert!(ImproverTargets::try_from("edit:0".to_string()).is_err());
        let c: SgpoConfig = serde_json::from_str(r#"{"improver_targets": "reference", "loss": "ipo"}"#).unwrap();
        assert_eq!((c.improver_targets, c.loss), (ImproverTargets::Reference, DpoLoss::Ipo));
        assert!(serde_json::from_str::<SgpoConfig>(r#"{"improver_targets": "magic"}"#).is_err());
    }

    /// IPO's length normalisation: the normalised log-prob is the summed one over the number
    /// of response tokens (the answer plus `<|end|>`).
    #[test]
    fn length_normalised_logps_divide_by_response_tokens() {
        let device = Device::flex();
        let examples = crate::tasks::generate(100, 1);
        let tok = Tokenizer::train_on(&examples, 150).unwrap();
        let config = ModelConfig::tiny(tok.vocab_size());
        let model = config.init(3, &device);
        let pairs = vec![Pair { prompt: "add: 1 + 2".into(), chosen: "3".into(), rejected: "4 5 6 7".into(), reference: None }];
        let raw = pollster::block_on(score_pairs(&model, &tok, &pairs, false, 128, &device)).unwrap();
        let norm = pollster::block_on(score_pairs(&model, &tok, &pairs, true, 128, &device)).unwrap();
        let n_chosen = tok.response("3").unwrap().len() as f32;
        let n_rejected = tok.response("4 5 6 7").unwrap().len() as f32;
        assert!(n_rejected > n_chosen);
        assert!((norm[0].reference_chosen - raw[0].reference_chosen / n_chosen).abs() < 1e-5);
        assert!((norm[0].reference_rejected - raw[0].reference_rejected / n_rejected).abs() < 1e-5);
        assert!(raw[0].reference_chosen < 0.0);
    }
}
