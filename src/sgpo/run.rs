//! The resumable preference run: stage 1 and the iterations of stage 2 as a state machine that
//! does one unit of work per `advance` (an optimiser step, or building one iteration's pairs),
//! so a driver can report progress, yield, and checkpoint anywhere.

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::improver::{ImproverData, improver_data, improver_seqs, reference_lessons, stage1_drafts};
use super::pairs::{Pair, PromptItem, build_pairs};
use crate::config::{DpoLoss, ImproverTargets, Method, SftConfig, SgpoConfig};
use crate::data::judge::exact_match;
use crate::data::{Example, RunData, TokenSeq, Tokenizer, policy_seqs};
use crate::error::{Error, Result};
use crate::eval::{Comparison, answers};
use crate::generate::Decoder;
use crate::metrics::{Event, IterationSummary, Sample, now_seconds, rate};
use crate::config::ModelConfig;
use crate::model::{Model, TextModel};
use crate::rng::Rng;
use crate::train::{PreferenceTrainer, READ_EVERY, ScoredPair, SftRun, autodiff, score_pairs};

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

/// Stage 1's first phase with `reference-trained` targets: the improver learning to read the
/// reference. What the second phase needs is kept: the examples and their drafts, which the
/// trained improver then rewrites with the reference in view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferencePhase {
    pub examples: Vec<Example>,
    pub drafts: Vec<String>,
}

/// Refuse a preference run that could not start: before any work, not after SFT.
pub fn check_inputs(config: &SgpoConfig, data: &RunData) -> Result<()> {
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
    if config.method == Method::Dpo && data.pairs.iter().all(|p| exact_match(&p.chosen, &p.rejected)) {
        return Err(Error::Config("method dpo: every pair's chosen answer equals its rejected one; there is nothing to prefer".into()));
    }
    config.validate()
}

/// A whole SGPO / SPIN / DPO run from an SFT model. See the module `sgpo` for the algorithm.
pub struct SgpoRun {
    pub config: SgpoConfig,
    /// The settings the SFT model was trained with (stage 1 reuses them).
    pub sft_config: SftConfig,
    /// The SFT model, frozen: DPO's reference and the win-rate baseline. Its config is the
    /// policy's (with LoRA, the adapters' shape), which checkpoints are reopened with.
    pub(super) sft: TextModel,
    pub(super) trainer: PreferenceTrainer,
    pub(super) data: RunData,
    pub stage: Stage,
    /// Iterations started (the current one while in `Dpo`).
    pub iteration: usize,
    /// Stage 1 runs before iteration `improver_round + 1` (more than once with refresh).
    pub(super) improver_round: usize,
    /// Stage 1 in progress: it owns the model until it finishes.
    pub(super) improver_run: Option<SftRun>,
    /// The frozen SFT model's greedy answers to the held-out prompts, the win rate's baseline:
    /// decoded at the first evaluation of a run (or of a resumed one), then reused.
    pub(super) baseline_answers: Option<Vec<String>>,
    /// Set while stage 1 trains a reference-conditioned improver (the first of two phases).
    pub(super) reference_phase: Option<ReferencePhase>,
    /// The last improver data, for the improver-SFT term.
    pub(super) improver_seqs: Vec<TokenSeq>,
    /// The last stage-1 targets against their drafts (better, tied, worse by the judge).
    pub(super) improver_targets_judged: Option<[usize; 3]>,
    pub(super) dpo: Option<DpoProgress>,
    /// The pairs of the last finished iteration, for export.
    pub last_pairs: Vec<Pair>,
    /// Optimiser steps of the whole run, stage 1's and DPO's: one monotonic counter, so no two
    /// logged events of different steps share a number.
    pub(super) step: usize,
    /// Tokens the run generated (stage 1's drafts and targets, the pairs' drafts and
    /// improvements); the held-out evaluations are not counted.
    pub(super) generated_tokens: usize,
    pub(super) rng: Rng,
    pub(super) device: Device,
    /// Steps between reads of the training steps' numbers (see `train::reports`).
    pub(super) read_every: usize,
    /// Checkpoints hold the LoRA adapters only: the driver rebuilds the run from the model file
    /// it started from before restoring (the page, where a whole model at every save would
    /// fill the browser's storage).
    pub adapters_only: bool,
}

impl SgpoRun {
    /// A run that starts from `sft` (its weights are copied; the original stays frozen). With
    /// `sft.config.lora`, only adapters of that shape train, beside the SFT weights frozen.
    pub fn new(config: SgpoConfig, sft: TextModel, sft_config: SftConfig, data: RunData, device: &Device) -> Result<Self> {
        check_inputs(&config, &data)?;
        sft.config.validate()?;
        let lora = sft.config.lora.clone();
        let sft = sft.for_training(None, config.seed)?;
        // Only the adapters train when `lora` is set: the frozen weights are the SFT model's own
        // tensors, so the reference and the win-rate baseline cost no second copy.
        let policy = sft.model.clone().fork(&autodiff(device)).train();
        let policy = match &lora {
            Some(lora) => policy.with_lora(lora, config.seed),
            None => policy,
        };
        let trainer = PreferenceTrainer::new(policy, config.clone(), sft.tokenizer.special.pad, device);
        let sft = TextModel { model: sft.model.valid(), config: ModelConfig { lora, ..sft.config }, ..sft };
        let rng = Rng::new(config.seed);
        Ok(Self {
            config,
            sft_config,
            sft,
            trainer,
            data,
            stage: Stage::Start,
            iteration: 0,
            improver_round: 0,
            improver_run: None,
            reference_phase: None,
            baseline_answers: None,
            improver_seqs: Vec::new(),
            improver_targets_judged: None,
            dpo: None,
            last_pairs: Vec::new(),
            step: 0,
            generated_tokens: 0,
            rng,
            device: device.clone(),
            read_every: READ_EVERY,
            adapters_only: false,
        })
    }

    /// Read the training steps' numbers back every `steps` steps (1: each step, before it is
    /// applied), in stage 1 and in DPO.
    pub fn set_read_every(&mut self, steps: usize) {
        self.read_every = steps;
        self.trainer.set_read_every(steps);
        if let Some(run) = &mut self.improver_run {
            run.set_read_every(steps);
        }
    }

    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Optimiser steps so far, stage 1's and DPO's together.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Tokens generated to build training data so far (not counting evaluation).
    pub fn generated_tokens(&self) -> usize {
        self.generated_tokens
    }

    /// Stage 1 comes first: SGPO's improver, unless `improver_steps` is 0; SPIN's only as the
    /// `spin_after_stage1` ablation.
    fn runs_stage1(&self) -> bool {
        let wanted = match self.config.method {
            Method::Sgpo => true,
            Method::Spin => self.config.spin_after_stage1,
            Method::Dpo => false,
        };
        wanted && self.config.improver_steps > 0
    }

    /// Iterations whose DPO has finished.
    pub fn finished_iterations(&self) -> usize {
        if self.stage == Stage::Dpo { self.iteration - 1 } else { self.iteration }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.sft.tokenizer
    }

    pub fn model_config(&self) -> &ModelConfig {
        &self.sft.config
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
        let sgpo = self.config.method == Method::Sgpo;
        match self.stage {
            Stage::Start if self.runs_stage1() => self.start_improver().await?,
            Stage::Start => self.stage = Stage::Pairs,
            Stage::Improver => self.improver_step(on_event).await?,
            Stage::Pairs if self.iteration >= self.config.iterations => self.stage = Stage::Done,
            Stage::Pairs if sgpo && self.runs_stage1() && self.config.refresh_improver && self.improver_round < self.iteration => {
                self.improver_round = self.iteration;
                self.start_improver().await?;
            }
            Stage::Pairs => self.start_iteration(on_event).await?,
            Stage::Dpo => self.dpo_step(on_event).await?,
            Stage::Done => {}
        }
        Ok(())
    }

    /// True between units that end a stage or an iteration: natural checkpoint points.
    pub fn at_boundary(&self) -> bool {
        matches!(self.stage, Stage::Pairs | Stage::Done)
    }

    /// Stage 1 begins: drafts from the current policy for a sample of the labeled examples.
    /// With `reference-trained` targets the improver first learns to read the reference;
    /// otherwise it trains on its targets right away.
    async fn start_improver(&mut self) -> Result<()> {
        let n = self.config.improver_examples.min(self.data.labeled.len());
        let mut picked = self.data.labeled.clone();
        self.rng.shuffle(&mut picked);
        picked.truncate(n);
        let (tok, max_len) = (&self.sft.tokenizer, self.sft.config.max_seq_len);
        let policy = self.trainer.model.for_decoding();
        let decoder = Decoder::new(&policy, tok, &self.device);
        let drafts = stage1_drafts(&decoder, &picked, &self.config, &mut self.rng).await?;
        let model = self.trainer.model.clone();
        if let ImproverTargets::ReferenceTrained(alpha) = self.config.improver_targets {
            self.generated_tokens += decoder.generated.get();
            let lessons = reference_lessons(&picked, &drafts, alpha, tok.chat().is_some(), &mut self.rng);
            let rows = lessons.iter().zip(&drafts).map(|((prompt, target), draft)| (prompt.as_str(), draft.as_str(), target.as_str()));
            let mut seqs = improver_seqs(tok, rows, max_len)?;
            seqs.extend(policy_seqs(tok, &picked, max_len)?);
            self.start_improver_run(model, seqs)?;
            self.reference_phase = Some(ReferencePhase { examples: picked, drafts });
        } else {
            // The policy as it is writes the targets where it has to (`reference`).
            let data = improver_data(&decoder, &picked, &drafts, &self.config, max_len, &mut self.rng).await?;
            self.generated_tokens += decoder.generated.get();
            self.train_on(model, &picked, data)?;
        }
        self.stage = Stage::Improver;
        Ok(())
    }

    /// `reference-trained`, second phase: the model that learned to read the reference
    /// (`model`) rewrites the phase's drafts with it in view; stage 1 then trains on those.
    async fn train_on_written_targets(&mut self, model: Model, phase: ReferencePhase) -> Result<()> {
        let data = {
            let writer = model.for_decoding();
            let decoder = Decoder::new(&writer, &self.sft.tokenizer, &self.device);
            let data = improver_data(&decoder, &phase.examples, &phase.drafts, &self.config, self.sft.config.max_seq_len, &mut self.rng).await?;
            self.generated_tokens += decoder.generated.get();
            data
        };
        self.train_on(model, &phase.examples, data)
    }

    /// Stage 1 trains `model` on the improver data mixed with as many policy examples, so
    /// neither role is forgotten.
    fn train_on(&mut self, model: Model, examples: &[Example], data: ImproverData) -> Result<()> {
        self.improver_targets_judged = Some(data.targets_judged);
        let mut seqs = data.seqs.clone();
        seqs.extend(policy_seqs(&self.sft.tokenizer, examples, self.sft.config.max_seq_len)?);
        self.start_improver_run(model, seqs)?;
        self.improver_seqs = data.seqs;
        Ok(())
    }

    /// Both phases of `reference-trained` use the same seed, so a draft's lesson (phase A) and
    /// its written target (phase B) come up at the same point of each phase.
    fn start_improver_run(&mut self, model: Model, seqs: Vec<TokenSeq>) -> Result<()> {
        let start = TextModel { model, ..self.sft.clone() };
        let mut run = SftRun::from_model("improver", self.improver_sft_config(), start, seqs, &self.device)?;
        run.set_read_every(self.read_every);
        self.improver_run = Some(run);
        Ok(())
    }

    pub(super) fn improver_sft_config(&self) -> SftConfig {
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
            // Stage 1's steps are numbered from the run's count at its start.
            let offset = self.step - run.state.step;
            let read = run.step().await.map_err(|e| e.offset_step(offset))?;
            self.step += 1;
            for mut m in read {
                m.step += offset;
                on_event(Event::Train(m));
            }
        }
        if run.is_done() {
            let run = self.improver_run.take().expect("stage 1 has its run");
            if let Some(phase) = self.reference_phase.take() {
                // The reference-conditioned improver now writes the targets stage 1 trains on.
                return self.train_on_written_targets(run.model, phase).await;
            }
            let dpo_steps = self.trainer.step;
            self.trainer = PreferenceTrainer::new(run.model, self.config.clone(), self.sft.tokenizer.special.pad, &self.device);
            self.trainer.set_read_every(self.read_every);
            self.trainer.step = dpo_steps;
            self.stage = Stage::Pairs;
            // Where the policy stands after stage 1, before the next preference step.
            let stage1 = IterationSummary { improver_targets_judged: self.improver_targets_judged, ..IterationSummary::empty(self.iteration, self.step) };
            let summary = self.finish_summary(stage1).await?;
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
        let policy = self.trainer.model.for_decoding();
        let items = self.draw_prompts();
        let decoder = Decoder::new(&policy, &self.sft.tokenizer, &self.device);
        let max_len = self.sft.config.max_seq_len;
        let set = build_pairs(&decoder, &items, &self.data.pairs, &self.config, max_len, self.iteration, &mut self.rng, on_event).await?;
        let generation_rate = rate(set.generated_tokens, started);
        self.generated_tokens += set.generated_tokens;
        for c in set.samples {
            on_event(Event::Sample(Sample {
                iteration: self.iteration,
                step: self.step,
                prompt: c.prompt,
                draft: c.draft,
                improved: c.improved,
                draft_score: c.draft_score,
                improved_score: c.improved_score,
            }));
        }
        let reference = if self.config.method == Method::Dpo { &self.sft.model } else { &policy };
        let normalize = self.config.loss == DpoLoss::Ipo;
        let trl: Vec<_> = set.pairs.iter().map(Pair::to_trl).collect();
        let scored = score_pairs(reference, &self.sft.tokenizer, &trl, normalize, self.sft.config.max_seq_len, &self.device).await?;
        let mut order: Vec<usize> = (0..scored.len()).collect();
        self.rng.shuffle(&mut order);
        let summary = IterationSummary {
            prompts: items.len(),
            candidates: set.candidates,
            pairs_built: set.pairs.len(),
            pairs_unchanged: set.unchanged,
            pairs_empty_chosen: set.empty_chosen,
            pairs_filtered: set.filtered,
            chosen_is_greedy: set.chosen_is_greedy,
            pairs_judged: set.judged,
            improver_win_rate: set.improver_win_rate,
            tokens_per_s: generation_rate,
            ..IterationSummary::empty(self.iteration, self.step)
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
            let offset = self.step - self.trainer.step;
            let read = self.trainer.step(&pairs, &improver, self.iteration).await.map_err(|e| e.offset_step(offset))?;
            self.step += 1;
            for mut m in read {
                m.step += offset;
                on_event(Event::Dpo(m));
            }
            return Ok(());
        }
        self.flush(on_event).await?;
        let dpo = self.dpo.take().expect("the DPO stage has its pairs");
        let summary = self.finish_summary(IterationSummary { step: self.step, ..dpo.summary }).await?;
        on_event(Event::Iteration(summary));
        self.last_pairs = dpo.pairs;
        self.stage = Stage::Pairs;
        Ok(())
    }

    /// Add the held-out win rate against the SFT model and the mean score.
    async fn finish_summary(&mut self, mut summary: IterationSummary) -> Result<IterationSummary> {
        summary.generated_tokens = self.generated_tokens;
        if !self.data.eval.is_empty() {
            let (eval, max_new) = (&self.data.eval, self.config.max_new_tokens);
            if self.baseline_answers.is_none() {
                self.baseline_answers = Some(answers(&self.sft.model, &self.sft.tokenizer, eval, max_new, &self.device).await?);
            }
            let mine = answers(&self.policy().merged(), &self.sft.tokenizer, eval, max_new, &self.device).await?;
            let result = Comparison::of(&self.data.eval, &mine, self.baseline_answers.as_deref().expect("decoded above"));
            summary.policy_win_rate_vs_sft = Some(result.win_rate());
            summary.mean_score = Some(result.mean_score());
        }
        Ok(summary)
    }
}
