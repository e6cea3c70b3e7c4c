//! Supervised fine-tuning (SGPO's stage 0, and the loop stage 1 reuses) as one explicit loop,
//! driven a step at a time so the CLI can draw progress and the browser can yield between
//! steps: schedule, accumulation, global-norm clipping, AdamW, and checkpoints that resume
//! exactly.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor};

use super::objective::{sft_loss, target_logprobs};
use super::adamw::AdamW;
use super::optim::{autodiff, load_optimizer, step_report};
use super::reports::{READ_EVERY, Reported, StepReports, StepValues};
use crate::checkpoint::{Checkpoint, LoopState};
use crate::config::{RunConfig, SftConfig};
use crate::data::{Batch, Example, TokenSeq, Tokenizer, policy_seqs};
use crate::error::{Error, Result};
use crate::metrics::{TrainStep, now_seconds};
use crate::config::ModelConfig;
use crate::model::{Model, TextModel, model_bytes};
use crate::rng::Rng;

pub struct SftRun {
    /// `sft`, or `improver` when SGPO's stage 1 reuses this loop.
    pub stage: String,
    pub config: SftConfig,
    pub model_config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub model: Model,
    optim: AdamW,
    seqs: Vec<TokenSeq>,
    order: Vec<usize>,
    pub state: LoopState,
    /// Steps done whose numbers are still on the device.
    reports: StepReports<TrainStep>,
    device: Device,
}

impl SftRun {
    /// A fresh run: model initialised from `config.seed` on `device`.
    pub fn new(config: SftConfig, tokenizer: Tokenizer, train: &[Example], device: &Device) -> Result<Self> {
        let model_config = ModelConfig::preset(&config.preset, tokenizer.vocab_size())?;
        model_config.validate()?;
        let model = model_config.init(config.seed, &autodiff(device));
        let seqs = policy_seqs(&tokenizer, train, model_config.max_seq_len)?;
        Self::from_model("sft", config, TextModel { config: model_config, tokenizer, model }, seqs, device)
    }

    /// Continue training `start` on `seqs` with a fresh optimiser and schedule.
    pub fn from_model(stage: &str, config: SftConfig, start: TextModel, seqs: Vec<TokenSeq>, device: &Device) -> Result<Self> {
        let optim = config.optim.init();
        let state = LoopState { step: 0, epoch: 0, cursor: 0, rng: Rng::new(config.seed) };
        Self::assemble(stage, config, start, (optim, state), seqs, device)
    }

    /// Continue an SFT run from its checkpoint exactly where it stopped.
    pub fn resume(checkpoint: &Checkpoint, train: &[Example], device: &Device) -> Result<Self> {
        let (run, start) = checkpoint.open("", &autodiff(device))?;
        let seqs = policy_seqs(&start.tokenizer, train, run.model.max_seq_len)?;
        Self::restore("sft", run.sft, start, checkpoint.optimizer.as_deref(), seqs, checkpoint.state.clone(), device)
    }

    /// Continue a run that trains `start` on `seqs`, from a saved optimiser and position.
    pub fn restore(
        stage: &str,
        config: SftConfig,
        start: TextModel,
        optimizer: Option<&[u8]>,
        seqs: Vec<TokenSeq>,
        state: LoopState,
        device: &Device,
    ) -> Result<Self> {
        let optim = load_optimizer(&config.optim, optimizer)?;
        Self::assemble(stage, config, start, (optim, state), seqs, device)
    }

    fn assemble(
        stage: &str,
        config: SftConfig,
        start: TextModel,
        (optim, state): (AdamW, LoopState),
        seqs: Vec<TokenSeq>,
        device: &Device,
    ) -> Result<Self> {
        if seqs.is_empty() {
            return Err(Error::Config("no training examples".into()));
        }
        config.validate()?;
        let TextModel { config: model_config, tokenizer, model } = start;
        let device = autodiff(device);
        let stage = stage.to_string();
        let reports = StepReports::new(READ_EVERY);
        let mut run = Self { stage, config, model_config, tokenizer, model, optim, seqs, order: Vec::new(), state, reports, device };
        run.order = run.epoch_order(run.state.epoch);
        Ok(run)
    }

    /// Read the steps' numbers back every `steps` steps (1: each step, before it is applied).
    pub fn set_read_every(&mut self, steps: usize) {
        self.reports.read_every = steps;
    }

    pub fn seqs(&self) -> &[TokenSeq] {
        &self.seqs
    }

    pub async fn optimizer_bytes(&self) -> Result<Vec<u8>> {
        self.optim.to_bytes().await
    }

    /// The model as it stands (no gradients), with its config and tokenizer.
    pub fn text_model(&self) -> TextModel {
        TextModel { config: self.model_config.clone(), tokenizer: self.tokenizer.clone(), model: self.model.valid() }
    }

    fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.seqs.len()).collect();
        Rng::new(self.config.seed).fork(epoch as u64 + 1).shuffle(&mut order);
        order
    }

    fn next_indices(&mut self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.config.batch_size);
        while out.len() < self.config.batch_size {
            if self.state.cursor >= self.order.len() {
                self.state.epoch += 1;
                self.state.cursor = 0;
                self.order = self.epoch_order(self.state.epoch);
            }
            out.push(self.order[self.state.cursor]);
            self.state.cursor += 1;
        }
        out
    }

    /// All steps taken, and none left to tell of a failure.
    pub fn is_done(&self) -> bool {
        self.state.step >= self.config.steps && !self.reports.has_failed()
    }

    /// One optimiser step over `grad_accum` micro-batches. Returns the records of the steps
    /// whose numbers were read back with it: none between reads, the steps since the last read
    /// when one is due (every `read_every` steps, and at the last step), each exact.
    pub async fn step(&mut self) -> Result<Vec<TrainStep>> {
        self.reports.check()?;
        let started = now_seconds();
        let lr = self.config.optim.lr_at(self.state.step, self.config.steps);
        let mut accumulated = GradientsAccumulator::<Model>::new();
        let (mut loss_sum, mut tokens) = (Tensor::<1>::zeros([1], &self.device), 0);
        for _ in 0..self.config.grad_accum {
            let indices = self.next_indices();
            let seqs: Vec<&TokenSeq> = indices.iter().map(|&i| &self.seqs[i]).collect();
            let batch = Batch::new(&seqs, self.tokenizer.special.pad, &self.device);
            tokens += batch.n_tokens;
            let tokens = target_logprobs(&self.model, batch.inputs, batch.targets);
            let loss = sft_loss(tokens, batch.mask, batch.n_targets)
                .div_scalar(self.config.grad_accum as f64);
            let grads = GradientsParams::from_grads(loss.backward(), &self.model);
            accumulated.accumulate(&self.model, grads);
            loss_sum = loss_sum + loss.detach();
        }
        let grads = accumulated.grads();
        let report = step_report(&self.model, &grads, loss_sum, Vec::new());
        let record = TrainStep { stage: self.stage.clone(), step: self.state.step + 1, loss: 0.0, lr, grad_norm: 0.0, tokens, tokens_per_s: 0.0 };
        let due = self.reports.push(report.clone(), record, started, tokens) || self.state.step + 1 >= self.config.steps;
        // Before the update: a step read as not finite is refused with nothing applied.
        let read = if due { self.reports.read().await? } else { Vec::new() };
        self.model = self.optim.step(lr, report, self.model.clone(), grads);
        self.state.step += 1;
        Ok(read)
    }

    /// The records of the steps not read yet, each handed to `on_record`: a driver's due before
    /// it saves a checkpoint. A step read as not finite is the error, after the steps before it.
    pub async fn flush(&mut self, on_record: &mut dyn FnMut(TrainStep)) -> Result<()> {
        self.reports.flush(on_record).await
    }

    pub fn all_read(&self) -> bool {
        self.reports.is_clear()
    }

    /// The run as it stands; its steps must all be read ([`SftRun::flush`]) and logged first,
    /// or the checkpoint would hold updates its log does not.
    pub async fn checkpoint(&self) -> Result<Checkpoint> {
        assert!(self.all_read(), "{}: a checkpoint with steps not read back (SftRun::flush first)", self.stage);
        let config = RunConfig { model: self.model_config.clone(), sft: self.config.clone(), sgpo: None, source: None, chat: self.tokenizer.chat().cloned() };
        Ok(Checkpoint {
            config: config.to_json(),
            tokenizer: self.tokenizer.to_json()?,
            model: model_bytes(&self.model).await?,
            optimizer: Some(self.optimizer_bytes().await?),
            state: self.state.clone(),
            progress: None,
            logged: Default::default(),
        })
    }
}

impl Reported for TrainStep {
    fn stage_step(&self) -> (&str, usize) {
        (&self.stage, self.step)
    }

    fn fill(&mut self, values: StepValues, tokens_per_s: f32) {
        (self.loss, self.grad_norm, self.tokens_per_s) = (values.loss, values.grad_norm, tokens_per_s);
    }
}
