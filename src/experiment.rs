//! The reproduction table: SFT once per setting (all examples labeled, or a few labeled and
//! the rest as bare prompts), then each preference method from that same SFT model over
//! several seeds, against SFT and a compute-matched SFT that trains as many more steps as
//! stage 1 takes. Drivers print the events; the outcomes are the table.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::config::{DataSource, Method, SftConfig, SgpoConfig};
use crate::data::{Example, RunData, Tokenizer, policy_seqs, tasks};
use crate::error::{Error, Result};
use crate::eval::win_rate;
use crate::generate::Decoder;
use crate::metrics::{Event, IterationSummary};
use crate::model::TextModel;
use crate::rng::Rng;
use crate::sgpo::SgpoRun;
use crate::train::SftRun;

/// One finished run of one method and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub setting: String,
    pub method: String,
    pub seed: u64,
    /// Held-out win rate against the SFT model, ties half.
    pub win_rate: f32,
    pub mean_score: f32,
}

/// Two-sided 97.5% quantile of Student's t with `df` degrees of freedom.
fn t975(df: usize) -> f64 {
    const TABLE: [f64; 10] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228];
    match df {
        0 => f64::NAN,
        1..=10 => TABLE[df - 1],
        _ => 1.96,
    }
}

/// Mean and the half-width of its 95% confidence interval (t-distribution over seeds).
pub fn mean_ci(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, f64::NAN);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, t975(n - 1) * (var / n as f64).sqrt())
}

/// The bootstrap distribution of the mean of `scores[seed][prompt]`, sorted: each of
/// `resamples` draws seeds and prompts with replacement, one prompt draw shared by every seed
/// of that resample, so scores that are per-prompt differences of two methods stay paired.
pub fn bootstrap_means(scores: &[Vec<f64>], resamples: usize, rng: &mut Rng) -> Vec<f64> {
    let (n_seeds, n_prompts) = (scores.len(), scores.first().map_or(0, Vec::len));
    assert!(n_seeds > 0 && n_prompts > 0 && scores.iter().all(|s| s.len() == n_prompts), "a score per seed and prompt");
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let prompts: Vec<usize> = (0..n_prompts).map(|_| rng.below(n_prompts)).collect();
            let total: f64 = (0..n_seeds).map(|_| prompts.iter().map(|&p| scores[rng.below(n_seeds)][p]).sum::<f64>()).sum();
            total / (n_seeds * n_prompts) as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    means
}

/// The mean of `scores[seed][prompt]` and its 95% paired-bootstrap percentile interval.
pub fn bootstrap_interval(scores: &[Vec<f64>], resamples: usize, rng: &mut Rng) -> (f64, f64, f64) {
    let means = bootstrap_means(scores, resamples, rng);
    let quantile = |q: f64| means[((q * resamples as f64).ceil() as usize).clamp(1, resamples) - 1];
    let mean = scores.iter().flatten().sum::<f64>() / scores.iter().map(Vec::len).sum::<usize>() as f64;
    (mean, quantile(0.025), quantile(0.975))
}

fn cell(xs: &[f64]) -> String {
    let (m, h) = mean_ci(xs);
    if h.is_nan() { format!("{m:.3}") } else { format!("{m:.3} ± {h:.3}") }
}

/// A markdown table per setting, methods in the order given.
pub fn table(outcomes: &[Outcome], setting: &str, methods: &[&str]) -> String {
    let mut s = String::from("| method | seeds | win rate vs SFT (95% CI) | mean score (95% CI) |\n| --- | --- | --- | --- |\n");
    for method in methods {
        let rows: Vec<&Outcome> = outcomes.iter().filter(|o| o.setting == setting && o.method == *method).collect();
        if rows.is_empty() {
            continue;
        }
        let wins: Vec<f64> = rows.iter().map(|o| o.win_rate as f64).collect();
        let scores: Vec<f64> = rows.iter().map(|o| o.mean_score as f64).collect();
        s.push_str(&format!("| {method} | {} | {} | {} |\n", rows.len(), cell(&wins), cell(&scores)));
    }
    s
}


/// What to compare and at what size.
#[derive(Debug, Clone)]
pub struct ExperimentPlan {
    pub seeds: u64,
    /// Labeled examples in the few-labeled setting; the next `unlabeled` become bare prompts.
    pub few_labeled: usize,
    pub unlabeled: usize,
    /// The SFT every setting starts from (built-in tasks).
    pub sft: SftConfig,
    /// The preference settings; the method and seed vary.
    pub sgpo: SgpoConfig,
    pub methods: Vec<Method>,
}

pub const SETTINGS: [&str; 2] = ["all-labeled", "few-labeled"];

impl ExperimentPlan {
    /// The compute-matched baseline's name: `sft+N`, N the optimiser steps stage 1 takes.
    pub fn sft_more(&self) -> String {
        format!("sft+{}", self.sgpo.stage1_steps())
    }

    /// The table's rows, in order.
    pub fn rows(&self) -> Vec<String> {
        let mut rows: Vec<String> = self.methods.iter().map(|m| m.name().to_string()).collect();
        rows.extend([self.sft_more(), "sft".to_string()]);
        rows
    }
}

/// What an experiment reports while it runs.
#[derive(Debug, Clone)]
pub enum ExperimentEvent {
    /// SFT of a setting, `step` of `total`.
    Sft { setting: &'static str, step: usize, total: usize },
    /// A preference iteration of one method and seed finished.
    Iteration { setting: &'static str, method: Method, seed: u64, summary: IterationSummary },
    /// A row's run finished (drivers save these: a rerun skips what `done` holds).
    Finished(Outcome),
}

/// Run every (setting, method, seed) that `done` lacks; returns the outcomes in the order they
/// finished, each also sent as [`ExperimentEvent::Finished`].
pub async fn run(plan: &ExperimentPlan, done: &[Outcome], device: &Device, on_event: &mut dyn FnMut(ExperimentEvent)) -> Result<Vec<Outcome>> {
    let DataSource::Builtin { n_train, n_eval, family: None } = plan.sft.data else {
        return Err(Error::Config("the experiment runs on every built-in task family".into()));
    };
    let (train_set, eval_all) = tasks::builtin_split(n_train, n_eval, plan.sft.seed);
    let eval_set: Vec<Example> = eval_all.into_iter().take(plan.sgpo.eval_examples).collect();
    let sft_more = plan.sft_more();
    let once = |m: &str| m == "sft" || m == sft_more;
    let mut outcomes: Vec<Outcome> = Vec::new();
    for setting in SETTINGS {
        let have = |o: &[Outcome], m: &str, seed: u64| o.iter().any(|x| x.setting == setting && x.method == m && x.seed == seed);
        let missing = |m: &str, seed: u64| !(once(m) && seed > 0) && !have(done, m, seed);
        if !plan.rows().iter().any(|m| (0..plan.seeds).any(|seed| missing(m, seed))) {
            continue;
        }
        let (labeled, unlabeled): (Vec<Example>, Vec<String>) = if setting == "all-labeled" {
            (train_set.clone(), Vec::new())
        } else {
            let rest = &train_set[plan.few_labeled..(plan.few_labeled + plan.unlabeled).min(train_set.len())];
            (train_set[..plan.few_labeled].to_vec(), rest.iter().map(|e| e.prompt.clone()).collect())
        };
        // SFT once per setting; the tokenizer sees every text of the setting, labels or not.
        let texts = labeled.iter().flat_map(|e| [e.prompt.as_str(), e.response.as_str()]).chain(unlabeled.iter().map(|p| p.as_str()));
        let tok = Tokenizer::train(texts, plan.sft.vocab_size)?;
        let mut sft_run = SftRun::new(plan.sft.clone(), tok, &labeled, device)?;
        while !sft_run.is_done() {
            let step = sft_run.step().await?.step;
            on_event(ExperimentEvent::Sft { setting, step, total: plan.sft.steps });
        }
        let sft = sft_run.text_model();
        let baseline = Decoder::new(&sft.model, &sft.tokenizer, device);
        let max_new = plan.sgpo.max_new_tokens;
        let mut finish = |method: String, seed: u64, (win_rate, mean_score): (f32, f32), on_event: &mut dyn FnMut(ExperimentEvent)| {
            let o = Outcome { setting: setting.into(), method, seed, win_rate, mean_score };
            on_event(ExperimentEvent::Finished(o.clone()));
            outcomes.push(o);
        };
        if missing("sft", 0) {
            let result = win_rate(&baseline, &baseline, &eval_set, max_new).await?;
            finish("sft".into(), 0, result, on_event);
        }
        if missing(&sft_more, 0) {
            // Policy examples only, with stage 1's optimiser and step count.
            let more = SftConfig { steps: plan.sgpo.stage1_steps(), optim: plan.sgpo.improver_optim.clone(), ..plan.sft.clone() };
            let seqs = policy_seqs(&sft.tokenizer, &labeled, sft.config.max_seq_len)?;
            let start = TextModel { model: sft_run.model.clone(), ..sft.clone() };
            let mut run = SftRun::from_model("sft", more, start, seqs, device)?;
            while !run.is_done() {
                run.step().await?;
            }
            let model = run.text_model().model;
            let result = win_rate(&Decoder::new(&model, &sft.tokenizer, device), &baseline, &eval_set, max_new).await?;
            finish(sft_more.clone(), 0, result, on_event);
        }
        for seed in 0..plan.seeds {
            for &method in &plan.methods {
                if !missing(method.name(), seed) {
                    continue;
                }
                let config = SgpoConfig { method, seed, ..plan.sgpo.clone() };
                let data = RunData { labeled: labeled.clone(), unlabeled: unlabeled.clone(), pairs: Vec::new(), eval: eval_set.clone() };
                let mut run = SgpoRun::new(config, sft.clone(), plan.sft.clone(), data, device)?;
                while !run.is_done() {
                    let mut summaries = Vec::new();
                    run.advance(&mut |e| if let Event::Iteration(i) = e { summaries.push(i) }).await?;
                    for summary in summaries {
                        on_event(ExperimentEvent::Iteration { setting, method, seed, summary });
                    }
                }
                let policy = run.policy();
                let result = win_rate(&Decoder::new(&policy, &sft.tokenizer, device), &baseline, &eval_set, max_new).await?;
                finish(method.name().into(), seed, result, on_event);
            }
        }
    }
    Ok(outcomes)
}

/// The markdown report: one table per setting.
pub fn report(plan: &ExperimentPlan, outcomes: &[Outcome]) -> String {
    let rows = plan.rows();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let mut md = format!(
        "Built-in tasks, held-out {} prompts, judge-based win rate against the SFT model (ties half), {} seeds.\n\n",
        plan.sgpo.eval_examples, plan.seeds
    );
    for setting in SETTINGS {
        md.push_str(&format!("### {setting}\n\n{}\n", table(outcomes, setting, &rows)));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_uses_students_t() {
        let (m, h) = mean_ci(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12);
        // sd = 1, n = 3: 4.303 / sqrt(3).
        assert!((h - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert!(mean_ci(&[5.0]).1.is_nan());
    }

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

    #[test]
    fn table_lists_each_method_once() {
        let o = |method: &str, seed, w| Outcome { setting: "a".into(), method: method.into(), seed, win_rate: w, mean_score: 0.5 };
        let t = table(&[o("sgpo", 0, 0.6), o("sgpo", 1, 0.7), o("sft", 0, 0.5)], "a", &["sgpo", "spin", "sft"]);
        assert!(t.contains("| sgpo | 2 | 0.650 ± "));
        assert!(t.contains("| sft | 1 | 0.500 | 0.500 |"));
        assert!(!t.contains("spin"));
    }

    /// The whole table at toy size: every row of both settings once, SFT against itself a
    /// tie, and a rerun that already has every outcome runs nothing.
    #[test]
    fn experiment_fills_every_row_and_resumes_from_its_outcomes() {
        let device = Device::flex();
        let plan = ExperimentPlan {
            seeds: 1,
            few_labeled: 40,
            unlabeled: 60,
            sft: SftConfig { preset: "tiny".into(), steps: 6, batch_size: 8, vocab_size: 120, data: DataSource::builtin(180, 18), ..SftConfig::default() },
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
            methods: vec![Method::Sgpo, Method::Spin],
        };
        let mut events = Vec::new();
        let outcomes = pollster::block_on(run(&plan, &[], &device, &mut |e| events.push(e))).unwrap();
        for setting in SETTINGS {
            for row in ["sgpo", "spin", "sft+2", "sft"] {
                assert_eq!(outcomes.iter().filter(|o| o.setting == setting && o.method == row).count(), 1, "{setting} {row}");
            }
        }
        let sft = outcomes.iter().find(|o| o.method == "sft").unwrap();
        assert_eq!(sft.win_rate, 0.5);
        let finished = events.iter().filter(|e| matches!(e, ExperimentEvent::Finished(_))).count();
        assert_eq!(finished, outcomes.len());
        assert!(events.iter().any(|e| matches!(e, ExperimentEvent::Iteration { method: Method::Sgpo, .. })));
        let md = report(&plan, &outcomes);
        assert!(md.contains("### few-labeled") && md.contains("| sft+2 | 1 |"), "{md}");
        let again = pollster::block_on(run(&plan, &outcomes, &device, &mut |_| {})).unwrap();
        assert!(again.is_empty());
    }
}
