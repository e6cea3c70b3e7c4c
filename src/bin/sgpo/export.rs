//! `sgpo export`: any model `--model` accepts (a run, a Hugging Face directory, a GGUF file)
//! as a Hugging Face directory that `transformers` loads.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use pollster::block_on;

use sgpo::model::export::hf_files;
use sgpo::native::write_atomic;

use crate::common::{DeviceArg, open_run};

#[derive(Args)]
pub struct ExportArgs {
    #[arg(long)]
    model: PathBuf,
    /// The directory to write (created; files in it with the same names are replaced).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArg,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let device = args.device.select()?;
    let run = open_run(&args.model, &device)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    for (name, bytes) in block_on(hf_files(&run.model))? {
        write_atomic(&args.out.join(&name), &bytes)?;
    }
    eprintln!("wrote {} (a Hugging Face model directory)", args.out.display());
    Ok(())
}
