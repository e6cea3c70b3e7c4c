//! What every command shares: the device flag, progress bars, opening a run directory, and
//! how a run records paths and checks the flags given with `--resume`.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use anyhow::Context;

use sgpo::checkpoint::Checkpoint;
use sgpo::config::{LoraConfig, RunConfig};
use sgpo::device::{self, DeviceChoice};
use sgpo::model::TextModel;

#[derive(Args)]
pub struct DeviceArg {
    /// auto: a real GPU through wgpu, else the CPU backend. wgpu: force wgpu (even a software
    /// adapter). cpu: burn's CPU backend.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

impl DeviceArg {
    pub fn select(&self) -> anyhow::Result<Device> {
        let selected = device::select(self.device)?;
        eprintln!("device: {}", selected.description);
        Ok(selected.device)
    }
}

/// How a training command reads its steps' numbers back: `--read-every N` steps, and
/// `--skip-nonfinite N`, how many steps with a NaN or infinite loss or gradient norm a run may
/// drop (their batch consumed, nothing applied) before it stops.
#[derive(Args)]
pub struct SkipArgs {
    /// Skip up to N steps whose loss or gradient norm is not finite (the batch is dropped and
    /// nothing applied) instead of stopping at the first [default: 0]
    #[arg(long, default_value_t = 0)]
    skip_nonfinite: usize,
    /// Read the steps' losses, gradient norms and metrics back from the device every N steps
    /// (always before a checkpoint and at the end of a stage; each step is still logged with its
    /// own numbers): the GPU is not drained after every step. At least 1 [default: 8; 1 with
    /// --skip-nonfinite, which must read each step before it is applied]
    #[arg(long)]
    read_every: Option<usize>,
    #[arg(skip)]
    skipped: usize,
}

impl SkipArgs {
    /// Steps between reads, checked against `--skip-nonfinite`.
    pub fn read_every(&self) -> anyhow::Result<usize> {
        match self.read_every.map(check_read_every).transpose()? {
            Some(n) if n > 1 && self.skip_nonfinite > 0 => anyhow::bail!(
                "--read-every {n} with --skip-nonfinite: skipping a step needs it read before it is applied; give --read-every 1 or leave it out"
            ),
            Some(n) => Ok(n),
            None if self.skip_nonfinite > 0 => Ok(1),
            None => Ok(sgpo::train::READ_EVERY),
        }
    }

    /// `Ok(Some(..))`: the step ran; `Ok(None)`: it was non-finite and skipped (said on
    /// stderr); any other error, or a non-finite step past the budget, is returned.
    pub fn run<T>(&mut self, result: sgpo::Result<T>) -> anyhow::Result<Option<T>> {
        match result {
            Ok(done) => Ok(Some(done)),
            Err(sgpo::Error::NonFinite { stage, step, loss, grad_norm }) if self.skipped < self.skip_nonfinite => {
                self.skipped += 1;
                eprintln!(
                    "warning: {stage} step {step}: the loss ({loss}) or the gradient norm ({grad_norm}) is not finite: batch skipped ({} of --skip-nonfinite {})",
                    self.skipped, self.skip_nonfinite
                );
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// `--read-every N` as every command takes it: at least one step between reads.
pub fn check_read_every(steps: usize) -> anyhow::Result<usize> {
    if steps == 0 {
        anyhow::bail!("--read-every = 0 is out of range (allowed: 1 or more)");
    }
    Ok(steps)
}

/// LoRA instead of full fine-tuning, for the commands that train a model with weights.
#[derive(Args)]
pub struct LoraArgs {
    /// Train low-rank adapters of this rank beside the frozen weights (only they train and hold
    /// optimiser state) instead of every weight.
    #[arg(long)]
    lora_rank: Option<usize>,
    /// The adapters' output is scaled by alpha / rank [default: 2 x rank].
    #[arg(long, requires = "lora_rank")]
    lora_alpha: Option<f64>,
    /// Comma-separated projections to adapt [default: q,k,v,o,gate,up,down].
    #[arg(long, requires = "lora_rank")]
    lora_targets: Option<String>,
}

impl LoraArgs {
    /// The adapters asked for, if any (ranges are checked against the model's shape later).
    pub fn config(&self) -> anyhow::Result<Option<LoraConfig>> {
        let Some(rank) = self.lora_rank else { return Ok(None) };
        let mut lora = LoraConfig::new(rank);
        if let Some(alpha) = self.lora_alpha {
            lora.alpha = alpha;
        }
        if let Some(list) = &self.lora_targets {
            lora.targets = LoraConfig::parse_targets(list)?;
        }
        Ok(Some(lora))
    }

    /// On `--resume`: LoRA flags, when given, must describe the saved run's adapters.
    pub fn check_resume(&self, saved: Option<&LoraConfig>) -> anyhow::Result<()> {
        let requested = self.config()?;
        if requested.is_some() && requested.as_ref() != saved {
            anyhow::bail!(
                "--lora-rank/--lora-alpha/--lora-targets differ from the saved run's adapters ({}); a resumed run keeps its settings",
                saved.map_or("none: it trains every weight".into(), |l| format!("rank {}, alpha {}, targets {}", l.rank, l.alpha, l.targets.iter().map(|t| t.module()).collect::<Vec<_>>().join(",")))
            );
        }
        Ok(())
    }
}

/// How many of the parameters train, when not all do (LoRA).
pub fn trainable_note(model: &sgpo::model::Model) -> String {
    let trainable = model.trainable_params();
    if trainable == model.num_params() { String::new() } else { format!(", {trainable} of them trained") }
}

pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
            .expect("valid template"),
    );
    pb.set_prefix(what.to_string());
    pb
}

pub fn fmt_opt(x: Option<f32>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3}"))
}

/// A run directory's latest model: its config, the model, and the step it was saved at.
pub struct OpenedRun {
    pub config: RunConfig,
    pub model: TextModel,
    pub step: usize,
}

/// A run directory or a Hugging Face model directory.
pub fn open_run(dir: &Path, device: &Device) -> anyhow::Result<OpenedRun> {
    let (config, model, step) = sgpo::native::open_model(dir, device)?;
    Ok(OpenedRun { config, model, step })
}

/// A path as the run records it: absolute, so `--resume` and `eval` work from anywhere.
pub fn absolute(path: &Path) -> anyhow::Result<String> {
    Ok(std::path::absolute(path).with_context(|| format!("{}", path.display()))?.display().to_string())
}

/// The flags whose settings differ between `saved` and `requested` (top-level fields; `names`
/// maps a field to its flag where the two differ, else `--field-name`).
pub fn differing_settings<T: serde::Serialize>(saved: &T, requested: &T, names: &[(&str, &str)]) -> Vec<String> {
    let (a, b) = (serde_json::to_value(saved).expect("configs serialise"), serde_json::to_value(requested).expect("configs serialise"));
    let mut out = Vec::new();
    for (key, value) in a.as_object().into_iter().flatten() {
        if b.get(key) != Some(value) {
            let flag = names.iter().find(|(k, _)| k == key).map_or(format!("--{}", key.replace('_', "-")), |(_, f)| f.to_string());
            out.push(flag);
        }
    }
    out
}

/// The lines `file` held when `checkpoint` was written; everything, for runs saved before
/// checkpoints recorded it.
pub fn logged_lines(checkpoint: &Checkpoint, file: &str) -> usize {
    checkpoint.logged.get(file).copied().unwrap_or(usize::MAX)
}
