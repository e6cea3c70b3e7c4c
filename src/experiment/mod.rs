//! The reproduction table as a protocol: the built-in tasks split into train, validation and
//! test; SFT per setting and SFT seed, trained until its validation score stops improving;
//! then every preference row from that SFT model over several seeds, and the compute-matched
//! SFT that trains as many more steps as stage 1 takes. Every knob is chosen on validation
//! (`Split::Validation`, the default); the test split is for the table, once. Each outcome
//! keeps its per-prompt results, so the report gives win/tie/loss counts, intervals by paired
//! bootstrap over runs and prompts, and per-family rows (`report.rs`). The loop is `run.rs`;
//! drivers print its events.

use serde::{Deserialize, Serialize};

use crate::checkpoint::crc32_hex;
use crate::config::{DataSource, Method, PairFilter, Phrasing, SftConfig, SgpoConfig};
use crate::data::Example;
use crate::data::tasks;
use crate::error::{Error, Result};
use crate::eval::Comparison;

mod report;
mod run;
pub use report::{bootstrap_interval, bootstrap_means, family_table, report, table};
pub use run::{ExperimentEvent, SftStore, run};

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
}
