//! The native command line: the same engine as the browser, driven from a terminal. Each
//! command parses its flags, drives the engine and writes the run directory; nothing here
//! trains or decides anything the page could not.
//! (Built for wasm32 too, as an empty program, because `cargo test --target wasm32` builds
//! every binary; the browser drives the engine through `src/web`.)

#[cfg(not(target_arch = "wasm32"))]
mod bench;
#[cfg(not(target_arch = "wasm32"))]
mod check;
#[cfg(not(target_arch = "wasm32"))]
mod common;
#[cfg(not(target_arch = "wasm32"))]
mod experiment;
#[cfg(not(target_arch = "wasm32"))]
mod export;
#[cfg(not(target_arch = "wasm32"))]
mod inspect;
#[cfg(not(target_arch = "wasm32"))]
mod profile;
#[cfg(not(target_arch = "wasm32"))]
mod sft;
#[cfg(not(target_arch = "wasm32"))]
mod train;

#[cfg(not(target_arch = "wasm32"))]
#[derive(clap::Parser)]
#[command(name = "sgpo", version, about = "SGPO: self-generated preference optimization on burn + wgpu")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[cfg(not(target_arch = "wasm32"))]
#[derive(clap::Subcommand)]
enum Command {
    /// Supervised fine-tuning (stage 0). Without --data: the built-in gold-judged tasks.
    Sft(sft::SftArgs),
    /// Preference optimisation from an SFT run: SGPO (default), SPIN or DPO.
    Train(train::TrainArgs),
    /// Sample answers from a trained model.
    Generate(inspect::GenerateArgs),
    /// Score a model on held-out examples (built-in tasks, or --data's reference answers).
    Eval(inspect::EvalArgs),
    /// Write a model (run, Hugging Face directory or GGUF file) as a Hugging Face directory.
    Export(export::ExportArgs),
    /// Tokenizer tools.
    Tokenizer {
        #[command(subcommand)]
        command: inspect::TokenizerCommand,
    },
    /// Measure generation tokens/s (with and without KV cache) and SFT step time.
    Bench(bench::BenchArgs),
    /// SFT once per setting, then SGPO, SPIN and SFT-only over seeds: one table per setting.
    Experiment(experiment::ExperimentArgs),
}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    use clap::Parser;
    keep_freed_memory();
    match Cli::parse().command {
        Command::Sft(args) => sft::run(args),
        Command::Train(args) => train::run(args),
        Command::Generate(args) => inspect::generate(args),
        Command::Eval(args) => inspect::eval(args),
        Command::Export(args) => export::run(args),
        Command::Tokenizer { command } => inspect::tokenizer(command),
        Command::Bench(args) => bench::run(args),
        Command::Experiment(args) => experiment::run(args),
    }
}

/// Have glibc's allocator reuse freed memory instead of handing it back to the kernel: the CPU
/// backend allocates a fresh tensor per op, and by default every one above glibc's (adaptive)
/// mmap threshold, or freed at the top of the heap, comes back as new pages the kernel must
/// fault in and zero. Measured with `sgpo bench --device cpu --no-generation` (README,
/// performance): `small` 8 x 160, SFT step 0.21 -> 0.18-0.19 s, DPO 0.51-0.54 -> 0.37-0.39 s;
/// `smollm2-135m` 2 x 128, SFT 2.54-2.69 -> 2.03-2.15 s, DPO 3.97-4.37 -> 3.56-3.79 s; peak
/// resident memory 3-6% higher.
#[cfg(not(target_arch = "wasm32"))]
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // No allocation is mapped on its own (glibc's mallopt caps the mmap threshold at 32 MiB,
        // below a real model's larger tensors, so mapping is switched off instead), and the
        // heap keeps what is freed.
        // SAFETY: mallopt only changes the allocator's tuning parameters; called before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn main() {}
