//! A whole run as the browser drives it: SFT, then a preference method (SGPO, SPIN or DPO),
//! one unit of work at a time, with a snapshot that restores it after a reload. Backend-generic
//! and free of JS so native tests cover it; `src/web/` only converts values at the edge.

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, MODEL_FILE};
use crate::data::{parse_jsonl, split_examples};
use crate::device::{BufferLimits, check_buffer_limits};
use crate::error::{Error, Result};
use crate::metrics::Event;
use crate::model::{Model, ModelConfig};
use crate::objective::DpoLoss;
use crate::sgpo::{Method, Pair, PreferenceData, PreferenceSource, SgpoConfig, SgpoRun, Stage, check_inputs};
use crate::tokenizer::Tokenizer;
use crate::train::{DataSource, OptimConfig, RunConfig, SftConfig, SftRun, load_model, model_bytes};

/// The page's knobs; anything left out keeps its default. Saved with the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Which built-in task family to train on (`all`, or one of `tasks::FAMILIES`); ignored
    /// when a dataset is given.
    pub task: String,
    pub preset: String,
    pub method: Method,
    pub sft_steps: usize,
    pub sft_lr: f64,
    pub iterations: usize,
    pub prompts_per_iteration: usize,
    pub improver_steps: usize,
    pub batch_size: usize,
    pub beta: f64,
    /// DPO learning rate.
    pub lr: f64,
    pub temperature: f32,
    pub max_new_tokens: usize,
    /// Held-out examples for the win rate.
    pub eval_examples: usize,
    /// Vocabulary of the tokenizer trained in the tab when none is given.
    pub vocab_size: usize,
    pub seed: u64,
    /// Run on burn's CPU backend (in a browser: compiled to wasm, for browsers without WebGPU).
    pub cpu: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            task: "all".into(),
            preset: "tiny".into(),
            method: Method::Sgpo,
            sft_steps: 60,
            sft_lr: 5e-3,
            iterations: 2,
            prompts_per_iteration: 32,
            improver_steps: 30,
            batch_size: 8,
            beta: 0.1,
            lr: 5e-5,
            temperature: 1.0,
            max_new_tokens: 16,
            eval_examples: 45,
            vocab_size: 256,
            seed: 42,
            cpu: false,
        }
    }
}

/// A user's file handed over as text (the browser has no paths); `name` labels errors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedText {
    pub name: String,
    pub text: String,
}

/// What a run starts from besides its config.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// JSONL dataset; the built-in tasks without one.
    pub data: Option<NamedText>,
    /// `tokenizer.json`; trained on the data without one.
    pub tokenizer: Option<NamedText>,
    /// A checkpoint to start the preference stage from (SFT is skipped), and its name.
    pub init: Option<(String, Checkpoint)>,
}

/// Everything needed to continue a run. `sft_model` is the frozen SFT model, present once the
/// preference phase has begun (it is DPO's reference and the win-rate baseline).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub checkpoint: Checkpoint,
    pub sft_model: Option<Vec<u8>>,
}

/// Where a run stands, for a page's status line and resume banner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// `sft` or `preference`.
    pub phase: String,
    pub stage: Stage,
    pub step: usize,
    pub iteration: usize,
    pub done: bool,
}

enum Phase {
    Sft(Box<SftRun>),
    Preference(Box<SgpoRun>),
}

pub struct Pipeline {
    pub config: PipelineConfig,
    device: Device,
    tokenizer: Tokenizer,
    data: PreferenceData,
    data_source: DataSource,
    phase: Phase,
    /// The frozen SFT model's weights, kept once for every later snapshot.
    sft_model: Option<Vec<u8>>,
}

impl Pipeline {
    /// A fresh run: SFT from scratch, or straight to the preference stage from `inputs.init`.
    /// With a GPU's `limits`, a preset whose largest buffer would not fit is refused before
    /// the model is allocated.
    pub fn new(config: PipelineConfig, inputs: &Inputs, device: &Device, limits: Option<BufferLimits>) -> Result<Self> {
        let (data, data_source) = load_data(&config, inputs)?;
        // A method that cannot start is refused now, not after SFT.
        check_inputs(&sgpo_config(&config, &data), &data)?;
        if let Some((name, checkpoint)) = &inputs.init {
            let run = RunConfig::from_json(&format!("{name}: config.json"), &checkpoint.config)?;
            let tokenizer = Tokenizer::from_json(&format!("{name}: tokenizer.json"), &checkpoint.tokenizer)?;
            let model = load_model(&run.model, &checkpoint.model, device, &format!("{name}: {MODEL_FILE}"))?;
            let sft = SftConfig { data: data_source.clone(), ..run.sft };
            let sgpo = sgpo_run(&config, run.model, sft, tokenizer.clone(), model, data.clone(), device)?;
            return Ok(Self { config, device: device.clone(), tokenizer, data, data_source, phase: Phase::Preference(Box::new(sgpo)), sft_model: Some(checkpoint.model.clone()) });
        }
        let tokenizer = match &inputs.tokenizer {
            Some(t) => Tokenizer::from_json(&t.name, &t.text)?,
            None => Tokenizer::train_on(&data.labeled, config.vocab_size)?,
        };
        if let Some(limits) = limits {
            let model = ModelConfig::preset(&config.preset, tokenizer.vocab_size())?;
            check_buffer_limits(&config.preset, &model, config.batch_size, limits)?;
        }
        let run = SftRun::new(sft_config(&config, data_source.clone()), tokenizer.clone(), &data.labeled, device)?;
        Ok(Self { config, device: device.clone(), tokenizer, data, data_source, phase: Phase::Sft(Box::new(run)), sft_model: None })
    }

    /// Continue from a [`Snapshot`] of a run made with the same config and inputs.
    pub fn resume(config: PipelineConfig, inputs: &Inputs, snapshot: &Snapshot, device: &Device) -> Result<Self> {
        let (data, data_source) = load_data(&config, inputs)?;
        let checkpoint = &snapshot.checkpoint;
        let (phase, tokenizer) = match &snapshot.sft_model {
            None => {
                let run = SftRun::resume(checkpoint, &data.labeled, device)?;
                let tokenizer = run.tokenizer.clone();
                (Phase::Sft(Box::new(run)), tokenizer)
            }
            Some(sft_bytes) => {
                let run = RunConfig::from_json(crate::checkpoint::CONFIG_FILE, &checkpoint.config)?;
                let tokenizer = Tokenizer::from_json(crate::checkpoint::TOKENIZER_FILE, &checkpoint.tokenizer)?;
                let sft_model = load_model(&run.model, sft_bytes, device, "sft_model.bpk")?;
                let mut sgpo = sgpo_run(&config, run.model, run.sft, tokenizer.clone(), sft_model, data.clone(), device)?;
                sgpo.restore(checkpoint)?;
                (Phase::Preference(Box::new(sgpo)), tokenizer)
            }
        };
        Ok(Self { config, device: device.clone(), tokenizer, data, data_source, phase, sft_model: snapshot.sft_model.clone() })
    }

    pub fn is_done(&self) -> bool {
        matches!(&self.phase, Phase::Preference(run) if run.is_done())
    }

    pub fn position(&self) -> Position {
        match &self.phase {
            Phase::Sft(run) => Position { phase: "sft".into(), stage: Stage::Start, step: run.state.step, iteration: 0, done: false },
            Phase::Preference(run) => Position {
                phase: "preference".into(),
                stage: run.stage,
                step: run.step(),
                iteration: run.iteration,
                done: run.is_done(),
            },
        }
    }

    /// One unit of work: an optimiser step, or building one iteration's pairs.
    pub async fn step(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<()> {
        match &mut self.phase {
            Phase::Sft(run) => {
                on_event(Event::Train(run.step().await?));
                if run.is_done() {
                    let model = run.model.valid();
                    self.sft_model = Some(model_bytes(&model).await?);
                    let sgpo = sgpo_run(&self.config, run.model_config.clone(), run.config.clone(), self.tokenizer.clone(), model, self.data.clone(), &self.device)?;
                    self.phase = Phase::Preference(Box::new(sgpo));
                }
            }
            Phase::Preference(run) => run.advance(on_event).await?,
        }
        Ok(())
    }

    /// True right after a unit that ended a stage or an iteration (or SFT): worth saving.
    pub fn at_boundary(&self) -> bool {
        match &self.phase {
            Phase::Sft(_) => false,
            Phase::Preference(run) => run.at_boundary() || run.stage == Stage::Start,
        }
    }

    pub async fn snapshot(&self) -> Result<Snapshot> {
        let checkpoint = match &self.phase {
            Phase::Sft(run) => run.checkpoint().await?,
            Phase::Preference(run) => run.checkpoint(self.run_config_json(run)).await?,
        };
        Ok(Snapshot { checkpoint, sft_model: self.sft_model.clone() })
    }

    /// The current policy.
    pub fn policy(&self) -> Model {
        match &self.phase {
            Phase::Sft(run) => run.model.valid(),
            Phase::Preference(run) => run.policy(),
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The last finished iteration's pairs (empty before the first).
    pub fn last_pairs(&self) -> &[Pair] {
        match &self.phase {
            Phase::Sft(_) => &[],
            Phase::Preference(run) => &run.last_pairs,
        }
    }

    fn run_config_json(&self, run: &SgpoRun) -> String {
        let config = RunConfig {
            model: run.model_config.clone(),
            sft: SftConfig { data: self.data_source.clone(), ..run.sft_config.clone() },
            sgpo: Some(run.config.clone()),
            source: Some(PreferenceSource { init: "browser".into(), data: None, prompts: None }),
        };
        serde_json::to_string_pretty(&config).expect("config serialises")
    }
}

fn sft_config(config: &PipelineConfig, data: DataSource) -> SftConfig {
    SftConfig {
        preset: config.preset.clone(),
        steps: config.sft_steps,
        batch_size: config.batch_size,
        seed: config.seed,
        data,
        optim: OptimConfig { lr: config.sft_lr, warmup_steps: 5.min(config.sft_steps / 2), ..OptimConfig::default() },
        ..SftConfig::default()
    }
}

fn sgpo_run(
    config: &PipelineConfig,
    model_config: ModelConfig,
    sft: SftConfig,
    tokenizer: Tokenizer,
    sft_model: Model,
    data: PreferenceData,
    device: &Device,
) -> Result<SgpoRun> {
    SgpoRun::new(sgpo_config(config, &data), model_config, sft, tokenizer, sft_model.valid(), data, device)
}

fn sgpo_config(config: &PipelineConfig, data: &PreferenceData) -> SgpoConfig {
    SgpoConfig {
        method: config.method,
        iterations: config.iterations,
        prompts_per_iteration: config.prompts_per_iteration,
        batch_size: config.batch_size,
        beta: config.beta,
        loss: DpoLoss::Sigmoid,
        draft_temperature: config.temperature,
        improver_steps: config.improver_steps,
        improver_examples: 128,
        max_new_tokens: config.max_new_tokens,
        eval_examples: data.eval.len(),
        seed: config.seed,
        dpo_optim: OptimConfig { lr: config.lr, warmup_steps: 0, min_lr_ratio: 1.0, weight_decay: 0.0, ..OptimConfig::default() },
        ..SgpoConfig::default()
    }
}

/// The built-in tasks, or the user's JSONL: rows with answers are split into train and
/// held-out; bare prompts add to SGPO's unlabeled pool; preference rows feed DPO.
fn load_data(config: &PipelineConfig, inputs: &Inputs) -> Result<(PreferenceData, DataSource)> {
    let mut data = PreferenceData::default();
    let source = match &inputs.data {
        None if config.task == "all" => {
            let (n_train, n_eval) = (4000, config.eval_examples);
            (data.labeled, data.eval) = crate::tasks::builtin_split(n_train, n_eval, config.seed);
            DataSource::Builtin { n_train, n_eval }
        }
        None => {
            let families = crate::tasks::FAMILIES;
            if !families.contains(&config.task.as_str()) {
                return Err(Error::Config(format!("task: unknown built-in task {:?}; use all or one of {}", config.task, families.join(", "))));
            }
            // The families take turns, so one family is every k-th example of a k-times larger set.
            let (n_train, n_eval) = (4000 * families.len(), config.eval_examples * families.len());
            let (train, eval) = crate::tasks::builtin_split(n_train, n_eval, config.seed);
            let only = |v: Vec<crate::data::Example>| v.into_iter().filter(|e| e.task.as_deref() == Some(config.task.as_str())).collect();
            (data.labeled, data.eval) = (only(train), only(eval));
            DataSource::Builtin { n_train, n_eval }
        }
        Some(file) => {
            let parsed = parse_jsonl(&file.name, &file.text)?;
            // SFT needs answers; so do SGPO's improver and SPIN. Only DPO from a checkpoint does not.
            if parsed.examples.is_empty() && (config.method != Method::Dpo || inputs.init.is_none()) {
                return Err(Error::file(
                    &file.name,
                    "has no rows with answers (instruction/output, messages, or prompt/completion): SFT and the improver need some (for DPO on pairs alone, also give a checkpoint to start from)",
                ));
            }
            (data.labeled, data.eval) = split_examples(parsed.examples, 0.1, config.seed);
            data.unlabeled = parsed.prompts;
            data.pairs = parsed.preferences;
            DataSource::File { path: file.name.clone(), eval_fraction: 0.1 }
        }
    };
    data.eval.truncate(config.eval_examples);
    Ok((data, source))
}

