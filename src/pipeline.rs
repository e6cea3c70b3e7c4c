//! A whole run as the browser drives it: SFT, then a preference method (SGPO, SPIN or DPO),
//! one unit of work at a time, with a snapshot that restores it after a reload. Backend-generic
//! and free of JS so native tests cover it; `src/web/` only converts values at the edge.

use std::collections::HashMap;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::config::{DataSource, LoraConfig, Method, Phrasing, PipelineConfig, PreferenceSource, RunConfig, SftConfig};
use crate::data::{RunData, TokenSeq, Tokenizer, parse_jsonl};
use crate::device::{BufferLimits, check_buffer_limits};
use crate::error::Result;
use crate::metrics::Event;
use crate::config::ModelConfig;
use crate::model::{Model, TextModel, gguf, hf, load_model, model_bytes};
use crate::sgpo::improver::with_reference;
use crate::sgpo::{Pair, SgpoRun, Stage, check_inputs};
use crate::train::SftRun;

/// A user's file handed over as text (the browser has no paths); `name` labels errors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedText {
    pub name: String,
    pub text: String,
}

/// A model with weights picked in the page: one GGUF file, or a Hugging Face directory's files,
/// by file name. `name` labels errors and is what a run records as its base.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub name: String,
    pub files: HashMap<String, Vec<u8>>,
}

impl ModelFiles {
    pub fn open(&self, device: &Device) -> Result<TextModel> {
        let (_, model) = match self.files.iter().find(|(name, _)| name.ends_with(".gguf")) {
            Some((name, bytes)) => gguf::open(name, bytes, device)?,
            None => hf::open(&self.name, &mut |file| Ok(self.files.get(file).cloned()), device)?,
        };
        Ok(model)
    }
}

/// What a run starts from besides its config.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// A model with weights: the preference stage starts from it (no SFT), with LoRA when
    /// `lora_rank` > 0, and checkpoints hold only the adapters (the files are reopened).
    pub model: Option<ModelFiles>,
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
    data: RunData,
    data_source: DataSource,
    phase: Phase,
    /// The frozen SFT model's weights, kept once for every later snapshot.
    sft_model: Option<Vec<u8>>,
    /// The model file a run started from (`browser: NAME`), whose weights its snapshots leave out.
    base: Option<String>,
}

impl Pipeline {
    /// A fresh run: SFT from scratch, or straight to the preference stage from `inputs.init`.
    /// With a GPU's `limits`, a preset whose largest buffer would not fit is refused before
    /// the model is allocated.
    pub fn new(config: PipelineConfig, inputs: &Inputs, device: &Device, limits: Option<BufferLimits>) -> Result<Self> {
        config.validate()?;
        if let Some(files) = &inputs.model {
            return Self::from_model(config, files, inputs, device, limits, None);
        }
        // A checkpoint's model is asked the built-in tasks as it was trained on them.
        let opened = inputs.init.as_ref().map(|(name, checkpoint)| checkpoint.open(name, device)).transpose()?;
        let phrasing = opened.as_ref().map_or(Phrasing::Terse, |(run, _)| run.sft.data.phrasing());
        let (data, data_source) = load_data(&config, inputs, phrasing)?;
        // A method that cannot start is refused now, not after SFT.
        check_inputs(&config.sgpo(data.eval.len()), &data)?;
        if let (Some((_, checkpoint)), Some((run, sft))) = (&inputs.init, opened) {
            let sft_config = SftConfig { data: data_source.clone(), ..run.sft };
            let tokenizer = sft.tokenizer.clone();
            let sgpo = SgpoRun::new(config.sgpo(data.eval.len()), sft, sft_config, data.clone(), device)?;
            let phase = Phase::Preference(Box::new(sgpo));
            return Ok(Self { config, device: device.clone(), tokenizer, data, data_source, phase, sft_model: Some(checkpoint.model.clone()), base: None });
        }
        let tokenizer = match &inputs.tokenizer {
            Some(t) => Tokenizer::from_json(&t.name, &t.text)?,
            None => Tokenizer::train_on(&data.labeled, config.vocab_size)?,
        };
        if let Some(limits) = limits {
            let model = ModelConfig::preset(&config.preset, tokenizer.vocab_size())?;
            check_buffer_limits(&config.preset, &model, config.batch_size, model.max_seq_len, limits)?;
        }
        let run = SftRun::new(config.sft(data_source.clone()), tokenizer.clone(), &data.labeled, device)?;
        Ok(Self { config, device: device.clone(), tokenizer, data, data_source, phase: Phase::Sft(Box::new(run)), sft_model: None, base: None })
    }

    /// The preference stage straight from a model with weights (an instruct model: no SFT of
    /// ours; its data loaded here, worded for chat when the model has a chat template), with
    /// LoRA adapters of `config.lora_rank` (0: every weight trains), restored from
    /// `checkpoint` when resuming. The longest row the run will build must fit the GPU's buffers
    /// (`limits`), checked before anything trains.
    fn from_model(
        config: PipelineConfig,
        files: &ModelFiles,
        inputs: &Inputs,
        device: &Device,
        limits: Option<BufferLimits>,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Self> {
        let model = files.open(device)?;
        // Worded as the CLI asks the same model (`RunConfig::pretrained`).
        let (data, data_source) = load_data(&config, inputs, Phrasing::for_model(model.tokenizer.chat().is_some()))?;
        check_inputs(&config.sgpo(data.eval.len()), &data)?;
        let lora = (config.lora_rank > 0).then(|| LoraConfig::new(config.lora_rank));
        let model = TextModel { config: ModelConfig { lora, ..model.config }, ..model };
        if let Some(limits) = limits {
            // Reference-guided targets show the answer in the improver's prompt as well.
            let guided = config.improver_targets.shows_reference();
            let chat = model.tokenizer.chat().is_some();
            let longest = data
                .labeled
                .iter()
                .map(|e| {
                    let prompt = if guided { with_reference(&e.prompt, &e.response, chat) } else { e.prompt.clone() };
                    TokenSeq::improver(&model.tokenizer, &prompt, &e.response, &e.response).map(|s| s.tokens.len())
                })
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .max()
                .unwrap_or(0);
            let rows = (longest + config.max_new_tokens).min(model.config.max_seq_len);
            check_buffer_limits(&files.name, &model.config, config.batch_size, rows, limits)?;
        }
        let sft_config = SftConfig { preset: files.name.clone(), ..config.sft(data_source.clone()) };
        let tokenizer = model.tokenizer.clone();
        let adapters_only = model.config.lora.is_some();
        let mut run = SgpoRun::new(config.sgpo(data.eval.len()), model, sft_config, data.clone(), device)?;
        run.adapters_only = adapters_only;
        if let Some(checkpoint) = checkpoint {
            run.restore(checkpoint)?;
        }
        let phase = Phase::Preference(Box::new(run));
        let base = Some(format!("browser: {}", files.name));
        Ok(Self { config, device: device.clone(), tokenizer, data, data_source, phase, sft_model: None, base })
    }

    /// Continue from a [`Snapshot`] of a run made with the same config and inputs.
    pub fn resume(config: PipelineConfig, inputs: &Inputs, snapshot: &Snapshot, device: &Device) -> Result<Self> {
        config.validate()?;
        let checkpoint = &snapshot.checkpoint;
        if let Some(files) = &inputs.model {
            return Self::from_model(config, files, inputs, device, None, Some(checkpoint));
        }
        let phrasing = RunConfig::from_json("config.json", &checkpoint.config)?.sft.data.phrasing();
        let (data, data_source) = load_data(&config, inputs, phrasing)?;
        let (phase, tokenizer) = match &snapshot.sft_model {
            None => {
                let run = SftRun::resume(checkpoint, &data.labeled, device)?;
                let tokenizer = run.tokenizer.clone();
                (Phase::Sft(Box::new(run)), tokenizer)
            }
            Some(sft_bytes) => {
                let (run, current) = checkpoint.open("", device)?;
                let model = load_model(&run.model, sft_bytes, device, "sft_model.bpk")?;
                let sft = TextModel { model, ..current };
                let tokenizer = sft.tokenizer.clone();
                let mut sgpo = SgpoRun::new(config.sgpo(data.eval.len()), sft, run.sft, data.clone(), device)?;
                sgpo.restore(checkpoint)?;
                (Phase::Preference(Box::new(sgpo)), tokenizer)
            }
        };
        Ok(Self { config, device: device.clone(), tokenizer, data, data_source, phase, sft_model: snapshot.sft_model.clone(), base: None })
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
                for m in run.step().await? {
                    on_event(Event::Train(m));
                }
                if run.is_done() {
                    let sft = run.text_model();
                    self.sft_model = Some(model_bytes(&sft.model).await?);
                    let sgpo = SgpoRun::new(self.config.sgpo(self.data.eval.len()), sft, run.config.clone(), self.data.clone(), &self.device)?;
                    self.phase = Phase::Preference(Box::new(sgpo));
                }
            }
            Phase::Preference(run) => run.advance(on_event).await?,
        }
        Ok(())
    }

    /// Read back the training steps not read yet and report them: due before a snapshot.
    pub async fn flush(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<()> {
        match &mut self.phase {
            Phase::Sft(run) => run.flush(&mut |m| on_event(Event::Train(m))).await,
            Phase::Preference(run) => run.flush(on_event).await,
        }
    }

    /// True right after a unit that ended a stage or an iteration (or SFT): worth saving.
    pub fn at_boundary(&self) -> bool {
        match &self.phase {
            Phase::Sft(_) => false,
            Phase::Preference(run) => run.at_boundary() || run.stage == Stage::Start,
        }
    }

    /// The run as it stands, every step read back ([`Pipeline::flush`]) first.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let checkpoint = match &self.phase {
            Phase::Sft(run) => run.checkpoint().await?,
            Phase::Preference(run) => run.checkpoint(self.run_config(run).to_json()).await?,
        };
        Ok(Snapshot { checkpoint, sft_model: self.sft_model.clone() })
    }

    /// The current policy.
    pub fn policy(&self) -> Model {
        match &self.phase {
            Phase::Sft(run) => run.text_model().model,
            Phase::Preference(run) => run.policy(),
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A held-out prompt (a training one if nothing is held out), worded as this run asks its
    /// tasks (chat sentences for a model with a chat template): what the page offers to try
    /// the model on.
    pub fn example_prompt(&self) -> Option<&str> {
        self.data.eval.first().or(self.data.labeled.first()).map(|e| e.prompt.as_str())
    }

    /// The last finished iteration's pairs (empty before the first).
    pub fn last_pairs(&self) -> &[Pair] {
        match &self.phase {
            Phase::Sft(_) => &[],
            Phase::Preference(run) => &run.last_pairs,
        }
    }

    fn run_config(&self, run: &SgpoRun) -> RunConfig {
        RunConfig {
            model: run.model_config().clone(),
            sft: SftConfig { data: self.data_source.clone(), ..run.sft_config.clone() },
            sgpo: Some(run.config.clone()),
            source: Some(PreferenceSource { init: self.base.clone().unwrap_or_else(|| "browser".into()), data: None, prompts: None }),
            chat: run.tokenizer().chat().cloned(),
        }
    }
}

/// The built-in tasks, or the user's JSONL: rows with answers are split into train and
/// held-out; bare prompts add to SGPO's unlabeled pool; preference rows feed DPO.
/// The built-in prompts are worded as `phrasing` says (`chat` for a chat model).
fn load_data(config: &PipelineConfig, inputs: &Inputs, phrasing: Phrasing) -> Result<(RunData, DataSource)> {
    let source = config.data_source(inputs.data.as_ref().map(|f| f.name.as_str())).phrased(phrasing);
    let file = inputs.data.as_ref().map(|f| parse_jsonl(&f.name, &f.text)).transpose()?;
    let mut data = RunData::assemble(&source, file, config.seed)?;
    // SFT needs answers; so do SGPO's improver and SPIN. Only DPO from a checkpoint does not.
    if config.method != Method::Dpo || inputs.init.is_none() {
        data.require_labeled(&source)?;
    }
    data.eval.truncate(config.eval_examples);
    Ok((data, source))
}
