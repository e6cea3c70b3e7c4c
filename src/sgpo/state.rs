//! A preference run's checkpoint: the weights and optimiser of whichever stage owns the model,
//! and the rest of its position as `run_state.json`, so a resumed run continues exactly; and
//! the reading back of unread steps that must come before it.

use serde::{Deserialize, Serialize};

use super::run::{DpoProgress, ReferencePhase, SgpoRun, Stage};
use crate::checkpoint::{Checkpoint, LoopState, MODEL_FILE, PROGRESS_FILE};
use crate::data::TokenSeq;
use crate::error::{Error, Result};
use crate::metrics::{DpoStep, Event, TrainStep};
use crate::model::{TextModel, adapter_bytes, load_adapters, load_model, model_bytes};
use crate::rng::Rng;
use crate::train::{PreferenceTrainer, SftRun, autodiff};

/// Everything of a run's position that is not weights or optimiser state (`run_state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedProgress {
    stage: Stage,
    iteration: usize,
    improver_round: usize,
    /// The run's optimiser steps, stage 1's and DPO's.
    step: usize,
    /// Tokens generated for training data (saved before this was counted: 0).
    #[serde(default)]
    generated_tokens: usize,
    /// DPO updates so far (the DPO schedule's position).
    dpo_steps: usize,
    rng: Rng,
    improver_seqs: Vec<TokenSeq>,
    #[serde(default)]
    improver_targets_judged: Option<[usize; 3]>,
    /// Stage 1 underway: its training sequences and loop position.
    improver_run: Option<(Vec<TokenSeq>, LoopState)>,
    /// Stage 1 training the reference-conditioned improver (its first phase).
    #[serde(default)]
    reference_phase: Option<ReferencePhase>,
    dpo: Option<DpoProgress>,
}

impl SgpoRun {
    /// Read back the steps not read yet and report them, numbered as the run counts: due before
    /// a checkpoint (stages and iterations read their own at their end).
    pub async fn flush(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<()> {
        if let Some(run) = &mut self.improver_run {
            let offset = self.step - run.state.step;
            let mut report = |mut m: TrainStep| {
                m.step += offset;
                on_event(Event::Train(m));
            };
            run.flush(&mut report).await.map_err(|e| e.offset_step(offset))?;
        }
        let offset = self.step - self.trainer.step;
        let mut report = |mut m: DpoStep| {
            m.step += offset;
            on_event(Event::Dpo(m));
        };
        self.trainer.flush(&mut report).await.map_err(|e| e.offset_step(offset))
    }

    /// No step's numbers wait on the device: a checkpoint may be taken.
    pub fn all_read(&self) -> bool {
        self.trainer.all_read() && self.improver_run.as_ref().is_none_or(SftRun::all_read)
    }

    /// The whole position. `config` is the run's config JSON (the caller's: it knows where the
    /// SFT model came from).
    pub async fn checkpoint(&self, config: String) -> Result<Checkpoint> {
        // Steps not read back would be in the weights and not in the log.
        assert!(self.all_read(), "a checkpoint with training steps not read back (SgpoRun::flush first)");
        let (model, optimizer) = match &self.improver_run {
            Some(run) => (&run.model, run.optimizer_bytes().await?),
            None => (&self.trainer.model, self.trainer.optimizer_bytes().await?),
        };
        let model = if self.adapters_only { adapter_bytes(model).await? } else { model_bytes(model).await? };
        let progress = SavedProgress {
            stage: self.stage,
            iteration: self.iteration,
            improver_round: self.improver_round,
            step: self.step,
            generated_tokens: self.generated_tokens,
            dpo_steps: self.trainer.step,
            rng: self.rng,
            improver_seqs: self.improver_seqs.clone(),
            improver_targets_judged: self.improver_targets_judged,
            improver_run: self.improver_run.as_ref().map(|r| (r.seqs().to_vec(), r.state.clone())),
            reference_phase: self.reference_phase.clone(),
            dpo: self.dpo.clone(),
        };
        Ok(Checkpoint {
            config,
            tokenizer: self.sft.tokenizer.to_json()?,
            model,
            optimizer: Some(optimizer),
            state: LoopState { step: self.step, epoch: 0, cursor: 0, rng: self.rng },
            progress: Some(serde_json::to_string(&progress).expect("progress serialises")),
            logged: Default::default(),
        })
    }

    /// Continue exactly from a checkpoint written by [`SgpoRun::checkpoint`].
    pub fn restore(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let text = checkpoint
            .progress
            .as_deref()
            .ok_or_else(|| Error::checkpoint(PROGRESS_FILE, "missing: not a preference run's checkpoint"))?;
        let saved: SavedProgress = serde_json::from_str(text).map_err(|e| Error::checkpoint(PROGRESS_FILE, e))?;
        let model = if self.adapters_only {
            load_adapters(self.trainer.model.clone(), &checkpoint.model, MODEL_FILE)?
        } else {
            load_model(&self.sft.config, &checkpoint.model, &autodiff(&self.device), MODEL_FILE)?
        };
        self.stage = saved.stage;
        self.iteration = saved.iteration;
        // A finished run resumed with more iterations goes on to the next one.
        if self.stage == Stage::Done && self.iteration < self.config.iterations {
            self.stage = Stage::Pairs;
        }
        self.improver_round = saved.improver_round;
        self.step = saved.step;
        self.generated_tokens = saved.generated_tokens;
        self.rng = saved.rng;
        self.improver_seqs = saved.improver_seqs;
        self.improver_targets_judged = saved.improver_targets_judged;
        self.dpo = saved.dpo;
        self.reference_phase = saved.reference_phase;
        let pad = self.sft.tokenizer.special.pad;
        match saved.improver_run {
            Some((seqs, state)) => {
                let start = TextModel { model, ..self.sft.clone() };
                let mut run = SftRun::restore("improver", self.improver_sft_config(), start, checkpoint.optimizer.as_deref(), seqs, state, &self.device)?;
                run.set_read_every(self.read_every);
                self.improver_run = Some(run);
                self.trainer.step = saved.dpo_steps;
            }
            None => {
                self.trainer = PreferenceTrainer::restore(model, self.config.clone(), pad, checkpoint.optimizer.as_deref(), saved.dpo_steps, &self.device)?;
                self.trainer.set_read_every(self.read_every);
            }
        }
        Ok(())
    }
}
