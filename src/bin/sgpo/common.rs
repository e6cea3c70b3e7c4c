//! What every command shares: the device flag, progress bars, and opening a run directory.

use std::path::Path;

use burn::tensor::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use sgpo::config::RunConfig;
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
