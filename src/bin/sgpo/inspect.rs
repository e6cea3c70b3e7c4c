//! Looking at a model: `sgpo generate`, `sgpo eval`, and `sgpo tokenizer train`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use pollster::block_on;

use sgpo::config::{DEFAULT_EVAL_FRACTION, DataSource, MIN_VOCAB, at_least};
use sgpo::data::{Tokenizer, tasks};
use sgpo::eval;
use sgpo::generate::{Decoder, SamplingConfig, Stop, generate as decode};
use sgpo::native::{data_changed, load_jsonl, load_run_data, write_atomic};
use sgpo::rng::Rng;

use crate::common::{DeviceArg, absolute, bar, open_run};

#[derive(Args)]
pub struct GenerateArgs {
    #[arg(long)]
    model: PathBuf,
    /// A prompt; repeat for a batch.
    #[arg(long, required = true)]
    prompt: Vec<String>,
    /// Improver role: rewrite this draft answer (SGPO's second role).
    #[arg(long)]
    draft: Option<String>,
    #[arg(long, default_value_t = 48)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recompute the whole prefix every step (slow; for checking the cache).
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    device: DeviceArg,
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    /// Score on this JSONL file's held-out part instead of the run's own held-out examples.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Score the untrained model (same config and seed, initial weights): the baseline.
    #[arg(long)]
    untrained: bool,
    /// At most this many held-out examples.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArg,
}

#[derive(Subcommand)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE on a JSONL file's prompts and answers (or the built-in tasks).
    Train {
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 512)]
        vocab_size: usize,
    },
}

pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let device = args.device.select()?;
    let run = open_run(&args.model, &device)?;
    let tok = &run.model.tokenizer;
    let prompts = args
        .prompt
        .iter()
        .map(|p| match &args.draft {
            Some(d) => tok.improver_prompt(p, d),
            None => tok.policy_prompt(p),
        })
        .collect::<sgpo::Result<Vec<_>>>()?;
    let sampling = SamplingConfig { max_new_tokens: args.max_new_tokens, temperature: args.temperature, top_k: args.top_k, top_p: args.top_p };
    let mut rng = Rng::new(args.seed);
    let outputs = block_on(decode(&run.model.model, &prompts, &sampling, Stop::of(tok), &mut rng, !args.no_cache, &device))?;
    for (prompt, out) in args.prompt.iter().zip(outputs) {
        println!("{prompt}\n=> {}", tok.decode(&out)?);
    }
    Ok(())
}

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let device = args.device.select()?;
    let mut run = open_run(&args.model, &device)?;
    if args.untrained {
        run.model.model = run.config.model.init(run.config.sft.seed, &device);
        run.step = 0;
    }
    // The run's own data file is split as the run split it; another file at the default.
    let source = match (&args.data, &run.config.sft.data) {
        (Some(path), DataSource::File { path: own, .. }) if absolute(path)? == absolute(Path::new(own))? => run.config.sft.data.clone(),
        (Some(path), _) => DataSource::file(absolute(path)?, DEFAULT_EVAL_FRACTION),
        (None, own) => own.clone(),
    };
    if let Some(notice) = data_changed(&source)? {
        eprintln!("warning: {notice}");
    }
    let mut examples = load_run_data(&source, run.config.sft.seed)?.eval;
    if let Some(n) = args.limit {
        examples.truncate(n);
    }
    let pb = bar(1, "eval");
    let decoder = Decoder::new(&run.model.model, &run.model.tokenizer, &device);
    let (summary, _) = block_on(eval::evaluate(&decoder, &examples, args.max_new_tokens, run.step))?;
    pb.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", eval::table(&summary));
    }
    Ok(())
}

pub fn tokenizer(command: TokenizerCommand) -> anyhow::Result<()> {
    let TokenizerCommand::Train { data, out, vocab_size } = command;
    at_least("--vocab-size", vocab_size, MIN_VOCAB)?;
    let examples = match &data {
        Some(path) => load_jsonl(path)?.examples,
        None => tasks::generate(20000, 42),
    };
    let tok = Tokenizer::train_on(&examples, vocab_size)?;
    write_atomic(&out, tok.to_json()?.as_bytes())?;
    println!("wrote {} ({} tokens)", out.display(), tok.vocab_size());
    Ok(())
}
