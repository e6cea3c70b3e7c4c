//! The reproduction table as a protocol: the built-in tasks split into train, validation and
//! test; SFT per setting and SFT seed, trained until its validation score stops improving;
//! then every preference row from that SFT model over several seeds, and the compute-matched
//! SFT that trains as many more steps as stage 1 takes. Every knob is chosen on validation
//! (`Split::Validation`, the default); the test split is for the table, once. Each outcome
//! keeps its per-prompt results, so the report gives win/tie/loss counts, intervals by paired
//! bootstrap over runs and prompts, and per-family rows (`report.rs`). Drivers print the events.

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::config::{DataSource, Method, PairFilter, Phrasing, SftConfig, SgpoConfig};
use crate::data::tasks;
use crate::data::{Example, RunData, Tokenizer, policy_seqs};
use crate::error::{Error, Result};
use crate::eval::{Comparison, evaluate};
use crate::generate::Decoder;
use crate::metrics::{Event, IterationSummary};
use crate::checkpoint::crc32_hex;
use crate::config::ModelConfig;
use crate::model::{Model, TextModel, load_model, model_bytes};
use crate::sgpo::{SgpoRun, Stage};
use crate::train::SftRun;

mod report;
pub use report::{bootstrap_interval, bootstrap_means, family_table, report, table};

/// Which held-out half a run is scored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// For choosing every knob; the runs also monitor their progress on it.
    #[default]
    Validation,
    /// For the table: touched once, after the knobs are fixed.
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Self::Validation => "validation",
            Self::Test => "test",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "validation" => Ok(Self::Validation),
            "test" => Ok(Self::Test),
            other => Err(Error::Config(format!("split {other:?}: use validation or test"))),
        }
    }
}

/// The built-in tasks in three parts that share no prompt.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
    pub test: Vec<Example>,
}

impl Splits {
    /// `n_held_out` held-out examples (drawn family by family, none seen in training),
    /// repeats removed, dealt alternately (family by family) into validation and test, so both
    /// have the same family mix.
    pub fn builtin(n_train: usize, n_held_out: usize, seed: u64) -> Self {
        let (train, held_out) = tasks::builtin_split(n_train, n_held_out, seed);
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<Example> = held_out.into_iter().filter(|e| seen.insert(e.prompt.clone())).collect();
        let (mut validation, mut test) = (Vec::new(), Vec::new());
        let mut dealt: std::collections::HashMap<Option<String>, usize> = Default::default();
        for e in unique {
            let n = dealt.entry(e.task.clone()).or_default();
            *n += 1;
            if *n % 2 == 1 { validation.push(e) } else { test.push(e) }
        }
        Self { train, validation, test }
    }

    pub fn held_out(&self, split: Split) -> &[Example] {
        match split {
            Split::Validation => &self.validation,
            Split::Test => &self.test,
        }
    }
}

/// A preference row of the table: a method and the settings that make it that row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Sgpo,
    /// SGPO improving with the SFT model as it is (no stage 1).
    SgpoNoStage1,
    Spin,
    /// SPIN from the stage-1 model: stage 1's supervised steps without SGPO's pairs.
    SpinAfterStage1,
    /// SGPO keeping only the pairs the judge rates chosen above rejected. A diagnostic: the
    /// judge reads the references, so this is the ceiling for a label-free filter, not a method.
    JudgeFilter,
}

impl Variant {
    pub const ALL: [Variant; 5] = [Self::Sgpo, Self::SgpoNoStage1, Self::Spin, Self::SpinAfterStage1, Self::JudgeFilter];

    pub fn name(self) -> &'static str {
        match self {
            Self::Sgpo => "sgpo",
            Self::SgpoNoStage1 => "sgpo-no-stage1",
            Self::Spin => "spin",
            Self::SpinAfterStage1 => "spin-after-stage1",
            Self::JudgeFilter => "judge-filter",
        }
    }

    /// `base` (the shared preference settings) made into this row's run of `seed`.
    pub fn config(self, base: &SgpoConfig, seed: u64) -> SgpoConfig {
        let config = SgpoConfig { seed, spin_after_stage1: false, ..base.clone() };
        match self {
            Self::Sgpo => SgpoConfig { method: Method::Sgpo, ..config },
            Self::SgpoNoStage1 => SgpoConfig { method: Method::Sgpo, improver_steps: 0, ..config },
            Self::Spin => SgpoConfig { method: Method::Spin, ..config },
            Self::SpinAfterStage1 => SgpoConfig { method: Method::Spin, spin_after_stage1: true, ..config },
            Self::JudgeFilter => SgpoConfig { method: Method::Sgpo, pair_filter: PairFilter::Judge, ..config },
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
            Error::Config(format!("experiment row {s:?}: use any of {}", names.join(", ")))
        })
    }
}

/// What a run cost beyond its SFT model (for the `sft` row: SFT's own steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Compute {
    pub optimizer_steps: usize,
    /// Preference pairs trained on, summed over iterations.
    pub pairs: usize,
    /// Tokens generated to make training data (stage 1's and the pairs'), not evaluation's.
    pub generated_tokens: usize,
}

/// One finished run of one row, SFT seed and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub setting: String,
    pub method: String,
    pub sft_seed: u64,
    pub seed: u64,
    pub split: Split,
    /// Held-out win rate against the SFT model of the same SFT seed, ties half.
    pub win_rate: f32,
    pub mean_score: f32,
    /// Per held-out prompt, in the split's order.
    pub comparison: Comparison,
    pub compute: Compute,
    /// What made it ([`ExperimentPlan::sft_key`], [`ExperimentPlan::preference_key`]), so that
    /// results of other settings never join a table (empty in results from before they were
    /// recorded).
    #[serde(default)]
    pub sft_key: String,
    #[serde(default)]
    pub preference_key: String,
}

/// Stop SFT when the validation score has not improved for `patience` evaluations, `every`
/// steps apart, and keep the best model seen (`SftConfig::steps` is the most it trains).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plateau {
    pub every: usize,
    pub patience: usize,
}

/// What to compare and at what size.
#[derive(Debug, Clone)]
pub struct ExperimentPlan {
    /// SFT models per setting (seeds `sft.seed`, `sft.seed + 1`, ...).
    pub sft_seeds: u64,
    /// Preference runs per SFT model and row.
    pub seeds: u64,
    /// Labeled examples in the few-labeled setting; the next `unlabeled` become bare prompts.
    pub few_labeled: usize,
    pub unlabeled: usize,
    /// Held-out examples before the split into validation and test.
    pub held_out: usize,
    /// The SFT every setting starts from (built-in tasks; `steps` is the most it trains).
    pub sft: SftConfig,
    /// `None`: SFT trains exactly `sft.steps`.
    pub plateau: Option<Plateau>,
    /// The preference settings every row shares.
    pub sgpo: SgpoConfig,
    pub variants: Vec<Variant>,
    pub settings: Vec<&'static str>,
    pub split: Split,
}

pub const SETTINGS: [&str; 2] = ["all-labeled", "few-labeled"];

/// SGPO's model after stage 1, before any preference step (measured inside the `sgpo` runs).
pub const STAGE1_ROW: &str = "stage1";

impl ExperimentPlan {
    /// The compute-matched baseline's name: `sft+N`, N the optimiser steps stage 1 takes.
    pub fn sft_more(&self) -> String {
        format!("sft+{}", self.sgpo.stage1_steps())
    }

    /// The table's rows, in order.
    pub fn rows(&self) -> Vec<String> {
        let mut rows = vec!["sft".to_string(), self.sft_more()];
        if self.variants.contains(&Variant::Sgpo) {
            rows.push(STAGE1_ROW.into());
        }
        rows.extend(self.variants.iter().map(|v| v.name().to_string()));
        rows
    }

    /// The store's key for an SFT model: the setting, the SFT seed and a checksum of everything
    /// that shapes it (its settings, the plateau rule, the data and its generator's version, the
    /// answer length the plateau is judged at).
    pub fn sft_key(&self, setting: &str, sft_seed: u64) -> String {
        let shape = serde_json::json!({
            "sft": self.sft,
            "plateau": self.plateau.map(|p| [p.every, p.patience]),
            "data": [self.few_labeled, self.unlabeled, self.held_out],
            "tasks": tasks::GENERATOR_VERSION,
            "max_new_tokens": self.sgpo.max_new_tokens,
        });
        format!("{setting}-sft{sft_seed}-{}", crc32_hex(shape.to_string().as_bytes()))
    }

    /// Names the preference settings every row shares (the rows' own changes come on top).
    pub fn preference_key(&self) -> String {
        crc32_hex(serde_json::to_string(&self.sgpo).expect("configs serialise").as_bytes())
    }

    /// Whether `outcome` was made with this plan's SFT and preference settings.
    pub fn made(&self, outcome: &Outcome) -> bool {
        outcome.sft_key == self.sft_key(&outcome.setting, outcome.sft_seed) && outcome.preference_key == self.preference_key()
    }

    pub fn splits(&self) -> Result<Splits> {
        let DataSource::Builtin { n_train, family: None, phrasing: Phrasing::Terse, .. } = self.sft.data else {
            return Err(Error::Config("the experiment runs on every built-in task family, tersely worded (it trains its models from scratch)".into()));
        };
        Ok(Splits::builtin(n_train, self.held_out, self.sft.seed))
    }
}

/// Where trained SFT models wait between experiments, so that runs differing only in their
/// preference settings (as tuning on validation does) train each SFT model once.
pub trait SftStore {
    /// The model's bytes (`model_bytes`) and the step it was taken at, if stored under `key`.
    fn load(&mut self, key: &str) -> Option<(Vec<u8>, usize)>;
    fn save(&mut self, key: &str, model: &[u8], step: usize) -> Result<()>;
}

/// What an experiment reports while it runs.
#[derive(Debug, Clone)]
pub enum ExperimentEvent {
    /// SFT of a setting, `step` of at most `total`.
    Sft { setting: &'static str, sft_seed: u64, step: usize, total: usize },
    /// SFT's validation score at `step` (with a plateau rule).
    SftEval { setting: &'static str, sft_seed: u64, step: usize, mean_score: f32, best_step: usize },
    /// A preference iteration of one row and seed finished.
    Iteration { setting: &'static str, row: &'static str, sft_seed: u64, seed: u64, summary: IterationSummary },
    /// A row's run finished (drivers save these: a rerun skips what `done` holds).
    Finished(Outcome),
}

/// Greedy answers of `model` to the prompts of `examples`.
async fn answers(model: &Model, tokenizer: &Tokenizer, examples: &[Example], max_new: usize, device: &Device) -> Result<Vec<String>> {
    let prompts: Vec<String> = examples.iter().map(|e| e.prompt.clone()).collect();
    Decoder::new(model, tokenizer, device).greedy_answers(&prompts, max_new).await
}

/// SFT from `sft_seed`, to a plateau of the validation score when the plan has one: returns the
/// model (the best seen) and the step it was taken at.
async fn train_sft(
    plan: &ExperimentPlan,
    setting: &'static str,
    sft_seed: u64,
    tok: &Tokenizer,
    labeled: &[Example],
    validation: &[Example],
    device: &Device,
    on_event: &mut dyn FnMut(ExperimentEvent),
) -> Result<(TextModel, usize)> {
    let config = SftConfig { seed: plan.sft.seed + sft_seed, ..plan.sft.clone() };
    let mut run = SftRun::new(config, tok.clone(), labeled, device)?;
    let mut best: Option<(f32, usize, Model)> = None;
    let mut since_best = 0;
    while !run.is_done() {
        let step = run.step().await?.step;
        on_event(ExperimentEvent::Sft { setting, sft_seed, step, total: plan.sft.steps });
        let Some(plateau) = plan.plateau else { continue };
        if step % plateau.every != 0 && !run.is_done() {
            continue;
        }
        let model = run.model.valid();
        let (summary, _) = evaluate(&Decoder::new(&model, tok, device), validation, plan.sgpo.max_new_tokens, step).await?;
        if best.as_ref().is_none_or(|(score, _, _)| summary.mean_score > *score) {
            best = Some((summary.mean_score, step, model));
            since_best = 0;
        } else {
            since_best += 1;
        }
        let best_step = best.as_ref().map_or(step, |b| b.1);
        on_event(ExperimentEvent::SftEval { setting, sft_seed, step, mean_score: summary.mean_score, best_step });
        if since_best >= plateau.patience {
            break;
        }
    }
    let last = run.text_model();
    Ok(match best {
        Some((_, step, model)) => (TextModel { model, ..last }, step),
        None => (last, run.state.step),
    })
}

/// Run every (setting, SFT seed, row, seed) that `done` lacks; returns the outcomes in the
/// order they finished, each also sent as [`ExperimentEvent::Finished`]. SFT models come from
/// `store` when it has them, and go there when trained.
pub async fn run(
    plan: &ExperimentPlan,
    done: &[Outcome],
    store: &mut dyn SftStore,
    device: &Device,
    on_event: &mut dyn FnMut(ExperimentEvent),
) -> Result<Vec<Outcome>> {
    let splits = plan.splits()?;
    let held_out = splits.held_out(plan.split);
    let max_new = plan.sgpo.max_new_tokens;
    let sft_more = plan.sft_more();
    let once = |row: &str| row == "sft" || row == sft_more;
    let rows = plan.rows();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for &setting in &plan.settings {
        let (labeled, unlabeled): (Vec<Example>, Vec<String>) = if setting == "all-labeled" {
            (splits.train.clone(), Vec::new())
        } else {
            let rest = &splits.train[plan.few_labeled..(plan.few_labeled + plan.unlabeled).min(splits.train.len())];
            (splits.train[..plan.few_labeled].to_vec(), rest.iter().map(|e| e.prompt.clone()).collect())
        };
        // The tokenizer sees every text of the setting, labels or not; one per setting.
        let texts = labeled.iter().flat_map(|e| [e.prompt.as_str(), e.response.as_str()]).chain(unlabeled.iter().map(|p| p.as_str()));
        let tok = Tokenizer::train(texts, plan.sft.vocab_size)?;
        for sft_seed in 0..plan.sft_seeds {
            let have = |o: &[Outcome], row: &str, seed: u64| {
                o.iter().any(|x| x.setting == setting && x.method == row && x.sft_seed == sft_seed && x.seed == seed && x.split == plan.split)
            };
            let missing = |row: &str, seed: u64| !(once(row) && seed > 0) && !have(done, row, seed);
            if !rows.iter().any(|row| (0..plan.seeds).any(|seed| missing(row, seed))) {
                continue;
            }
            let key = plan.sft_key(setting, sft_seed);
            let (sft, sft_steps) = match store.load(&key) {
                Some((bytes, step)) => {
                    let config = ModelConfig::preset(&plan.sft.preset, tok.vocab_size())?;
                    let model = load_model(&config, &bytes, device, &key)?;
                    (TextModel { config, tokenizer: tok.clone(), model }, step)
                }
                None => {
                    let (sft, step) = train_sft(plan, setting, sft_seed, &tok, &labeled, &splits.validation, device, on_event).await?;
                    store.save(&key, &model_bytes(&sft.model).await?, step)?;
                    (sft, step)
                }
            };
            let baseline = answers(&sft.model, &sft.tokenizer, held_out, max_new, device).await?;
            let mut finish = |row: &str, seed: u64, comparison: Comparison, compute: Compute, on_event: &mut dyn FnMut(ExperimentEvent)| {
                let o = Outcome {
                    setting: setting.into(),
                    method: row.into(),
                    sft_seed,
                    seed,
                    split: plan.split,
                    win_rate: comparison.win_rate(),
                    mean_score: comparison.mean_score(),
                    comparison,
                    compute,
                    sft_key: key.clone(),
                    preference_key: plan.preference_key(),
                };
                on_event(ExperimentEvent::Finished(o.clone()));
                outcomes.push(o);
            };
            let score = |model: &Model| {
                let model = model.clone();
                let (sft, baseline) = (&sft, &baseline);
                async move {
                    let mine = answers(&model, &sft.tokenizer, held_out, max_new, device).await?;
                    Ok::<_, Error>(Comparison::of(held_out, &mine, baseline))
                }
            };
            if missing("sft", 0) {
                finish("sft", 0, Comparison::of(held_out, &baseline, &baseline), Compute { optimizer_steps: sft_steps, ..Compute::default() }, on_event);
            }
            if missing(&sft_more, 0) {
                // Policy examples only, with stage 1's optimiser and step count.
                let more = SftConfig { steps: plan.sgpo.stage1_steps(), optim: plan.sgpo.improver_optim.clone(), seed: plan.sft.seed + sft_seed, ..plan.sft.clone() };
                let seqs = policy_seqs(&sft.tokenizer, &labeled, sft.config.max_seq_len)?;
                let start = TextModel { model: sft.model.clone().fork(&crate::train::autodiff(device)).train(), ..sft.clone() };
                let mut run = SftRun::from_model("sft", more, start, seqs, device)?;
                while !run.is_done() {
                    run.step().await?;
                }
                let comparison = score(&run.model.valid()).await?;
                finish(&sft_more, 0, comparison, Compute { optimizer_steps: run.state.step, ..Compute::default() }, on_event);
            }
            for seed in 0..plan.seeds {
                for &variant in &plan.variants {
                    if !missing(variant.name(), seed) {
                        continue;
                    }
                    let config = variant.config(&plan.sgpo, seed);
                    let data = RunData { labeled: labeled.clone(), unlabeled: unlabeled.clone(), pairs: Vec::new(), eval: splits.validation.clone() };
                    let mut run = SgpoRun::new(config, sft.clone(), plan.sft.clone(), data, device)?;
                    let mut pairs = 0;
                    let mut stage1_pending = variant == Variant::Sgpo && missing(STAGE1_ROW, seed);
                    while !run.is_done() {
                        let mut summaries = Vec::new();
                        run.advance(&mut |e| if let Event::Iteration(i) = e { summaries.push(i) }).await?;
                        for summary in summaries {
                            pairs += summary.pairs_built;
                            on_event(ExperimentEvent::Iteration { setting, row: variant.name(), sft_seed, seed, summary });
                        }
                        let after_stage1 = run.stage == Stage::Pairs && run.iteration == 0 && run.step() > 0;
                        if stage1_pending && after_stage1 {
                            stage1_pending = false;
                            let compute = Compute { optimizer_steps: run.step(), pairs: 0, generated_tokens: run.generated_tokens() };
                            finish(STAGE1_ROW, seed, score(&run.policy()).await?, compute, on_event);
                        }
                    }
                    let compute = Compute { optimizer_steps: run.step(), pairs, generated_tokens: run.generated_tokens() };
                    finish(variant.name(), seed, score(&run.policy()).await?, compute, on_event);
                }
            }
        }
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn bootstrap_matches_the_hand_computed_distribution() {
        // One seed, prompts scored 0, 0, 1: a resample's mean is k/3 with k ~ Binomial(3, 1/3),
        // so P = 8/27, 12/27, 6/27, 1/27 for 0, 1/3, 2/3, 1.
        let scores = vec![vec![0.0, 0.0, 1.0]];
        let means = bootstrap_means(&scores, 40_000, &mut Rng::new(7));
        for (k, p) in [8.0, 12.0, 6.0, 1.0].into_iter().enumerate() {
            let share = means.iter().filter(|&&m| (m - k as f64 / 3.0).abs() < 1e-9).count() as f64 / 40_000.0;
            assert!((share - p / 27.0).abs() < 0.01, "k = {k}: {share} vs {}", p / 27.0);
        }
        // 2.5%: 0 (P(0) = 0.30); 97.5%: 1, since P(mean <= 2/3) = 26/27 = 0.963 < 0.975.
        let (mean, low, high) = bootstrap_interval(&scores, 40_000, &mut Rng::new(7));
        assert!((mean - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!((low, high), (0.0, 1.0));
        // Seeds resampled too: two seeds scoring 1 and 0 on both prompts give 1, 1/2, 0 with
        // P = 1/4, 1/2, 1/4; constant scores give a point.
        let (_, low, high) = bootstrap_interval(&[vec![1.0, 1.0], vec![0.0, 0.0]], 10_000, &mut Rng::new(1));
        assert_eq!((low, high), (0.0, 1.0));
        assert_eq!(bootstrap_interval(&vec![vec![0.25; 4]; 3], 1000, &mut Rng::new(2)), (0.25, 0.25, 0.25));
    }

    fn outcome(method: &str, sft_seed: u64, seed: u64, wins: &[f32], scores: &[f32]) -> Outcome {
        let comparison = Comparison { wins: wins.to_vec(), scores: scores.to_vec() };
        Outcome {
            setting: "a".into(),
            method: method.into(),
            sft_seed,
            seed,
            split: Split::Validation,
            win_rate: comparison.win_rate(),
            mean_score: comparison.mean_score(),
            comparison,
            compute: Compute { optimizer_steps: 10 + seed as usize, pairs: 4, generated_tokens: 100 },
            sft_key: String::new(),
            preference_key: String::new(),
        }
    }

    #[test]
    fn table_counts_every_prompt_of_every_run() {
        let outcomes = [
            outcome("sgpo", 0, 0, &[1.0, 0.5, 0.0], &[1.0, 0.5, 0.0]),
            outcome("sgpo", 0, 1, &[1.0, 1.0, 0.0], &[1.0, 1.0, 0.0]),
            outcome("sft", 0, 0, &[0.5, 0.5, 0.5], &[0.5, 0.5, 0.5]),
        ];
        let t = table(&outcomes, "a", &["sft", "sgpo", "spin"]);
        // Three wins, one tie, two losses over two runs; steps 10 and 11 average to 10.5 (printed 10).
        assert!(t.contains("| sgpo | 2 | 3 / 1 / 2 | 0.583 ["), "{t}");
        assert!(t.contains("| 10 | 4 | 100 |"), "{t}");
        // Every prompt tied: the interval is a point.
        assert!(t.contains("| sft | 1 | 0 / 3 / 0 | 0.500 [0.500, 0.500] | 0.500 [0.500, 0.500] |"), "{t}");
        assert!(!t.contains("spin"));
        let held_out: Vec<Example> = ["x", "y", "x"]
            .iter()
            .map(|task| Example { prompt: String::new(), response: String::new(), task: Some(task.to_string()) })
            .collect();
        let f = family_table(&outcomes, "a", &["sgpo"], &held_out);
        // x: prompts 0 and 2 of both runs (1, 0, 1, 0); y: prompt 1 (0.5, 1).
        assert!(f.contains("| row | x (2) | y (1) |") && f.contains("| sgpo | 0.50 | 0.75 |"), "{f}");
    }

    #[test]
    fn held_out_halves_share_no_prompt_and_mix_families_alike() {
        let s = Splits::builtin(500, 400, 3);
        let train: std::collections::HashSet<&str> = s.train.iter().map(|e| e.prompt.as_str()).collect();
        let val: std::collections::HashSet<&str> = s.validation.iter().map(|e| e.prompt.as_str()).collect();
        assert_eq!(val.len(), s.validation.len(), "no repeats");
        assert!(s.test.iter().all(|e| !val.contains(e.prompt.as_str()) && !train.contains(e.prompt.as_str())));
        for family in tasks::FAMILIES {
            let n = |xs: &[Example]| xs.iter().filter(|e| e.task.as_deref() == Some(family)).count();
            assert!(n(&s.validation) > 0 && n(&s.validation) - n(&s.test) <= 1, "{family}: {} vs {}", n(&s.validation), n(&s.test));
        }
    }

    #[derive(Default)]
    struct Memory(std::collections::HashMap<String, (Vec<u8>, usize)>);

    impl SftStore for Memory {
        fn load(&mut self, key: &str) -> Option<(Vec<u8>, usize)> {
            self.0.get(key).cloned()
        }
        fn save(&mut self, key: &str, model: &[u8], step: usize) -> Result<()> {
            self.0.insert(key.into(), (model.to_vec(), step));
            Ok(())
        }
    }

    /// The whole table at toy size: every row of both settings once, SFT against itself a
    /// tie, and a rerun that already has every outcome runs nothing.
    #[test]
    fn experiment_fills_every_row_and_resumes_from_its_outcomes() {
        let device = Device::flex();
        let plan = ExperimentPlan {
            sft_seeds: 1,
            seeds: 1,
            few_labeled: 40,
            unlabeled: 60,
            held_out: 18,
            sft: SftConfig { preset: "tiny".into(), steps: 6, batch_size: 8, vocab_size: 120, data: DataSource::builtin(180, 18), ..SftConfig::default() },
            plateau: Some(Plateau { every: 2, patience: 1 }),
            sgpo: SgpoConfig {
                iterations: 1,
                improver_steps: 2,
                improver_examples: 12,
                prompts_per_iteration: 8,
                batch_size: 4,
                max_new_tokens: 6,
                eval_examples: 9,
                ..SgpoConfig::default()
            },
            variants: Variant::ALL.to_vec(),
            settings: SETTINGS.to_vec(),
            split: Split::Validation,
        };
        let mut events = Vec::new();
        let mut store = Memory::default();
        let outcomes = pollster::block_on(run(&plan, &[], &mut store, &device, &mut |e| events.push(e))).unwrap();
        let rows = plan.rows();
        assert_eq!(rows.len(), 8, "{rows:?}");
        for setting in SETTINGS {
            for row in &rows {
                assert_eq!(outcomes.iter().filter(|o| o.setting == setting && o.method == *row).count(), 1, "{setting} {row}");
            }
        }
        let held_out = plan.splits().unwrap().validation.len();
        assert!(outcomes.iter().all(|o| o.comparison.wins.len() == held_out && o.comparison.scores.len() == held_out));
        let sft = outcomes.iter().find(|o| o.method == "sft").unwrap();
        assert_eq!(sft.win_rate, 0.5);
        // SFT stopped at an evaluation (every 2 steps, at most 6).
        assert!([2, 4, 6].contains(&sft.compute.optimizer_steps), "{:?}", sft.compute);
        let row = |name: &str| outcomes.iter().find(|o| o.setting == "all-labeled" && o.method == name).unwrap().compute;
        // Stage 1 (2 steps) is inside SGPO's count, absent without it; SPIN generates drafts only.
        assert_eq!(row("stage1").optimizer_steps, 2);
        assert!(row("sgpo").optimizer_steps > 2 && row("sgpo").pairs > 0 && row("sgpo").generated_tokens > row("stage1").generated_tokens);
        assert_eq!(row("sgpo-no-stage1").optimizer_steps, row("sgpo-no-stage1").pairs.div_ceil(4));
        assert_eq!(row("spin-after-stage1").optimizer_steps, 2 + row("spin-after-stage1").pairs.div_ceil(4));
        // Same seed, same drafts and improvements: the filter only removes pairs, and what it
        // keeps the judge rates better.
        assert!(row("judge-filter").pairs <= row("sgpo").pairs);
        let judged = events.iter().filter_map(|e| match e {
            ExperimentEvent::Iteration { row: "judge-filter", summary, .. } => summary.pairs_judged,
            _ => None,
        });
        assert!(judged.into_iter().all(|[_, tied, worse]| tied + worse == 0));
        let finished = events.iter().filter(|e| matches!(e, ExperimentEvent::Finished(_))).count();
        assert_eq!(finished, outcomes.len());
        assert!(events.iter().any(|e| matches!(e, ExperimentEvent::Iteration { row: "sgpo", .. })));
        assert!(events.iter().any(|e| matches!(e, ExperimentEvent::SftEval { step: 2, .. })));
        let md = report(&plan, &outcomes).unwrap();
        assert!(md.contains("### few-labeled") && md.contains("| sft+2 | 1 |") && md.contains("| judge-filter |"), "{md}");
        let header = md.lines().next().unwrap();
        assert!(header.contains("improver_steps = 2") && header.contains("iterations = 1") && !header.contains("seed"), "{header}");
        // The seeds stated are the runs' own, not what the last command asked for.
        let asked_more = report(&ExperimentPlan { seeds: 5, ..plan.clone() }, &outcomes).unwrap();
        assert!(asked_more.contains("1 SFT seeds x 1 seeds at most"), "{asked_more}");
        let again = pollster::block_on(run(&plan, &outcomes, &mut store, &device, &mut |_| {})).unwrap();
        assert!(again.is_empty());
        // A second experiment that differs in its preference settings reuses the stored SFT
        // models: no SFT step, the same SFT scores.
        assert_eq!(store.0.len(), 2);
        let other = ExperimentPlan { sgpo: SgpoConfig { beta: 0.2, ..plan.sgpo.clone() }, variants: vec![Variant::Spin], ..plan.clone() };
        let mut events = Vec::new();
        let rerun = pollster::block_on(run(&other, &[], &mut store, &device, &mut |e| events.push(e))).unwrap();
        assert!(!events.iter().any(|e| matches!(e, ExperimentEvent::Sft { .. })));
        let sft_scores = |o: &[Outcome]| o.iter().filter(|o| o.method == "sft").map(|o| o.comparison.clone()).collect::<Vec<_>>();
        assert_eq!(sft_scores(&rerun), sft_scores(&outcomes));
        // Each outcome names what made it, so results of other settings are told apart.
        assert!(outcomes.iter().all(|o| plan.made(o)) && rerun.iter().all(|o| other.made(o)));
        assert!(!outcomes.iter().any(|o| other.made(o)));
        assert_ne!(other.sft_key("all-labeled", 0), ExperimentPlan { held_out: 20, ..plan.clone() }.sft_key("all-labeled", 0));
    }
}
