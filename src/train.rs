//! Supervised fine-tuning (SGPO's stage 0) as one explicit loop, driven a step at a time so the
//! CLI can draw progress and the browser can yield between steps: schedule, accumulation,
//! global-norm clipping, AdamW, and checkpoints that resume exactly.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::batch::{Batch, TokenSeq, policy_seqs};
use crate::checkpoint::{Checkpoint, LoopState};
use crate::data::Example;
use crate::error::{Error, Result};
use crate::metrics::{TrainStep, now_seconds};
use crate::model::{Model, ModelConfig};
use crate::objective::sft_loss;
use crate::readback;
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub lr: f64,
    pub warmup_steps: usize,
    /// The cosine schedule ends at `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub weight_decay: f32,
    /// Global gradient-norm clip; 0 disables it.
    pub grad_clip: f32,
    pub beta1: f32,
    pub beta2: f32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self { lr: 2e-3, warmup_steps: 30, min_lr_ratio: 0.1, weight_decay: 0.01, grad_clip: 1.0, beta1: 0.9, beta2: 0.95 }
    }
}

impl OptimConfig {
    /// Linear warm-up, then cosine decay to `min_lr_ratio * lr` at `total` steps.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let min = self.lr * self.min_lr_ratio;
        min + (self.lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }

    pub fn init(&self) -> ModuleOptimizer {
        AdamWConfig::new()
            .with_beta_1(self.beta1)
            .with_beta_2(self.beta2)
            .with_epsilon(1e-8)
            .with_weight_decay(self.weight_decay)
            .init()
    }
}

/// Where the examples come from. Saved with the run, so `eval` finds the same held-out part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    Builtin { n_train: usize, n_eval: usize },
    File { path: String, eval_fraction: f32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    pub preset: String,
    /// Size of the BPE trained when no tokenizer is given.
    pub vocab_size: usize,
    pub steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub optim: OptimConfig,
    pub seed: u64,
    pub checkpoint_every: usize,
    pub data: DataSource,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            preset: "small".into(),
            vocab_size: 512,
            steps: 700,
            batch_size: 24,
            grad_accum: 1,
            optim: OptimConfig::default(),
            seed: 42,
            checkpoint_every: 100,
            data: DataSource::Builtin { n_train: 20000, n_eval: 270 },
        }
    }
}

/// Everything saved as `config.json` next to the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: ModelConfig,
    pub sft: SftConfig,
    /// Present in runs made by `sgpo train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sgpo: Option<crate::sgpo::SgpoConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::sgpo::PreferenceSource>,
}

impl RunConfig {
    pub fn from_json(source: &str, json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::file(source, format!("not a valid run config: {e}")))
    }
}

/// The train and held-out examples of a data source (native edge: reads the file).
#[cfg(not(target_arch = "wasm32"))]
pub fn load_examples(source: &DataSource, seed: u64) -> Result<(Vec<Example>, Vec<Example>)> {
    match source {
        DataSource::Builtin { n_train, n_eval } => Ok(crate::tasks::builtin_split(*n_train, *n_eval, seed)),
        DataSource::File { path, eval_fraction } => {
            let data = crate::data::load_jsonl(std::path::Path::new(path))?;
            if data.examples.is_empty() {
                return Err(Error::file(path, "has no examples with reference answers (prompt + response) to train on"));
            }
            Ok(crate::data::split_examples(data.examples, *eval_fraction, seed))
        }
    }
}

/// Sum of squared gradients over every parameter, on the device.
struct GradSquares<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for GradSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

struct ScaleGrads<'a> {
    grads: &'a mut GradientsParams,
    scale: f32,
}

impl ModuleVisitor for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.scale));
        }
    }
}

/// Clip the gradients to a global L2 norm of `max_norm` (0: no clipping); returns the norm
/// before clipping.
pub async fn clip_grad_norm(model: &Model, grads: &mut GradientsParams, max_norm: f32) -> Result<f32> {
    let mut squares = GradSquares { grads, total: None };
    model.visit(&mut squares);
    let Some(total) = squares.total else { return Ok(0.0) };
    let norm = readback::scalar(total).await?.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        model.visit(&mut ScaleGrads { grads, scale: max_norm / (norm + 1e-6) });
    }
    Ok(norm)
}

pub async fn model_bytes(model: &Model) -> Result<Vec<u8>> {
    let bytes = readback::host_copy(model)
        .await?
        .into_record()
        .into_bytes()
        .map_err(|e| Error::Config(format!("cannot serialise the model: {e}")))?;
    Ok(bytes.to_vec())
}

/// The optimiser's moments, or nothing in the browser: burn 0.22 flattens them with
/// synchronous reads, which WebGPU cannot do, so a browser checkpoint resumes with fresh
/// AdamW moments (weights, schedule position and data order are still restored).
pub fn optimizer_bytes(optim: &ModuleOptimizer) -> Result<Vec<u8>> {
    if cfg!(target_arch = "wasm32") {
        return Ok(Vec::new());
    }
    let bytes = optim
        .into_bytes()
        .map_err(|e| Error::Config(format!("cannot serialise the optimiser: {e}")))?;
    Ok(bytes.to_vec())
}

pub fn load_optimizer(config: &OptimConfig, bytes: &[u8]) -> Result<ModuleOptimizer> {
    if bytes.is_empty() {
        return Ok(config.init());
    }
    config
        .init()
        .from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| Error::checkpoint(crate::checkpoint::OPTIMIZER_FILE, e))
}

pub fn load_model(config: &ModelConfig, bytes: &[u8], device: &Device, source: &str) -> Result<Model> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| Error::checkpoint(source, format!("unreadable weights: {e}")))?;
    config
        .init(0, device)
        .try_load_record(record)
        .map_err(|e| Error::checkpoint(source, format!("weights do not fit the model config: {e}")))
}

pub struct SftRun {
    /// `sft`, or `improver` when SGPO's stage 1 reuses this loop.
    pub stage: String,
    pub config: SftConfig,
    pub model_config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub model: Model,
    optim: ModuleOptimizer,
    seqs: Vec<TokenSeq>,
    order: Vec<usize>,
    pub state: LoopState,
    device: Device,
}

impl SftRun {
    /// A fresh run: model initialised from `config.seed` on `device` (gradients enabled here).
    pub fn new(config: SftConfig, tokenizer: Tokenizer, train: &[Example], device: &Device) -> Result<Self> {
        let model_config = ModelConfig::preset(&config.preset, tokenizer.vocab_size())?;
        model_config.validate()?;
        let device = device.clone().autodiff();
        let model = model_config.init(config.seed, &device);
        let seqs = policy_seqs(&tokenizer, train, model_config.max_seq_len)?;
        Self::from_model("sft", config, model_config, tokenizer, model, seqs, &device)
    }

    /// Continue training `model` on `seqs` with a fresh optimiser and schedule.
    pub fn from_model(
        stage: &str,
        config: SftConfig,
        model_config: ModelConfig,
        tokenizer: Tokenizer,
        model: Model,
        seqs: Vec<TokenSeq>,
        device: &Device,
    ) -> Result<Self> {
        let optim = config.optim.init();
        let state = LoopState { step: 0, epoch: 0, cursor: 0, rng: Rng::new(config.seed) };
        Self::assemble(stage, config, model_config, tokenizer, model, optim, seqs, state, device.clone().autodiff())
    }

    /// Continue from a checkpoint exactly where it stopped.
    pub fn resume(checkpoint: &Checkpoint, train: &[Example], device: &Device) -> Result<Self> {
        let run = RunConfig::from_json(crate::checkpoint::CONFIG_FILE, &checkpoint.config)?;
        let tokenizer = Tokenizer::from_json(crate::checkpoint::TOKENIZER_FILE, &checkpoint.tokenizer)?;
        let device = device.clone().autodiff();
        let model = load_model(&run.model, &checkpoint.model, &device, crate::checkpoint::MODEL_FILE)?;
        let optim = load_optimizer(&run.sft.optim, &checkpoint.optimizer)?;
        let seqs = policy_seqs(&tokenizer, train, run.model.max_seq_len)?;
        Self::assemble("sft", run.sft, run.model, tokenizer, model, optim, seqs, checkpoint.state.clone(), device)
    }

    /// Continue a run that trains `model` on `seqs`, from a saved optimiser and position.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        stage: &str,
        config: SftConfig,
        model_config: ModelConfig,
        tokenizer: Tokenizer,
        model: Model,
        optimizer: &[u8],
        seqs: Vec<TokenSeq>,
        state: LoopState,
        device: &Device,
    ) -> Result<Self> {
        let optim = load_optimizer(&config.optim, optimizer)?;
        Self::assemble(stage, config, model_config, tokenizer, model, optim, seqs, state, device.clone().autodiff())
    }

    pub fn seqs(&self) -> &[TokenSeq] {
        &self.seqs
    }

    pub fn optimizer_bytes(&self) -> Result<Vec<u8>> {
        optimizer_bytes(&self.optim)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        stage: &str,
        config: SftConfig,
        model_config: ModelConfig,
        tokenizer: Tokenizer,
        model: Model,
        optim: ModuleOptimizer,
        seqs: Vec<TokenSeq>,
        state: LoopState,
        device: Device,
    ) -> Result<Self> {
        if seqs.is_empty() {
            return Err(Error::Config("no training examples".into()));
        }
        if config.batch_size == 0 || config.grad_accum == 0 {
            return Err(Error::Config("batch_size and grad_accum must be at least 1".into()));
        }
        let stage = stage.to_string();
        let mut run = Self { stage, config, model_config, tokenizer, model, optim, seqs, order: Vec::new(), state, device };
        run.order = run.epoch_order(run.state.epoch);
        Ok(run)
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

    pub fn is_done(&self) -> bool {
        self.state.step >= self.config.steps
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// One optimiser step over `grad_accum` micro-batches.
    pub async fn step(&mut self) -> Result<TrainStep> {
        let started = now_seconds();
        let lr = self.config.optim.lr_at(self.state.step, self.config.steps);
        let mut accumulated = GradientsAccumulator::<Model>::new();
        let (mut loss_sum, mut tokens) = (0.0, 0);
        for _ in 0..self.config.grad_accum {
            let indices = self.next_indices();
            let seqs: Vec<&TokenSeq> = indices.iter().map(|&i| &self.seqs[i]).collect();
            let batch = Batch::new(&seqs, self.tokenizer.special.pad, &self.device);
            tokens += batch.n_tokens;
            let logits = self.model.forward_causal(batch.inputs);
            let loss = sft_loss(logits, batch.targets, batch.mask, batch.n_targets)
                .div_scalar(self.config.grad_accum as f64);
            let grads = GradientsParams::from_grads(loss.backward(), &self.model);
            accumulated.accumulate(&self.model, grads);
            loss_sum += readback::scalar(loss.detach()).await?;
        }
        let mut grads = accumulated.grads();
        let grad_norm = clip_grad_norm(&self.model, &mut grads, self.config.optim.grad_clip).await?;
        self.model = self.optim.step(lr, self.model.clone(), grads);
        self.state.step += 1;
        let elapsed = (now_seconds() - started).max(1e-9);
        Ok(TrainStep {
            stage: self.stage.clone(),
            step: self.state.step,
            loss: loss_sum,
            lr,
            grad_norm,
            tokens,
            tokens_per_s: (tokens as f64 / elapsed) as f32,
        })
    }

    pub async fn checkpoint(&self) -> Result<Checkpoint> {
        let config = serde_json::to_string_pretty(&RunConfig { model: self.model_config.clone(), sft: self.config.clone(), sgpo: None, source: None })
            .expect("config serialises");
        Ok(Checkpoint {
            config,
            tokenizer: self.tokenizer.to_json()?,
            model: model_bytes(&self.model).await?,
            optimizer: self.optimizer_bytes()?,
            state: self.state.clone(),
            progress: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let o = OptimConfig { lr: 1.0, warmup_steps: 10, min_lr_ratio: 0.1, ..Default::default() };
        assert!((o.lr_at(0, 100) - 0.1).abs() < 1e-12);
        assert!((o.lr_at(9, 100) - 1.0).abs() < 1e-12);
        assert!((o.lr_at(10, 100) - 1.0).abs() < 1e-12);
        assert!((o.lr_at(55, 100) - 0.55).abs() < 1e-9);
        assert!((o.lr_at(100, 100) - 0.1).abs() < 1e-12);
        assert!(o.lr_at(30, 100) > o.lr_at(60, 100));
    }

    #[test]
    fn config_rejects_unknown_fields() {
        let e = serde_json::from_str::<SftConfig>(r#"{"stepz": 3}"#).unwrap_err();
        assert!(e.to_string().contains("stepz"));
    }
}
