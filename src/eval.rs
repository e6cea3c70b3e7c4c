//! Held-out evaluation: greedy answers scored by the judge against the reference answers, and
//! the judge-based win rate of one model against another.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::judge::{exact_match, judge};
use crate::data::{Example, Tokenizer};
use crate::error::Result;
use crate::generate::Decoder;
use crate::metrics::{EvalSummary, TaskScore};
use crate::model::Model;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub prompt: String,
    pub reference: String,
    pub response: String,
    pub score: f32,
    pub exact: bool,
    pub task: String,
}

pub fn summarize(step: usize, scored: &[Scored]) -> EvalSummary {
    let mean = |xs: &[&Scored]| {
        let n = xs.len().max(1) as f32;
        (xs.iter().map(|s| s.score).sum::<f32>() / n, xs.iter().filter(|s| s.exact).count() as f32 / n)
    };
    let mut tasks: Vec<String> = scored.iter().map(|s| s.task.clone()).collect();
    tasks.sort();
    tasks.dedup();
    let per_task = tasks
        .into_iter()
        .map(|task| {
            let xs: Vec<&Scored> = scored.iter().filter(|s| s.task == task).collect();
            let (mean_score, exact_match) = mean(&xs);
            TaskScore { task, n: xs.len(), mean_score, exact_match }
        })
        .collect();
    let all: Vec<&Scored> = scored.iter().collect();
    let (mean_score, exact_match) = mean(&all);
    EvalSummary { step, mean_score, exact_match, n: scored.len(), per_task }
}

/// Greedy answers of `model` to the prompts of `examples`.
pub async fn answers(model: &Model, tokenizer: &Tokenizer, examples: &[Example], max_new: usize, device: &Device) -> Result<Vec<String>> {
    let prompts: Vec<String> = examples.iter().map(|e| e.prompt.clone()).collect();
    Decoder::new(model, tokenizer, device).greedy_answers(&prompts, max_new).await
}

/// Score the decoder's model on `examples` (which carry reference answers).
pub async fn evaluate(decoder: &Decoder<'_>, examples: &[Example], max_new_tokens: usize, step: usize) -> Result<(EvalSummary, Vec<Scored>)> {
    let prompts: Vec<String> = examples.iter().map(|e| e.prompt.clone()).collect();
    let responses = decoder.greedy_answers(&prompts, max_new_tokens).await?;
    let scored: Vec<Scored> = examples
        .iter()
        .zip(responses)
        .map(|(e, response)| Scored {
            score: judge(&response, &e.response),
            exact: exact_match(&response, &e.response),
            prompt: e.prompt.clone(),
            reference: e.response.clone(),
            response,
            task: e.task.clone().unwrap_or_else(|| "data".into()),
        })
        .collect();
    Ok((summarize(step, &scored), scored))
}

/// A plain-text table of an evaluation.
pub fn table(summary: &EvalSummary) -> String {
    let mut s = format!("{:<10} {:>5} {:>11} {:>12}\n", "task", "n", "mean_score", "exact_match");
    for t in &summary.per_task {
        s.push_str(&format!("{:<10} {:>5} {:>11.3} {:>12.3}\n", t.task, t.n, t.mean_score, t.exact_match));
    }
    s.push_str(&format!("{:<10} {:>5} {:>11.3} {:>12.3}\n", "all", summary.n, summary.mean_score, summary.exact_match));
    s
}

/// A policy against a baseline on held-out examples, prompt by prompt.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Comparison {
    /// The policy's judge score per prompt.
    pub scores: Vec<f32>,
    /// Per prompt: 1 when the judge scores the policy's answer above the baseline's, 0.5 on a
    /// tie, 0 below.
    pub wins: Vec<f32>,
}

impl Comparison {
    /// Judge both answers to each example against its reference.
    pub fn of(examples: &[Example], mine: &[String], theirs: &[String]) -> Self {
        let mut c = Self::default();
        for ((e, a), b) in examples.iter().zip(mine).zip(theirs) {
            let (sa, sb) = (judge(a, &e.response), judge(b, &e.response));
            c.scores.push(sa);
            c.wins.push(if sa > sb { 1.0 } else if sa == sb { 0.5 } else { 0.0 });
        }
        c
    }

    /// Share of prompts won, ties half.
    pub fn win_rate(&self) -> f32 {
        mean(&self.wins)
    }

    pub fn mean_score(&self) -> f32 {
        mean(&self.scores)
    }
}

fn mean(xs: &[f32]) -> f32 {
    xs.iter().sum::<f32>() / xs.len().max(1) as f32
}
