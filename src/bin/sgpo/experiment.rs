//! `sgpo experiment`: the reproduction table (`sgpo::experiment`), printed as it runs, each
//! finished row appended to `results.jsonl` so a rerun continues where it stopped.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use pollster::block_on;

use sgpo::config::{Method, SftConfig, SgpoConfig};
use sgpo::experiment::{self, ExperimentEvent, ExperimentPlan, Outcome};
use sgpo::native::{read_json, write_atomic};

use crate::common::{DeviceArg, bar, fmt_opt};

#[derive(Args)]
pub struct ExperimentArgs {
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

pub fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    let device = args.device.select()?;
    std::fs::create_dir_all(&args.out)?;
    let results_path = args.out.join("results.jsonl");
    let mut outcomes: Vec<Outcome> = match std::fs::read_to_string(&results_path) {
        Ok(text) => text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect::<Result<_, _>>()?,
        Err(_) => Vec::new(),
    };
    let sgpo: SgpoConfig = match &args.config {
        Some(path) => read_json(path)?,
        None => SgpoConfig::default(),
    };
    let sft = SftConfig { steps: args.sft_steps.unwrap_or(SftConfig::default().steps), ..SftConfig::default() };
    let plan = ExperimentPlan { seeds: args.seeds, few_labeled: args.few_labeled, unlabeled: args.unlabeled, sft, sgpo, methods: args.methods };
    let pb = bar(plan.sft.steps as u64, "sft");
    let mut failure = None;
    let mut on_event = |event: ExperimentEvent| match event {
        ExperimentEvent::Sft { setting, step, total } => {
            pb.set_prefix(format!("{setting} sft"));
            pb.set_length(total as u64);
            pb.set_position(step as u64);
        }
        ExperimentEvent::Iteration { setting, method, seed, summary } => pb.suspend(|| {
            eprintln!(
                "  {setting} {} seed {seed} iteration {}: {} pairs, win rate {}",
                method.name(),
                summary.iteration,
                summary.pairs_built,
                fmt_opt(summary.policy_win_rate_vs_sft)
            )
        }),
        ExperimentEvent::Finished(o) => {
            pb.suspend(|| eprintln!("{} {} seed {}: win rate {:.3}, mean score {:.3}", o.setting, o.method, o.seed, o.win_rate, o.mean_score));
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
    let new = block_on(experiment::run(&plan, &outcomes, &device, &mut on_event))?;
    pb.finish_and_clear();
    if let Some(e) = failure {
        return Err(anyhow::anyhow!("{}: {e}", results_path.display()));
    }
    outcomes.extend(new);
    let md = experiment::report(&plan, &outcomes);
    write_atomic(&args.out.join("experiment.md"), md.as_bytes())?;
    print!("{md}");
    Ok(())
}
