//! Typed metric events, one source of truth for their names (TRL's, so users can compare).
//! The CLI appends them to `metrics.jsonl`; the browser plots them.

use serde::{Deserialize, Serialize};

/// One optimiser step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainStep {
    pub stage: String,
    pub step: usize,
    pub loss: f32,
    pub lr: f64,
    pub grad_norm: f32,
    /// Non-pad tokens processed by this step.
    pub tokens: usize,
    /// Over the steps read back together with this one (they overlap on the device).
    #[serde(rename = "tokens/s")]
    pub tokens_per_s: f32,
}

/// A held-out evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    pub step: usize,
    pub mean_score: f32,
    pub exact_match: f32,
    pub n: usize,
    pub per_task: Vec<TaskScore>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskScore {
    pub task: String,
    pub n: usize,
    pub mean_score: f32,
    pub exact_match: f32,
}

/// One DPO step on preference pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DpoStep {
    pub stage: String,
    pub iteration: usize,
    pub step: usize,
    pub loss: f32,
    #[serde(rename = "rewards/chosen")]
    pub rewards_chosen: f32,
    #[serde(rename = "rewards/rejected")]
    pub rewards_rejected: f32,
    #[serde(rename = "rewards/margins")]
    pub rewards_margins: f32,
    #[serde(rename = "rewards/accuracies")]
    pub rewards_accuracies: f32,
    #[serde(rename = "logps/chosen")]
    pub logps_chosen: f32,
    #[serde(rename = "logps/rejected")]
    pub logps_rejected: f32,
    pub grad_norm: f32,
    pub lr: f64,
    pub tokens: usize,
    /// Over the steps read back together with this one (they overlap on the device).
    #[serde(rename = "tokens/s")]
    pub tokens_per_s: f32,
}

/// What one preference iteration built and achieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationSummary {
    pub iteration: usize,
    /// Optimiser steps taken so far in the preference stage.
    pub step: usize,
    pub prompts: usize,
    /// Drafts made from those prompts (more than one per prompt with `drafts_per_prompt` or
    /// `greedy_draft`): what kept, unchanged and filtered pairs add up to.
    #[serde(default)]
    pub candidates: usize,
    pub pairs_built: usize,
    pub pairs_unchanged: usize,
    /// Kept pairs whose chosen answer is empty.
    #[serde(default)]
    pub pairs_empty_chosen: usize,
    /// Changed drafts the pair filter dropped.
    #[serde(default)]
    pub pairs_filtered: usize,
    /// Among kept pairs, the share whose chosen answer is the policy's own greedy answer.
    #[serde(default)]
    pub chosen_is_greedy: Option<f32>,
    /// Tokens the run has generated for training data so far (stage 1 and pairs).
    #[serde(default)]
    pub generated_tokens: usize,
    /// Kept pairs with a reference, by what the judge says of chosen against rejected
    /// (better, tied, worse): how many of the pairs DPO trains on point the right way.
    #[serde(default)]
    pub pairs_judged: Option<[usize; 3]>,
    /// After stage 1: its improver targets against their drafts, by the judge (better, tied,
    /// worse); tied includes targets that copy the draft.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub improver_targets_judged: Option<[usize; 3]>,
    /// Share of judged pairs where judge(improved) > judge(draft); None without references.
    pub improver_win_rate: Option<f32>,
    /// Held-out win rate of the policy against the SFT model, ties half.
    pub policy_win_rate_vs_sft: Option<f32>,
    pub mean_score: Option<f32>,
    /// Generation throughput while building the pairs.
    #[serde(rename = "tokens/s")]
    pub tokens_per_s: f32,
}

impl IterationSummary {
    /// Nothing built or measured yet.
    pub fn empty(iteration: usize, step: usize) -> Self {
        Self {
            iteration,
            step,
            prompts: 0,
            candidates: 0,
            pairs_built: 0,
            pairs_unchanged: 0,
            pairs_empty_chosen: 0,
            pairs_filtered: 0,
            chosen_is_greedy: None,
            generated_tokens: 0,
            pairs_judged: None,
            improver_targets_judged: None,
            improver_win_rate: None,
            policy_win_rate_vs_sft: None,
            mean_score: None,
            tokens_per_s: 0.0,
        }
    }
}

/// Progress inside a long unit of work (building an iteration's pairs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// `generating` (the policy's drafts) or `improving` (the improver's rewrites).
    pub stage: String,
    pub iteration: usize,
    pub done: usize,
    pub total: usize,
    #[serde(rename = "tokens/s")]
    pub tokens_per_s: f32,
}

/// A draft and its improvement, for the UI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub iteration: usize,
    pub step: usize,
    pub prompt: String,
    pub draft: String,
    pub improved: String,
    pub draft_score: Option<f32>,
    pub improved_score: Option<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Train(TrainStep),
    Eval(EvalSummary),
    Dpo(DpoStep),
    Iteration(IterationSummary),
    Sample(Sample),
    Progress(Progress),
}

impl Event {
    pub fn step(&self) -> usize {
        match self {
            Event::Train(t) => t.step,
            Event::Eval(e) => e.step,
            Event::Dpo(d) => d.step,
            Event::Iteration(i) => i.step,
            Event::Sample(s) => s.step,
            Event::Progress(_) => 0,
        }
    }
}

/// Seconds on a monotonic-enough clock, on every platform.
pub fn now_seconds() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now() / 1000.0
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
    }
}

/// Items per second since `started` (a [`now_seconds`] reading).
pub fn rate(items: usize, started: f64) -> f32 {
    (items as f64 / (now_seconds() - started).max(1e-9)) as f32
}
