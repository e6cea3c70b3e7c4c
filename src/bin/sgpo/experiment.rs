//! `sgpo experiment`: the reproduction table (`sgpo::experiment`), printed as it runs, each
//! finished run appended to `results-SPLIT.jsonl` so a rerun continues where it stopped.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use pollster::block_on;

use sgpo::config::{SftConfig, SgpoConfig};
use sgpo::experiment::{self, ExperimentEvent, ExperimentPlan, Outcome, Plateau, SETTINGS, SftStore, Split, Variant};
use sgpo::native::{read_json, write_atomic};

use crate::common::{DeviceArg, bar, fmt_opt};

#[derive(Args)]
pub struct ExperimentArgs {
    /// Directory for results-SPLIT.jsonl (one line per finished run; a rerun skips those) and
    /// experiment-SPLIT.md (the tables).
    #[arg(long)]
    out: PathBuf,
    /// Directory of trained SFT models, shared by experiments whose SFT is the same (tuning
    /// runs, the test run after them); default OUT/sft.
    #[arg(long)]
    sft_store: Option<PathBuf>,
    /// The held-out half the table scores: validation (to choose settings on) or test (once,
    /// for the table you report).
    #[arg(long, default_value = "validation")]
    split: Split,
    /// SFT models per setting.
    #[arg(long, default_value_t = 3)]
    sft_seeds: u64,
    /// Preference runs per SFT model and row.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Settings to run: all-labeled, few-labeled.
    #[arg(long, value_delimiter = ',', default_value = "all-labeled,few-labeled")]
    settings: Vec<String>,
    /// Labeled examples in the "few labeled" setting; the next --unlabeled of the train set
    /// become bare prompts.
    #[arg(long, default_value_t = 300)]
    few_labeled: usize,
    #[arg(long, default_value_t = 4000)]
    unlabeled: usize,
    /// Held-out examples, dealt into validation and test halves.
    #[arg(long, default_value_t = 800)]
    held_out: usize,
    /// The most SFT steps (the cosine schedule's length).
    #[arg(long, default_value_t = 4000)]
    sft_steps: usize,
    /// SFT is scored on validation every this many steps and stops after --sft-patience
    /// scores without a gain, keeping the best model; 0 trains exactly --sft-steps.
    #[arg(long, default_value_t = 250)]
    sft_eval_every: usize,
    #[arg(long, default_value_t = 3)]
    sft_patience: usize,
    /// A JSON file with SGPO settings (as in `sgpo train --config`) that every row shares.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Preference rows: sgpo, sgpo-no-stage1, spin, spin-after-stage1, judge-filter (a
    /// diagnostic: the judge filters SGPO's pairs). The sft, compute-matched sft+N and (with
    /// sgpo) stage1 rows always come along.
    #[arg(long, value_delimiter = ',', default_value = "sgpo,sgpo-no-stage1,spin,spin-after-stage1,judge-filter")]
    rows: Vec<Variant>,
    #[command(flatten)]
    device: DeviceArg,
}

/// SFT models as `KEY.bpk` with the step they were taken at in `KEY.step`.
struct SftDir(PathBuf);

impl SftStore for SftDir {
    fn load(&mut self, key: &str) -> Option<(Vec<u8>, usize)> {
        let step = std::fs::read_to_string(self.0.join(format!("{key}.step"))).ok()?.trim().parse().ok()?;
        let model = std::fs::read(self.0.join(format!("{key}.bpk"))).ok()?;
        eprintln!("SFT model {key} (step {step}) from {}", self.0.display());
        Some((model, step))
    }

    fn save(&mut self, key: &str, model: &[u8], step: usize) -> sgpo::error::Result<()> {
        std::fs::create_dir_all(&self.0).map_err(|e| sgpo::error::Error::file(self.0.display(), e))?;
        // The model first: a step file is only ever next to a whole model.
        write_atomic(&self.0.join(format!("{key}.bpk")), model)?;
        write_atomic(&self.0.join(format!("{key}.step")), step.to_string().as_bytes())
    }
}

pub fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    let device = args.device.select()?;
    let settings = args
        .settings
        .iter()
        .map(|s| SETTINGS.into_iter().find(|known| known == s).ok_or_else(|| anyhow::anyhow!("--settings {s:?}: use all-labeled, few-labeled or both")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (name, value) in [("--sft-seeds", args.sft_seeds), ("--seeds", args.seeds)] {
        anyhow::ensure!(value >= 1, "{name} = {value} is out of range (allowed: 1 or more)");
    }
    std::fs::create_dir_all(&args.out)?;
    let results_path = args.out.join(format!("results-{}.jsonl", args.split.name()));
    // Each outcome with its line in the file.
    let read: Vec<(usize, Outcome)> = match std::fs::read_to_string(&results_path) {
        Ok(text) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).map(|o| (i + 1, o)).map_err(|e| anyhow::anyhow!("{}:{}: {e}", results_path.display(), i + 1)))
            .collect::<anyhow::Result<_>>()?,
        Err(_) => Vec::new(),
    };
    let sgpo: SgpoConfig = match &args.config {
        Some(path) => read_json(path)?,
        None => SgpoConfig::default(),
    };
    let sft = SftConfig { steps: args.sft_steps, ..SftConfig::default() };
    sft.validate()?;
    sgpo.validate()?;
    let plateau = (args.sft_eval_every > 0).then_some(Plateau { every: args.sft_eval_every, patience: args.sft_patience.max(1) });
    let plan = ExperimentPlan {
        sft_seeds: args.sft_seeds,
        seeds: args.seeds,
        few_labeled: args.few_labeled,
        unlabeled: args.unlabeled,
        held_out: args.held_out,
        sft,
        plateau,
        sgpo,
        variants: args.rows,
        settings,
        split: args.split,
    };
    // A table mixes only runs of these settings; the file's others (another --config, SFT
    // length, task generator) would be taken for runs of this command's.
    if let Some((line, _)) = read.iter().find(|(_, o)| !plan.made(o)) {
        anyhow::bail!(
            "{}:{line}: a run made with other settings than this command's (SFT, preference settings or built-in task generator); give another --out, or this file's settings",
            results_path.display()
        );
    }
    let mut outcomes: Vec<Outcome> = read.into_iter().map(|(_, o)| o).collect();
    let pb = bar(plan.sft.steps as u64, "sft");
    let mut failure = None;
    let mut on_event = |event: ExperimentEvent| match event {
        ExperimentEvent::Sft { setting, sft_seed, step, total } => {
            pb.set_prefix(format!("{setting} sft seed {sft_seed}"));
            pb.set_length(total as u64);
            pb.set_position(step as u64);
        }
        ExperimentEvent::SftEval { setting, sft_seed, step, mean_score, best_step } => pb.suspend(|| {
            eprintln!("  {setting} sft seed {sft_seed} step {step}: validation mean score {mean_score:.3} (best at step {best_step})")
        }),
        ExperimentEvent::Iteration { setting, row, sft_seed, seed, summary } => pb.suspend(|| {
            eprintln!(
                "  {setting} {row} sft seed {sft_seed} seed {seed} iteration {}: {}{} pairs, win rate {}",
                summary.iteration,
                summary.improver_targets_judged.map(|[b, t, w]| format!("stage-1 targets vs drafts {b}/{t}/{w} (better/tied/worse), ")).unwrap_or_default(),
                summary.pairs_built,
                fmt_opt(summary.policy_win_rate_vs_sft)
            )
        }),
        ExperimentEvent::Finished(o) => {
            pb.suspend(|| {
                eprintln!(
                    "{} {} sft seed {} seed {}: win rate {:.3}, mean score {:.3} ({} steps, {} pairs)",
                    o.setting, o.method, o.sft_seed, o.seed, o.win_rate, o.mean_score, o.compute.optimizer_steps, o.compute.pairs
                )
            });
            let appended = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&results_path)
                .and_then(|mut f| writeln!(f, "{}", serde_json::to_string(&o).expect("outcomes serialise")));
            if let Err(e) = appended {
                failure.get_or_insert(e);
            }
        }
    };
    let mut store = SftDir(args.sft_store.clone().unwrap_or_else(|| args.out.join("sft")));
    let new = block_on(experiment::run(&plan, &outcomes, &mut store, &device, &mut on_event))?;
    pb.finish_and_clear();
    if let Some(e) = failure {
        return Err(anyhow::anyhow!("{}: {e}", results_path.display()));
    }
    outcomes.extend(new);
    let md = experiment::report(&plan, &outcomes)?;
    write_atomic(&args.out.join(format!("experiment-{}.md", args.split.name())), md.as_bytes())?;
    print!("{md}");
    Ok(())
}
