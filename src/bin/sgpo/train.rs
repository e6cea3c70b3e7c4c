//! `sgpo train`: a preference run (SGPO, SPIN or DPO) from an SFT run, resumable; writes
//! `metrics.jsonl`, `samples.jsonl` and each iteration's pairs in TRL's format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::module::Module;
use clap::Args;
use pollster::block_on;

use sgpo::checkpoint::Checkpoint;
use sgpo::config::{DpoLoss, ImproverTargets, Method, PairFilter, PreferenceSource, RunConfig, SgpoConfig};
use sgpo::metrics::Event;
use sgpo::native::{EventLog, RunLock, data_changed, load_preference_data, read_json, write_atomic};
use sgpo::sgpo::{SgpoRun, trl_jsonl};

use crate::common::{DeviceArg, LoraArgs, SkipArgs, trainable_note, absolute, bar, differing_settings, fmt_opt, logged_lines, open_run};

#[derive(Args)]
pub struct TrainArgs {
    /// sgpo, spin or dpo [default: sgpo].
    #[arg(long)]
    method: Option<Method>,
    /// The model to start from: an SFT run (`sgpo sft --out ...`), or a Hugging Face model
    /// directory (an instruct model: SGPO straight from it, no SFT of ours).
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
    /// edit:ALPHA, words:ALPHA, reference, reference-trained:ALPHA or sft.
    #[arg(long)]
    improver_targets: Option<ImproverTargets>,
    /// Stage-1 steps; 0 skips stage 1.
    #[arg(long)]
    improver_steps: Option<usize>,
    #[arg(long)]
    prompts_per_iteration: Option<usize>,
    /// Which changed drafts become pairs: none, confidence:MARGIN, majority:K:SHARE or judge
    /// (a diagnostic that reads the references).
    #[arg(long)]
    pair_filter: Option<PairFilter>,
    #[arg(long)]
    drafts_per_prompt: Option<usize>,
    /// Times the improver rewrites each draft (each pass rewrites the last) [default: 1].
    #[arg(long)]
    improvement_passes: Option<usize>,
    /// The policy's greedy answer is a draft too.
    #[arg(long)]
    greedy_draft: bool,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stop dead after this many units of work, as a kill would (for crash-recovery tests).
    #[arg(long, hide = true)]
    halt_after: Option<usize>,
    #[command(flatten)]
    lora: LoraArgs,
    #[command(flatten)]
    skip: SkipArgs,
    #[command(flatten)]
    device: DeviceArg,
}

impl TrainArgs {
    /// The settings of a new run: defaults, then --config, then the flags.
    fn config(&self) -> anyhow::Result<(SgpoConfig, PreferenceSource)> {
        let mut base: SgpoConfig = match &self.config {
            Some(path) => read_json(path)?,
            None => SgpoConfig::default(),
        };
        base.method = self.method.unwrap_or(Method::Sgpo);
        Ok((self.apply(base), self.source()?))
    }

    fn source(&self) -> anyhow::Result<PreferenceSource> {
        let path = |p: &Option<PathBuf>| p.as_deref().map(absolute).transpose();
        Ok(PreferenceSource { init: absolute(&self.init)?, data: path(&self.data)?, prompts: path(&self.prompts)? })
    }

    /// `c` with the flags given applied.
    fn apply(&self, mut c: SgpoConfig) -> SgpoConfig {
        if let Some(v) = self.method { c.method = v; }
        if let Some(v) = self.iterations { c.iterations = v; }
        if let Some(v) = self.loss { c.loss = v; }
        if let Some(v) = self.beta { c.beta = v; }
        if let Some(v) = self.label_smoothing { c.label_smoothing = v; }
        if let Some(v) = self.improver_targets { c.improver_targets = v; }
        if let Some(v) = self.improver_steps { c.improver_steps = v; }
        if let Some(v) = self.prompts_per_iteration { c.prompts_per_iteration = v; }
        if let Some(v) = self.pair_filter { c.pair_filter = v; }
        if let Some(v) = self.drafts_per_prompt { c.drafts_per_prompt = v; }
        if let Some(v) = self.improvement_passes { c.improvement_passes = v; }
        if self.greedy_draft { c.greedy_draft = true; }
        if let Some(v) = self.lr { c.dpo_optim.lr = v; }
        if let Some(v) = self.seed { c.seed = v; }
        c
    }

    /// On `--resume`, the flags must agree with the saved settings; `--iterations` may change.
    fn check_resume(&self, saved: &SgpoConfig, source: &PreferenceSource) -> anyhow::Result<Option<usize>> {
        let base = match &self.config {
            Some(path) => SgpoConfig { method: saved.method, ..read_json(path)? },
            None => saved.clone(),
        };
        let mut requested = self.apply(base);
        let new_iterations = Some(requested.iterations).filter(|&n| n != saved.iterations);
        requested.iterations = saved.iterations;
        let mut differ = differing_settings(saved, &requested, &[("dpo_optim", "--lr")]);
        let given = PreferenceSource { init: absolute(&self.init)?, data: self.data.as_deref().map(absolute).transpose()?.or(source.data.clone()), prompts: self.prompts.as_deref().map(absolute).transpose()?.or(source.prompts.clone()) };
        let saved_source = PreferenceSource { init: absolute(Path::new(&source.init))?, ..source.clone() };
        differ.extend(differing_settings(&saved_source, &given, &[]));
        if !differ.is_empty() {
            bail!("these flags differ from the saved run's settings: {}; a resumed run keeps its settings (choose another --out for a new run)", differ.join(", "));
        }
        Ok(new_iterations)
    }
}

/// What the loop writes besides checkpoints.
struct Logs {
    metrics: EventLog,
    samples: EventLog,
}

impl Logs {
    fn open(out: &Path, resumed: Option<&Checkpoint>) -> anyhow::Result<Self> {
        let open = |name: &str| match resumed {
            Some(c) => EventLog::resume(&out.join(name), logged_lines(c, name)),
            None => EventLog::create(&out.join(name)),
        };
        Ok(Self { metrics: open("metrics.jsonl")?, samples: open("samples.jsonl")? })
    }

    fn write(&mut self, event: &Event) -> sgpo::Result<()> {
        match event {
            Event::Sample(_) => self.samples.write(event),
            Event::Progress(_) => Ok(()),
            _ => self.metrics.write(event),
        }
    }

    fn lines(&self) -> BTreeMap<String, usize> {
        [&self.metrics, &self.samples].into_iter().map(|l| (l.file_name(), l.lines())).collect()
    }
}

pub fn run(mut args: TrainArgs) -> anyhow::Result<()> {
    let read_every = args.skip.read_every()?;
    let device = args.device.select()?;
    let out = &args.out;
    let _lock = RunLock::acquire(out)?;
    let resumed = Checkpoint::exists(out).then(|| Checkpoint::load(out)).transpose()?;
    if resumed.is_some() && !args.resume {
        bail!("{} already holds a run; pass --resume to continue it, or choose another --out", out.display());
    }
    // The run's settings: the saved ones when resuming.
    let (config, source, lora) = match &resumed {
        Some(checkpoint) => match RunConfig::from_json("config.json", &checkpoint.config)? {
            RunConfig { sgpo: Some(mut c), source: Some(s), model, .. } => {
                if let Some(n) = args.check_resume(&c, &s)? {
                    eprintln!("--iterations {n}: the run now ends after iteration {n} (it was to end after {})", c.iterations);
                    c.iterations = n;
                }
                args.lora.check_resume(model.lora.as_ref())?;
                (c, s, model.lora)
            }
            _ => bail!("{} is an SFT run, not a preference run; resume it with `sgpo sft --resume`", out.display()),
        },
        None if args.resume => bail!("{}: nothing to resume (no checkpoint there); leave out --resume to start a run", out.display()),
        None => {
            let (config, source) = args.config()?;
            (config, source, args.lora.config()?)
        }
    };
    config.validate()?;
    let mut init = open_run(Path::new(&source.init), &device)?;
    init.model.config.lora = lora;
    if source.data.is_none()
        && let Some(notice) = data_changed(&init.config.sft.data)?
    {
        eprintln!("warning: {notice}");
    }
    let data = load_preference_data(&source, &init.config.sft, config.eval_examples)?;
    eprintln!(
        "{:?} from {}: {} labeled, {} unlabeled prompts, {} fixed pairs, {} held out",
        config.method, source.init, data.labeled.len(), data.unlabeled.len(), data.pairs.len(), data.eval.len()
    );
    let run_config = RunConfig { model: init.model.config.clone(), sft: init.config.sft.clone(), sgpo: Some(config.clone()), source: Some(source), chat: init.config.chat.clone() };
    let mut run = SgpoRun::new(config.clone(), init.model, init.config.sft.clone(), data, &device)?;
    let policy = run.policy();
    eprintln!("policy: {} parameters{}", policy.num_params(), trainable_note(&policy));
    if let Some(checkpoint) = &resumed {
        run.restore(checkpoint)?;
        eprintln!("resuming {} at {:?}, iteration {}, step {}", out.display(), run.stage, run.iteration, run.step());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut logs = Logs::open(out, resumed.as_ref())?;
    let pb = bar(config.stage1_steps() as u64, "improver");
    let show = |event: &Event| match event {
        Event::Train(m) => {
            pb.set_prefix("improver");
            pb.set_position(m.step as u64);
            pb.set_message(format!("loss {:.3} | {:.0} tok/s", m.loss, m.tokens_per_s));
        }
        Event::Dpo(m) => {
            pb.set_prefix(format!("dpo {}", m.iteration));
            pb.set_position(m.step as u64);
            pb.set_message(format!("loss {:.3} | margin {:.3} | acc {:.2} | {:.0} tok/s", m.loss, m.rewards_margins, m.rewards_accuracies, m.tokens_per_s));
        }
        Event::Progress(p) => {
            pb.set_prefix(format!("{} {}", p.stage, p.iteration));
            pb.set_length(p.total as u64);
            pb.set_position(p.done as u64);
            pb.set_message(format!("{:.0} tok/s", p.tokens_per_s));
        }
        Event::Iteration(i) => {
            // The DPO bar counts this iteration's steps from here on.
            pb.set_length(i.step as u64 + config.prompts_per_iteration.div_ceil(config.batch_size.max(1)) as u64 * config.dpo_epochs as u64);
            pb.suspend(|| {
                eprintln!(
                    "iteration {}: {}{} pairs ({} unchanged dropped, {} with an empty chosen{}), improver win rate {}, win rate vs SFT {}, mean score {}",
                    i.iteration,
                    i.improver_targets_judged.map(|[b, t, w]| format!("stage-1 targets vs their drafts: better {b}, tied {t}, worse {w}; ")).unwrap_or_default(),
                    i.pairs_built,
                    i.pairs_unchanged,
                    i.pairs_empty_chosen,
                    i.pairs_judged.map(|[b, t, w]| format!("; judge: chosen better {b}, tied {t}, worse {w}")).unwrap_or_default(),
                    fmt_opt(i.improver_win_rate),
                    fmt_opt(i.policy_win_rate_vs_sft),
                    fmt_opt(i.mean_score)
                )
            });
        }
        Event::Sample(_) | Event::Eval(_) => {}
    };
    let checkpoint_every = init.config.sft.checkpoint_every.max(1);
    let mut exported = run.finished_iterations();
    let mut saved_step = run.step();
    let mut units = 0;
    run.set_read_every(read_every);
    while !run.is_done() {
        let mut events = Vec::new();
        let mut report = |e: Event| {
            show(&e);
            events.push(e)
        };
        let advanced = block_on(run.advance(&mut report));
        let step = run.step();
        let checkpoint_due = advanced.is_ok() && (run.at_boundary() || (step != saved_step && step % checkpoint_every == 0));
        // What a unit reported is logged before its error, or a checkpoint's read, can stop the run.
        let flushed = if checkpoint_due { block_on(run.flush(&mut report)) } else { Ok(()) };
        for event in &events {
            logs.write(event)?;
        }
        args.skip.run(advanced)?;
        flushed?;
        if checkpoint_due {
            let mut checkpoint = block_on(run.checkpoint(run_config.to_json()))?;
            checkpoint.logged = logs.lines();
            checkpoint.save(out)?;
            saved_step = step;
        }
        // An iteration just ended: its pairs, in TRL's format.
        if run.finished_iterations() > exported {
            exported = run.finished_iterations();
            write_atomic(&out.join(format!("pairs-iter{exported}.jsonl")), trl_jsonl(&run.last_pairs).as_bytes())?;
        }
        units += 1;
        if args.halt_after == Some(units) {
            pb.abandon();
            eprintln!("halted after {units} units of work (--halt-after)");
            std::process::exit(3);
        }
    }
    pb.finish_and_clear();
    eprintln!("saved {}", out.display());
    Ok(())
}
