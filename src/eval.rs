//! Held-out evaluation: greedy answers, scored by the judge against the reference answers.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::error::Result;
use crate::generate::{SamplingConfig, generate};
use crate::metrics::{EvalSummary, TaskScore};
use crate::model::Model;
use crate::rng::Rng;
use crate::tasks::{exact_match, judge};
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub prompt: String,
    pub reference: String,
    pub response: String,
    pub score: f32,
    pub exact: bool,
    pub task: String,
}

/// Continue every prompt (token ids in any role), `batch_size` at a time, and decode.
/// `progress(rows done, tokens generated)` is called after each batch.
#[allow(clippy::too_many_arguments)]
pub async fn complete(
    model: &Model,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    sampling: &SamplingConfig,
    batch_size: usize,
    rng: &mut Rng,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(prompts.len());
    let mut generated = 0;
    let s = tok.special;
    for chunk in prompts.chunks(batch_size.max(1)) {
        for tokens in generate(model, chunk, sampling, s.end, s.pad, rng, true, device).await? {
            generated += tokens.len();
            out.push(tok.decode(&tokens)?);
        }
        progress(out.len(), generated);
    }
    Ok(out)
}

/// Answers for `prompts` in the policy role.
pub async fn answer(
    model: &Model,
    tok: &Tokenizer,
    prompts: &[String],
    sampling: &SamplingConfig,
    batch_size: usize,
    rng: &mut Rng,
    device: &Device,
) -> Result<Vec<String>> {
    let ids = prompts.iter().map(|p| tok.policy_prompt(p)).collect::<Result<Vec<_>>>()?;
    complete(model, tok, &ids, sampling, batch_size, rng, device, &mut |_, _| {}).await
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

/// Score `model` on `examples` (which carry reference answers).
pub async fn evaluate(
    model: &Model,
    tok: &Tokenizer,
    examples: &[Example],
    max_new_tokens: usize,
    step: usize,
    device: &Device,
) -> Result<(EvalSummary, Vec<Scored>)> {
    let prompts: Vec<String> = examples.iter().map(|e| e.prompt.clone()).collect();
    let mut rng = Rng::new(0);
    let responses = answer(model, tok, &prompts, &SamplingConfig::greedy(max_new_tokens), 64, &mut rng, device).await?;
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
