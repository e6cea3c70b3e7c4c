//! The commands: each parses its flags, drives the engine, and writes the run directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pollster::block_on;

use burn::module::Module;
use sgpo::checkpoint::Checkpoint;
use sgpo::data::Example;
use sgpo::device::{self, DeviceChoice};
use sgpo::eval;
use sgpo::generate::{SamplingConfig, generate};
use sgpo::metrics::{Event, jsonl::MetricsLog};
use sgpo::model::Model;
use sgpo::rng::Rng;
use sgpo::tokenizer::Tokenizer;
use sgpo::objective::DpoLoss;
use sgpo::sgpo::{Method, PreferenceSource, SgpoConfig, SgpoRun, load_preference_data};
use sgpo::train::{self, DataSource, RunConfig, SftConfig, SftRun};

#[derive(Parser)]
#[command(name = "sgpo", version, about = "SGPO: self-generated preference optimization on burn + wgpu")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Supervised fine-tuning (stage 0). Without --data: the built-in gold-judged tasks.
    Sft(SftArgs),
    /// Preference optimisation from an SFT run: SGPO (default), SPIN or DPO.
    Train(TrainArgs),
    /// Sample answers from a trained model.
    Generate(GenerateArgs),
    /// Score a model on held-out examples (built-in tasks, or --data's reference answers).
    Eval(EvalArgs),
    /// Tokenizer tools.
    Tokenizer {
        #[command(subcommand)]
        command: TokenizerCommand,
    },
    /// Measure generation tokens/s (with and without KV cache) and SFT step time.
    Bench(BenchArgs),
    /// SFT once per setting, then SGPO, SPIN and SFT-only over seeds: one table per setting.
    Experiment(ExperimentArgs),
}

#[derive(Args)]
struct ExperimentArgs {
    /// Directory for results.jsonl (one line per finished run; a rerun skips those) and
    /// experiment.md (the tables).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Labeled examples in the "few labeled" setting; the rest of the train set becomes
    /// unlabeled prompts.
    #[arg(long, default_value_t = 300)]
    few_labeled: usize,
    #[arg(long, default_value_t = 4000)]
    unlabeled: usize,
    /// Override SFT steps (default: the SFT default).
    #[arg(long)]
    sft_steps: Option<usize>,
    /// A JSON file with SGPO settings (as in `sgpo train --config`); the method and seed vary.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Preference methods to run (SFT is always the baseline).
    #[arg(long, value_delimiter = ',', default_value = "sgpo,spin")]
    methods: Vec<Method>,
    #[command(flatten)]
    device: DeviceArg,
}

#[derive(Subcommand)]
enum TokenizerCommand {
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

#[derive(Args)]
struct DeviceArg {
    /// auto: a real GPU through wgpu, else the CPU backend. wgpu: force wgpu (even a software
    /// adapter). cpu: burn's CPU backend.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(Args)]
struct SftArgs {
    /// Run directory: checkpoints, config.json, metrics.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// JSONL examples (Alpaca, chat messages, prompt/completion); a held-out part is kept for eval.
    #[arg(long)]
    data: Option<PathBuf>,
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
    /// Fraction of --data held out for evaluation.
    #[arg(long, default_value_t = 0.1)]
    eval_fraction: f32,
    #[command(flatten)]
    device: DeviceArg,
}

#[derive(Args)]
struct TrainArgs {
    #[arg(long, default_value = "sgpo")]
    method: Method,
    /// The SFT run to start from (`sgpo sft --out ...`).
    #[arg(long)]
    init: PathBuf,
    /// Run directory for the preference run.
    #[arg(long)]
    out: PathBuf,
    /// JSONL: examples with answers (improver data, SPIN, the judge), prompt/chosen/rejected
    /// pairs (DPO) and bare prompts. Without it, the SFT run's own data.
    #[arg(long)]
    data: Option<PathBuf>,
    /// JSONL of extra prompts without answers, for SGPO's pairs.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// A JSON file with any subset of the settings in a run's config.json "sgpo".
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    iterations: Option<usize>,
    /// sigmoid, ipo, hinge or robust.
    #[arg(long)]
    loss: Option<DpoLoss>,
    #[arg(long)]
    beta: Option<f64>,
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// edit:ALPHA, reference or sft.
    #[arg(long)]
    improver_targets: Option<String>,
    #[arg(long)]
    improver_steps: Option<usize>,
    #[arg(long)]
    prompts_per_iteration: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Continue the run in --out from its last finished iteration.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    device: DeviceArg,
}

#[derive(Args)]
struct GenerateArgs {
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
struct EvalArgs {
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

#[derive(Args)]
struct BenchArgs {
    #[arg(long, default_value = "small")]
    preset: String,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[command(flatten)]
    device: DeviceArg,
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sft(args) => sft(args),
        Command::Train(args) => train_cmd(args),
        Command::Generate(args) => generate_cmd(args),
        Command::Eval(args) => eval_cmd(args),
        Command::Tokenizer { command: TokenizerCommand::Train { data, out, vocab_size } } => {
            let examples = match &data {
                Some(path) => sgpo::data::load_jsonl(path)?.examples,
                None => sgpo::tasks::generate(20000, 42),
            };
            let tok = Tokenizer::train_on(&examples, vocab_size)?;
            sgpo::checkpoint::write_atomic(&out, tok.to_json()?.as_bytes())?;
            println!("wrote {} ({} tokens)", out.display(), tok.vocab_size());
            Ok(())
        }
        Command::Bench(args) => bench(args),
        Command::Experiment(args) => experiment(args),
    }
}

fn select_device(choice: DeviceChoice) -> anyhow::Result<burn::tensor::Device> {
    let selected = device::select(choice)?;
    eprintln!("device: {}", selected.description);
    Ok(selected.device)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
            .expect("valid template"),
    );
    pb.set_prefix(what.to_string());
    pb
}

fn sft(args: SftArgs) -> anyhow::Result<()> {
    let device = select_device(args.device.device)?;
    let out = &args.out;
    let (mut run, resumed) = if Checkpoint::exists(out) {
        if !args.resume {
            bail!("{} already holds a run; pass --resume to continue it, or choose another --out", out.display());
        }
        let checkpoint = Checkpoint::load(out)?;
        let config = RunConfig::from_json("config.json", &checkpoint.config)?;
        let (train_set, _) = train::load_examples(&config.sft.data, config.sft.seed)?;
        eprintln!("resuming {} at step {}", out.display(), checkpoint.state.step);
        let run = SftRun::resume(&checkpoint, &train_set, &device)?;
        let step = run.state.step;
        (run, Some(step))
    } else {
        let mut config: SftConfig = match &args.config {
            Some(path) => read_json(path)?,
            None => SftConfig::default(),
        };
        if let Some(p) = args.preset { config.preset = p; }
        if let Some(s) = args.steps { config.steps = s; }
        if let Some(b) = args.batch_size { config.batch_size = b; }
        if let Some(g) = args.grad_accum { config.grad_accum = g; }
        if let Some(lr) = args.lr { config.optim.lr = lr; }
        if let Some(s) = args.seed { config.seed = s; }
        if let Some(c) = args.checkpoint_every { config.checkpoint_every = c; }
        if let Some(path) = &args.data {
            config.data = DataSource::File { path: path.display().to_string(), eval_fraction: args.eval_fraction };
        }
        let (train_set, eval_set) = train::load_examples(&config.data, config.seed)?;
        eprintln!("data: {} train / {} held-out examples", train_set.len(), eval_set.len());
        let tokenizer = match &args.tokenizer {
            Some(path) => {
                let json = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                Tokenizer::from_json(&path.display().to_string(), &json)?
            }
            None => Tokenizer::train_on(&train_set, config.vocab_size)?,
        };
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        (SftRun::new(config, tokenizer, &train_set, &device)?, None)
    };
    eprintln!(
        "model: {} ({} parameters), {} steps of {} x {}",
        run.config.preset,
        run.model.num_params(),
        run.config.steps,
        run.config.batch_size,
        run.config.grad_accum
    );
    let mut log = MetricsLog::open(&out.join("metrics.jsonl"), resumed)?;
    let pb = bar(run.config.steps as u64, "sft");
    pb.set_position(run.state.step as u64);
    while !run.is_done() {
        let m = block_on(run.step())?;
        pb.set_position(m.step as u64);
        pb.set_message(format!("loss {:.3} | {:.0} tok/s", m.loss, m.tokens_per_s));
        log.write(&Event::Train(m))?;
        if run.state.step % run.config.checkpoint_every.max(1) == 0 || run.is_done() {
            block_on(run.checkpoint())?.save(out)?;
        }
    }
    pb.finish();
    // A quick held-out check; `sgpo eval` gives the full table.
    let (_, eval_set) = train::load_examples(&run.config.data, run.config.seed)?;
    let eval_set: Vec<Example> = eval_set.into_iter().take(90).collect();
    let model = run.model.valid();
    let (summary, _) = block_on(eval::evaluate(&model, &run.tokenizer, &eval_set, 32, run.state.step, &device))?;
    log.write(&Event::Eval(summary.clone()))?;
    eprintln!("held-out (first {}): mean_score {:.3}, exact_match {:.3}", summary.n, summary.mean_score, summary.exact_match);
    eprintln!("saved {}", out.display());
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn train_cmd(args: TrainArgs) -> anyhow::Result<()> {
    let device = select_device(args.device.device)?;
    let out = &args.out;
    let resuming = Checkpoint::exists(out);
    if resuming && !args.resume {
        bail!("{} already holds a run; pass --resume to continue it, or choose another --out", out.display());
    }
    // The run's settings: saved ones when resuming, else defaults + --config + flags.
    let (config, source) = if resuming {
        let saved = RunConfig::from_json("config.json", &Checkpoint::load(out)?.config)?;
        match (saved.sgpo, saved.source) {
            (Some(c), Some(s)) => (c, s),
            _ => bail!("{} is an SFT run, not a preference run; resume it with `sgpo sft --resume`", out.display()),
        }
    } else {
        let mut c: SgpoConfig = match &args.config {
            Some(path) => read_json(path)?,
            None => SgpoConfig::default(),
        };
        c.method = args.method;
        if let Some(v) = args.iterations { c.iterations = v; }
        if let Some(v) = args.loss { c.loss = v; }
        if let Some(v) = args.beta { c.beta = v; }
        if let Some(v) = args.label_smoothing { c.label_smoothing = v; }
        if let Some(v) = &args.improver_targets {
            c.improver_targets = v.clone().try_into().map_err(|e: String| anyhow::anyhow!(e))?;
        }
        if let Some(v) = args.improver_steps { c.improver_steps = v; }
        if let Some(v) = args.prompts_per_iteration { c.prompts_per_iteration = v; }
        if let Some(v) = args.lr { c.dpo_optim.lr = v; }
        if let Some(v) = args.seed { c.seed = v; }
        let s = PreferenceSource {
            init: args.init.display().to_string(),
            data: args.data.as_ref().map(|p| p.display().to_string()),
            prompts: args.prompts.as_ref().map(|p| p.display().to_string()),
        };
        (c, s)
    };
    let init = load_run(Path::new(&source.init), &device, false)?;
    let data = load_preference_data(&source, &init.config.sft, config.eval_examples)?;
    eprintln!(
        "{:?} from {}: {} labeled, {} unlabeled prompts, {} fixed pairs, {} held out",
        config.method, source.init, data.labeled.len(), data.unlabeled.len(), data.pairs.len(), data.eval.len()
    );
    let run_config = serde_json::to_string_pretty(&RunConfig {
        model: init.config.model.clone(),
        sft: init.config.sft.clone(),
        sgpo: Some(config.clone()),
        source: Some(source.clone()),
    })?;
    let mut run = SgpoRun::new(config.clone(), init.config.model.clone(), init.config.sft.clone(), init.tokenizer, init.model, data, &device)?;
    if resuming {
        run.restore(&Checkpoint::load(out)?)?;
        eprintln!("resuming {} at {:?}, iteration {}, step {}", out.display(), run.stage, run.iteration, run.step());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let resumed_step = resuming.then(|| run.step());
    let mut log = MetricsLog::open(&out.join("metrics.jsonl"), resumed_step)?;
    let mut samples = MetricsLog::open(&out.join("samples.jsonl"), resumed_step)?;
    let mut failure: Option<sgpo::Error> = None;
    let pb = bar(config.improver_steps as u64, "improver");
    let mut on_event = |event: Event| {
        let written = match &event {
            Event::Sample(_) => samples.write(&event),
            Event::Train(m) => {
                pb.set_prefix("improver");
                pb.set_length(config.improver_steps as u64);
                pb.set_position(m.step as u64);
                pb.set_message(format!("loss {:.3} | {:.0} tok/s", m.loss, m.tokens_per_s));
                log.write(&event)
            }
            Event::Dpo(m) => {
                pb.set_prefix(format!("dpo {}", m.iteration));
                pb.set_position(m.step as u64);
                pb.set_message(format!("loss {:.3} | margin {:.3} | acc {:.2} | {:.0} tok/s", m.loss, m.rewards_margins, m.rewards_accuracies, m.tokens_per_s));
                log.write(&event)
            }
            Event::Progress(p) => {
                pb.set_prefix(format!("{} {}", p.stage, p.iteration));
                pb.set_length(p.total as u64);
                pb.set_position(p.done as u64);
                pb.set_message(format!("{:.0} tok/s", p.tokens_per_s));
                Ok(())
            }
            Event::Iteration(i) => {
                // The DPO bar counts this iteration's steps from here on.
                pb.set_length(i.step as u64 + config.prompts_per_iteration.div_ceil(config.batch_size.max(1)) as u64 * config.dpo_epochs as u64);
                pb.suspend(|| {
                    eprintln!(
                        "iteration {}: {} pairs ({} unchanged), improver win rate {}, win rate vs SFT {}, mean score {}",
                        i.iteration,
                        i.pairs_built,
                        i.pairs_unchanged,
                        fmt_opt(i.improver_win_rate),
                        fmt_opt(i.policy_win_rate_vs_sft),
                        fmt_opt(i.mean_score)
                    )
                });
                log.write(&event)
            }
            Event::Eval(_) => log.write(&event),
        };
        if let Err(e) = written {
            failure.get_or_insert(e);
        }
    };
    let checkpoint_every = init.config.sft.checkpoint_every.max(1);
    let mut exported = run.iteration;
    let mut saved_step = run.step();
    while !run.is_done() {
        block_on(run.advance(&mut on_event))?;
        let step = run.step();
        if run.at_boundary() || (step != saved_step && step % checkpoint_every == 0) {
            block_on(run.checkpoint(run_config.clone()))?.save(out)?;
            saved_step = step;
        }
        // An iteration just ended: its pairs, in TRL's format.
        if run.at_boundary() && run.iteration > exported {
            exported = run.iteration;
            let t = run.iteration;
            let pairs: String = run
                .last_pairs
                .iter()
                .map(|p| serde_json::to_string(&p.to_trl()).map(|l| l + "\n"))
                .collect::<Result<_, _>>()?;
            sgpo::checkpoint::write_atomic(&out.join(format!("pairs-iter{t}.jsonl")), pairs.as_bytes())?;
        }
    }
    pb.finish_and_clear();
    drop(on_event);
    if let Some(e) = failure {
        return Err(e.into());
    }
    eprintln!("saved {}", out.display());
    Ok(())
}

fn experiment(args: ExperimentArgs) -> anyhow::Result<()> {
    use sgpo::experiment::{Outcome, table};
    let device = select_device(args.device.device)?;
    std::fs::create_dir_all(&args.out)?;
    let results_path = args.out.join("results.jsonl");
    let mut outcomes: Vec<Outcome> = match std::fs::read_to_string(&results_path) {
        Ok(text) => text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect::<Result<_, _>>()?,
        Err(_) => Vec::new(),
    };
    let base: SgpoConfig = match &args.config {
        Some(path) => read_json(path)?,
        None => SgpoConfig::default(),
    };
    let sft_config = SftConfig { steps: args.sft_steps.unwrap_or(SftConfig::default().steps), ..SftConfig::default() };
    let (train_set, eval_all) = sgpo::tasks::builtin_split(20000, 270, sft_config.seed);
    let eval_set: Vec<Example> = eval_all.into_iter().take(base.eval_examples).collect();
    let settings = ["all-labeled", "few-labeled"];
    // The compute-matched baseline: SFT continued for as many optimiser steps as SGPO's
    // stage 1 takes (on policy examples only), so a gain from stage 1 alone shows as a tie.
    let stage1_steps = base.improver_steps * if base.refresh_improver { base.iterations } else { 1 };
    let sft_more = format!("sft+{stage1_steps}");
    let methods = ["sgpo", "spin", sft_more.as_str(), "sft"];
    for setting in settings {
        let (labeled, unlabeled): (Vec<Example>, Vec<String>) = if setting == "all-labeled" {
            (train_set.clone(), Vec::new())
        } else {
            let rest = &train_set[args.few_labeled..(args.few_labeled + args.unlabeled).min(train_set.len())];
            (train_set[..args.few_labeled].to_vec(), rest.iter().map(|e| e.prompt.clone()).collect())
        };
        let done = |o: &[Outcome], m: &str, seed: u64| o.iter().any(|x| x.setting == setting && x.method == m && x.seed == seed);
        let wanted = |m: &str| m == "sft" || m == sft_more || args.methods.iter().any(|x| x.name() == m);
        let once = |m: &str| m == "sft" || m == sft_more;
        if (0..args.seeds).all(|seed| methods.iter().all(|m| !wanted(m) || once(m) && seed > 0 || done(&outcomes, m, seed))) {
            continue;
        }
        // SFT once per setting; the tokenizer sees every text of the setting, labels or not.
        let texts = labeled.iter().flat_map(|e| [e.prompt.as_str(), e.response.as_str()]).chain(unlabeled.iter().map(|p| p.as_str()));
        let tok = Tokenizer::train(texts, sft_config.vocab_size)?;
        let mut sft_run = SftRun::new(sft_config.clone(), tok.clone(), &labeled, &device)?;
        let pb = bar(sft_config.steps as u64, &format!("{setting} sft"));
        while !sft_run.is_done() {
            pb.set_position(block_on(sft_run.step())?.step as u64);
        }
        pb.finish_and_clear();
        let sft_model = sft_run.model.valid();
        let record = |o: Outcome, outcomes: &mut Vec<Outcome>| -> anyhow::Result<()> {
            eprintln!("{setting} {} seed {}: win rate {:.3}, mean score {:.3}", o.method, o.seed, o.win_rate, o.mean_score);
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&results_path)?;
            use std::io::Write;
            writeln!(f, "{}", serde_json::to_string(&o)?)?;
            outcomes.push(o);
            Ok(())
        };
        if !done(&outcomes, "sft", 0) {
            let (win, score) = block_on(sgpo::sgpo::win_rate(&sft_model, &sft_model, &tok, &eval_set, base.max_new_tokens, &device))?;
            record(Outcome { setting: setting.into(), method: "sft".into(), seed: 0, win_rate: win, mean_score: score }, &mut outcomes)?;
        }
        if !done(&outcomes, &sft_more, 0) {
            let more = SftConfig { steps: stage1_steps, optim: base.improver_optim.clone(), ..sft_config.clone() };
            let seqs = sgpo::batch::policy_seqs(&tok, &labeled, sft_run.model_config.max_seq_len)?;
            let mut run = SftRun::from_model("sft", more, sft_run.model_config.clone(), tok.clone(), sft_run.model.clone(), seqs, &device)?;
            while !run.is_done() {
                block_on(run.step())?;
            }
            let (win, score) = block_on(sgpo::sgpo::win_rate(&run.model.valid(), &sft_model, &tok, &eval_set, base.max_new_tokens, &device))?;
            record(Outcome { setting: setting.into(), method: sft_more.clone(), seed: 0, win_rate: win, mean_score: score }, &mut outcomes)?;
        }
        for seed in 0..args.seeds {
            for method in [Method::Sgpo, Method::Spin] {
                let name = method.name();
                if !wanted(name) || done(&outcomes, name, seed) {
                    continue;
                }
                let config = SgpoConfig { method, seed, ..base.clone() };
                let data = sgpo::sgpo::PreferenceData { labeled: labeled.clone(), unlabeled: unlabeled.clone(), pairs: Vec::new(), eval: eval_set.clone() };
                let mut run = SgpoRun::new(config, sft_run.model_config.clone(), sft_config.clone(), tok.clone(), sft_model.clone(), data, &device)?;
                let mut report = |e: Event| {
                    if let Event::Iteration(i) = e {
                        eprintln!("  {setting} {name} seed {seed} iteration {}: {} pairs, win rate {}", i.iteration, i.pairs_built, fmt_opt(i.policy_win_rate_vs_sft));
                    }
                };
                while !run.is_done() {
                    block_on(run.advance(&mut report))?;
                }
                let (win, score) = block_on(sgpo::sgpo::win_rate(&run.policy(), &sft_model, &tok, &eval_set, base.max_new_tokens, &device))?;
                record(Outcome { setting: setting.into(), method: name.into(), seed, win_rate: win, mean_score: score }, &mut outcomes)?;
            }
        }
    }
    let mut md = format!(
        "Built-in tasks, held-out {} prompts, judge-based win rate against the SFT model (ties half), {} seeds.\n\n",
        eval_set.len(),
        args.seeds
    );
    for setting in settings {
        md.push_str(&format!("### {setting}\n\n{}\n", table(&outcomes, setting, &methods)));
    }
    sgpo::checkpoint::write_atomic(&args.out.join("experiment.md"), md.as_bytes())?;
    print!("{md}");
    Ok(())
}

fn fmt_opt(x: Option<f32>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3}"))
}

struct Loaded {
    config: RunConfig,
    tokenizer: Tokenizer,
    model: Model,
    step: usize,
}

fn load_run(dir: &Path, device: &burn::tensor::Device, untrained: bool) -> anyhow::Result<Loaded> {
    let checkpoint = Checkpoint::load(dir)?;
    let config = RunConfig::from_json(&dir.join("config.json").display().to_string(), &checkpoint.config)?;
    let tokenizer = Tokenizer::from_json("tokenizer.json", &checkpoint.tokenizer)?;
    let model = if untrained {
        config.model.init(config.sft.seed, device)
    } else {
        train::load_model(&config.model, &checkpoint.model, device, &dir.display().to_string())?
    };
    Ok(Loaded { config, tokenizer, model, step: if untrained { 0 } else { checkpoint.state.step } })
}

fn generate_cmd(args: GenerateArgs) -> anyhow::Result<()> {
    let device = select_device(args.device.device)?;
    let run = load_run(&args.model, &device, false)?;
    let tok = &run.tokenizer;
    let prompts = args
        .prompt
        .iter()
        .map(|p| match &args.draft {
            Some(d) => tok.improver_prompt(p, d),
            None => tok.policy_prompt(p),
        })
        .collect::<sgpo::Result<Vec<_>>>()?;
    let sampling = SamplingConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
    };
    let mut rng = Rng::new(args.seed);
    let s = tok.special;
    let outputs = block_on(generate(&run.model, &prompts, &sampling, s.end, s.pad, &mut rng, !args.no_cache, &device))?;
    for (prompt, out) in args.prompt.iter().zip(outputs) {
        println!("{prompt}\n=> {}", tok.decode(&out)?);
    }
    Ok(())
}

fn eval_cmd(args: EvalArgs) -> anyhow::Result<()> {
    let device = select_device(args.device.device)?;
    let run = load_run(&args.model, &device, args.untrained)?;
    let source = match &args.data {
        Some(path) => DataSource::File { path: path.display().to_string(), eval_fraction: 0.1 },
        None => run.config.sft.data.clone(),
    };
    let (_, mut examples) = train::load_examples(&source, run.config.sft.seed)?;
    if let Some(n) = args.limit {
        examples.truncate(n);
    }
    let pb = bar(1, "eval");
    let (summary, _) = block_on(eval::evaluate(&run.model, &run.tokenizer, &examples, args.max_new_tokens, run.step, &device))?;
    pb.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", eval::table(&summary));
    }
    Ok(())
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let device = select_device(args.device.device)?;
    let examples = sgpo::tasks::generate(2000, 1);
    let tok = Tokenizer::train_on(&examples, 512)?;
    let config = SftConfig { preset: args.preset.clone(), batch_size: args.batch_size, steps: 1000, ..SftConfig::default() };
    let mut run = SftRun::new(config, tok.clone(), &examples, &device)?;
    println!("device: {:?}, preset {} ({} parameters), batch {}", device, args.preset, run.model.num_params(), args.batch_size);
    // Warm-up steps compile kernels; time the rest.
    for _ in 0..2 {
        block_on(run.step())?;
    }
    let n = 5;
    let t0 = sgpo::metrics::now_seconds();
    let mut tokens = 0;
    for _ in 0..n {
        tokens += block_on(run.step())?.tokens;
    }
    let dt = sgpo::metrics::now_seconds() - t0;
    println!("sft step: {:.3} s ({:.0} tokens/s)", dt / n as f64, tokens as f64 / dt);

    let model = run.model.valid();
    let s = tok.special;
    for prompt_len in [16usize, 96] {
        let prompts: Vec<Vec<u32>> = (0..args.batch_size).map(|i| vec![s.user + (i as u32 % 3); prompt_len]).collect();
        for use_cache in [true, false] {
            // No id matches u32::MAX, so every row generates the full 32 tokens.
            let never = u32::MAX;
            let sampling = SamplingConfig::greedy(32);
            let mut rng = Rng::new(0);
            block_on(generate(&model, &prompts, &SamplingConfig::greedy(2), never, s.pad, &mut rng, use_cache, &device))?;
            let t0 = sgpo::metrics::now_seconds();
            let out = block_on(generate(&model, &prompts, &sampling, never, s.pad, &mut rng, use_cache, &device))?;
            let dt = sgpo::metrics::now_seconds() - t0;
            let generated: usize = out.iter().map(|o| o.len()).sum();
            println!(
                "generate prompt {prompt_len:>3} x batch {}: {:>8.1} tokens/s ({} cache)",
                args.batch_size,
                generated as f64 / dt,
                if use_cache { "with" } else { "no" }
            );
        }
    }
    Ok(())
}
