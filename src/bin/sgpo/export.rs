//! `sgpo export`: any model `--model` accepts (a run, a Hugging Face directory, a GGUF file)
//! as a Hugging Face directory that `transformers` loads (LoRA adapters merged), or a LoRA
//! run's adapters as PEFT saves them.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use pollster::block_on;

use sgpo::model::export::{ADAPTER_BASE, hf_files, peft_files};
use sgpo::native::write_atomic;

use crate::common::{DeviceArg, open_run};

#[derive(Args)]
pub struct ExportArgs {
    #[arg(long)]
    model: PathBuf,
    /// The directory to write (created; files in it with the same names are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Write the LoRA adapters as a PEFT adapter (adapter_config.json,
    /// adapter_model.safetensors) and the frozen base model in `OUT/base`, instead of one
    /// merged model.
    #[arg(long)]
    adapter: bool,
    #[command(flatten)]
    device: DeviceArg,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let device = args.device.select()?;
    let run = open_run(&args.model, &device)?;
    let files = if args.adapter {
        let base = std::path::absolute(args.out.join(ADAPTER_BASE)).with_context(|| args.out.display().to_string())?;
        match block_on(peft_files(&run.model, &base.display().to_string()))? {
            Some(files) => files,
            None => bail!("{}: this model has no LoRA adapters to export (it was trained without --lora-rank); leave out --adapter", args.model.display()),
        }
    } else {
        block_on(hf_files(&run.model))?
    };
    for (name, bytes) in files {
        let path = args.out.join(&name);
        let dir = path.parent().expect("a file in --out");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&path, &bytes)?;
    }
    let what = if args.adapter { "a PEFT adapter, its base model in base/" } else { "a Hugging Face model directory" };
    eprintln!("wrote {} ({what})", args.out.display());
    Ok(())
}
