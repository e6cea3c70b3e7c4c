//! `sgpo sft`: supervised fine-tuning into a run directory, resumable.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use burn::module::Module;
use clap::Args;
use pollster::block_on;

use sgpo::checkpoint::Checkpoint;
use sgpo::config::{DEFAULT_EVAL_FRACTION, DataSource, RunConfig, SftConfig};
use sgpo::data::{Tokenizer, policy_seqs};
use sgpo::eval;
use sgpo::generate::Decoder;
use sgpo::metrics::Event;
use sgpo::native::{EventLog, RunLock, data_changed, file_crc, load_run_data, open_model, read_json};
use sgpo::train::{SftRun, autodiff};

use crate::common::{DeviceArg, LoraArgs, SkipArgs, absolute, bar, differing_settings, logged_lines, trainable_note};

#[derive(Args)]
pub struct SftArgs {
    /// Run directory: checkpoints, config.json, metrics.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// JSONL examples (Alpaca, chat messages, prompt/completion); a held-out part is kept for eval.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Fine-tune this model instead of a freshly initialised preset: a run directory or a
    /// Hugging Face model directory (Llama, Qwen2; its own tokenizer and chat template).
    #[arg(long, conflicts_with_all = ["tokenizer", "preset"])]
    init: Option<PathBuf>,
    /// A tokenizer.json to use instead of training a BPE on the data.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A JSON file with SFT settings (any subset of the fields in a run's config.json "sft").
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    #[arg(long)]
    preset: Option<String>,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Fraction of --data held out for evaluation [default: 0.1].
    #[arg(long)]
    eval_fraction: Option<f32>,
    #[command(flatten)]
    lora: LoraArgs,
    #[command(flatten)]
    skip: SkipArgs,
    #[command(flatten)]
    device: DeviceArg,
}

impl SftArgs {
    /// The settings of a new run: defaults, then --config, then the flags.
    fn config(&self) -> anyhow::Result<SftConfig> {
        let base: SftConfig = match &self.config {
            Some(path) => read_json(path)?,
            None => SftConfig::default(),
        };
        self.apply(base)
    }

    /// `config` with the flags given applied.
    fn apply(&self, mut config: SftConfig) -> anyhow::Result<SftConfig> {
        if let Some(p) = &self.preset { config.preset = p.clone(); }
        if let Some(s) = self.steps { config.steps = s; }
        if let Some(b) = self.batch_size { config.batch_size = b; }
        if let Some(g) = self.grad_accum { config.grad_accum = g; }
        if let Some(lr) = self.lr { config.optim.lr = lr; }
        if let Some(s) = self.seed { config.seed = s; }
        if let Some(c) = self.checkpoint_every { config.checkpoint_every = c; }
        if let Some(path) = &self.data {
            let eval_fraction = self.eval_fraction.unwrap_or(DEFAULT_EVAL_FRACTION);
            config.data = DataSource::File { path: absolute(path)?, eval_fraction, crc32: Some(file_crc(path)?) };
        } else if let (Some(f), DataSource::File { eval_fraction, .. }) = (self.eval_fraction, &mut config.data) {
            *eval_fraction = f;
        }
        Ok(config)
    }

    /// On `--resume`, the flags must agree with the saved settings; `--steps` may extend or
    /// shorten the run. Returns the new step count, if any.
    fn check_resume(&self, saved: &SftConfig) -> anyhow::Result<Option<usize>> {
        for (given, flag) in [(self.tokenizer.is_some(), "--tokenizer"), (self.init.is_some(), "--init")] {
            if given {
                bail!("{flag} cannot be given with --resume: a resumed run keeps what it started from (choose another --out for a new run)");
            }
        }
        let base = match &self.config {
            Some(path) => read_json(path)?,
            None => saved.clone(),
        };
        let mut requested = self.apply(base)?;
        let new_steps = Some(requested.steps).filter(|&s| s != saved.steps);
        requested.steps = saved.steps;
        let differ = differing_settings(saved, &requested, &[("optim", "--lr (or --config)"), ("data", "--data/--eval-fraction")]);
        if !differ.is_empty() {
            bail!("these flags differ from the saved run's settings: {}; a resumed run keeps its settings (choose another --out for a new run)", differ.join(", "));
        }
        Ok(new_steps)
    }
}

pub fn run(mut args: SftArgs) -> anyhow::Result<()> {
    let read_every = args.skip.read_every()?;
    let device = args.device.select()?;
    let out = &args.out;
    let _lock = RunLock::acquire(out)?;
    let metrics_path = out.join("metrics.jsonl");
    let (mut run, mut log, data) = if Checkpoint::exists(out) {
        if !args.resume {
            bail!("{} already holds a run; pass --resume to continue it, or choose another --out", out.display());
        }
        let checkpoint = Checkpoint::load(out)?;
        let config = RunConfig::from_json("config.json", &checkpoint.config)?;
        let new_steps = args.check_resume(&config.sft)?;
        args.lora.check_resume(config.model.lora.as_ref())?;
        if let Some(notice) = data_changed(&config.sft.data)? {
            eprintln!("warning: {notice}");
        }
        let data = load_run_data(&config.sft.data, config.sft.seed)?;
        eprintln!("resuming {} at step {}", out.display(), checkpoint.state.step);
        let log = EventLog::resume(&metrics_path, logged_lines(&checkpoint, "metrics.jsonl"))?;
        let mut run = SftRun::resume(&checkpoint, &data.labeled, &device)?;
        if let Some(steps) = new_steps {
            eprintln!("--steps {steps}: the run now ends at step {steps} (it was to end at {})", run.config.steps);
            run.config.steps = steps;
            run.config.validate()?;
        }
        (run, log, data)
    } else {
        if args.resume {
            bail!("{}: nothing to resume (no checkpoint there); leave out --resume to start a run", out.display());
        }
        let config = args.config()?;
        config.validate()?;
        let lora = args.lora.config()?;
        if lora.is_some() && args.init.is_none() {
            bail!("--lora-rank needs --init: adapters train beside the weights of a model that has them (a run, a Hugging Face directory or a GGUF file)");
        }
        let opened = args.init.as_ref().map(|init| open_model(init, &autodiff(&device))).transpose()?;
        // The built-in tasks are worded as the starting model is asked them (`chat` for a chat
        // model), as `train` and `eval` ask it.
        let config = match &opened {
            Some((saved, _, _)) => SftConfig { data: config.data.phrased(saved.sft.data.phrasing()), ..config },
            None => config,
        };
        let data = load_run_data(&config.data, config.seed)?;
        data.require_labeled(&config.data)?;
        eprintln!("data: {} train / {} held-out examples", data.labeled.len(), data.eval.len());
        if !data.unlabeled.is_empty() || !data.pairs.is_empty() {
            eprintln!(
                "  not used by SFT: {} prompts without an answer and {} preference rows (`sgpo train` uses them)",
                data.unlabeled.len(),
                data.pairs.len()
            );
        }
        let run = match opened {
            Some((saved, start, _)) => {
                let config = SftConfig { preset: saved.sft.preset, ..config };
                let start = start.for_training(lora, config.seed)?;
                let seqs = policy_seqs(&start.tokenizer, &data.labeled, start.config.max_seq_len)?;
                SftRun::from_model("sft", config, start, seqs, &device)?
            }
            None => {
                let tokenizer = match &args.tokenizer {
                    Some(path) => {
                        let json = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                        Tokenizer::from_json(&path.display().to_string(), &json)?
                    }
                    None => Tokenizer::train_on(&data.labeled, config.vocab_size)?,
                };
                SftRun::new(config, tokenizer, &data.labeled, &device)?
            }
        };
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        (run, EventLog::create(&metrics_path)?, data)
    };
    eprintln!(
        "model: {} ({} parameters{}), {} steps of {} x {}",
        run.config.preset,
        run.model.num_params(),
        trainable_note(&run.model),
        run.config.steps,
        run.config.batch_size,
        run.config.grad_accum
    );
    let pb = bar(run.config.steps as u64, "sft");
    pb.set_position(run.state.step as u64);
    run.set_read_every(read_every);
    while !run.is_done() {
        let Some(read) = args.skip.run(block_on(run.step()))? else { continue };
        pb.set_position(run.state.step as u64);
        let mut log_steps = |read: Vec<sgpo::metrics::TrainStep>| -> anyhow::Result<()> {
            if let Some(m) = read.last() {
                pb.set_message(format!("loss {:.3} | {:.0} tok/s", m.loss, m.tokens_per_s));
            }
            for m in read {
                log.write(&Event::Train(m))?;
            }
            Ok(())
        };
        // Logged before anything can fail: a read that finds a bad step returns the steps
        // before it first.
        log_steps(read)?;
        if run.state.step % run.config.checkpoint_every.max(1) == 0 || run.is_done() {
            let mut rest = Vec::new();
            let flushed = block_on(run.flush(&mut |m| rest.push(m)));
            log_steps(rest)?;
            flushed?;
            let mut checkpoint = block_on(run.checkpoint())?;
            checkpoint.logged = BTreeMap::from([(log.file_name(), log.lines())]);
            checkpoint.save(out)?;
        }
    }
    pb.finish();
    // A quick held-out check; `sgpo eval` gives the full table.
    let eval_set = &data.eval[..data.eval.len().min(90)];
    if eval_set.is_empty() {
        eprintln!("no held-out examples to score (the data has too few rows to hold any out)");
        eprintln!("saved {}", out.display());
        return Ok(());
    }
    let model = run.text_model();
    let decoder = Decoder::new(&model.model, &model.tokenizer, &device);
    let (summary, _) = block_on(eval::evaluate(&decoder, eval_set, 32, run.state.step))?;
    log.write(&Event::Eval(summary.clone()))?;
    eprintln!("held-out (first {}): mean_score {:.3}, exact_match {:.3}", summary.n, summary.mean_score, summary.exact_match);
    eprintln!("saved {}", out.display());
    Ok(())
}
