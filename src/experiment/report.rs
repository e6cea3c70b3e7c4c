//! The experiment's statistics and its markdown report: paired-bootstrap intervals over runs
//! and prompts, the table per setting (win/tie/loss, intervals, compute), the per-family table,
//! and the report that puts them together.

use super::{Compute, ExperimentPlan, Outcome};
use crate::config::SgpoConfig;
use crate::data::Example;
use crate::data::tasks::ONE_WORD_ANSWERS;
use crate::error::Result;
use crate::rng::Rng;

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

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// The outcomes of `row` in `setting`, one per run.
fn runs<'a>(outcomes: &'a [Outcome], setting: &str, row: &str) -> Vec<&'a Outcome> {
    outcomes.iter().filter(|o| o.setting == setting && o.method == row).collect()
}

/// Resamples of the paired bootstrap; the draws are seeded, so a report reads the same twice.
const RESAMPLES: usize = 2000;

fn interval(per_run: Vec<Vec<f64>>) -> String {
    let (m, lo, hi) = bootstrap_interval(&per_run, RESAMPLES, &mut Rng::new(0xb007));
    format!("{m:.3} [{lo:.3}, {hi:.3}]")
}

/// A markdown table of one setting, rows in the order given (absent rows left out):
/// win/tie/loss over every run and prompt, win rate and mean score with 95% paired-bootstrap
/// intervals, and the compute per run.
pub fn table(outcomes: &[Outcome], setting: &str, rows: &[&str]) -> String {
    let mut s = String::from(
        "| row | runs | win / tie / loss | win rate vs SFT [95% CI] | mean score [95% CI] | optimiser steps | pairs | generated tokens |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for row in rows {
        let rs = runs(outcomes, setting, row);
        if rs.is_empty() {
            continue;
        }
        let count = |v: f32| rs.iter().flat_map(|o| &o.comparison.wins).filter(|&&w| w == v).count();
        let per_run = |f: fn(&Outcome) -> &Vec<f32>| rs.iter().map(|o| f(o).iter().map(|&x| x as f64).collect()).collect();
        let per = |f: fn(&Compute) -> usize| mean(&rs.iter().map(|o| f(&o.compute) as f64).collect::<Vec<_>>());
        s.push_str(&format!(
            "| {row} | {} | {} / {} / {} | {} | {} | {:.0} | {:.0} | {:.0} |\n",
            rs.len(),
            count(1.0),
            count(0.5),
            count(0.0),
            interval(per_run(|o| &o.comparison.wins)),
            interval(per_run(|o| &o.comparison.scores)),
            per(|c| c.optimizer_steps),
            per(|c| c.pairs),
            per(|c| c.generated_tokens),
        ));
    }
    s
}

/// Win rate against SFT per task family (over every run), rows in the order given; then the
/// families with one-word answers together, and those with multi-word answers.
pub fn family_table(outcomes: &[Outcome], setting: &str, rows: &[&str], held_out: &[Example]) -> String {
    let task = |e: &Example| e.task.clone().unwrap_or_else(|| "data".into());
    let mut families: Vec<String> = held_out.iter().map(task).collect();
    families.sort();
    families.dedup();
    // Each column is a mask over the held-out prompts.
    let one_word: Vec<bool> = held_out.iter().map(|e| ONE_WORD_ANSWERS.contains(&task(e).as_str())).collect();
    let columns: Vec<(String, Vec<bool>)> = families
        .iter()
        .map(|f| (f.clone(), held_out.iter().map(|e| task(e) == *f).collect()))
        .chain([("one-word answers", true), ("multi-word answers", false)].map(|(name, one)| (name.to_string(), one_word.iter().map(|&w| w == one).collect())))
        .collect();
    let header: Vec<String> = columns.iter().map(|(name, mask)| format!("{name} ({})", mask.iter().filter(|&&m| m).count())).collect();
    let mut s = format!("| row | {} |\n|{}\n", header.join(" | "), " --- |".repeat(columns.len() + 1));
    for row in rows {
        let rs = runs(outcomes, setting, row);
        if rs.is_empty() {
            continue;
        }
        let cells: Vec<String> = columns
            .iter()
            .map(|(_, mask)| {
                let wins: Vec<f64> = rs.iter().flat_map(|o| o.comparison.wins.iter().zip(mask).filter(|(_, m)| **m).map(|(&w, _)| w as f64)).collect();
                format!("{:.2}", mean(&wins))
            })
            .collect();
        s.push_str(&format!("| {row} | {} |\n", cells.join(" | ")));
    }
    s
}

/// `name = value` for every preference setting that differs from its default (the method and
/// seed, which rows vary, left out).
fn settings_changed(config: &SgpoConfig) -> Vec<String> {
    let (Ok(serde_json::Value::Object(mine)), Ok(serde_json::Value::Object(default))) =
        (serde_json::to_value(config), serde_json::to_value(SgpoConfig::default()))
    else {
        return Vec::new();
    };
    mine.into_iter()
        .filter(|(k, v)| !["method", "seed"].contains(&k.as_str()) && default.get(k) != Some(v))
        .map(|(k, v)| format!("{k} = {v}"))
        .collect()
}

fn distinct(values: impl Iterator<Item = u64>) -> usize {
    values.collect::<std::collections::BTreeSet<_>>().len()
}

/// The markdown report: per setting, the table and the per-family win rates.
pub fn report(plan: &ExperimentPlan, outcomes: &[Outcome]) -> Result<String> {
    let splits = plan.splits()?;
    let held_out = splits.held_out(plan.split);
    let outcomes: Vec<Outcome> = outcomes.iter().filter(|o| o.split == plan.split).cloned().collect();
    let rows = plan.rows();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let changed = settings_changed(&plan.sgpo);
    let reported = outcomes.iter().filter(|o| plan.settings.contains(&o.setting.as_str()));
    let mut md = format!(
        "Preference settings changed from the defaults (every row): {}.\n\nBuilt-in tasks, {} split ({} prompts; validation {}, test {}), judge-based win rate against the SFT model of the same SFT seed (ties half); {} SFT seeds x {} seeds at most (each row's runs are in its `runs` column); intervals: 95% paired bootstrap over runs and prompts. Compute is per run and after SFT (the `sft` row: SFT's own steps).\n\n",
        if changed.is_empty() { "none".to_string() } else { changed.join(", ") },
        plan.split.name(),
        held_out.len(),
        splits.validation.len(),
        splits.test.len(),
        distinct(reported.clone().map(|o| o.sft_seed)),
        distinct(reported.map(|o| o.seed))
    );
    for &setting in &plan.settings {
        md.push_str(&format!("### {setting}\n\n{}\n", table(&outcomes, setting, &rows)));
        md.push_str(&format!("Win rate against SFT by task family ({setting}):\n\n{}\n", family_table(&outcomes, setting, &rows, held_out)));
    }
    Ok(md)
}
