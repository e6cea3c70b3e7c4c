//! Stage 2's pairs, for each method side by side: SGPO (the policy drafts, the same model
//! improves the draft), SPIN (the SFT answer over the draft) and DPO (fixed pairs).

use serde::{Deserialize, Serialize};

use super::improver::{improve, improvement_margins, majority_improvements};
use crate::config::{Method, PairFilter, SgpoConfig};
use crate::data::PreferencePair;
use crate::data::judge::{exact_match, judge, verdict};
use crate::error::Result;
use crate::generate::{Decoder, SamplingConfig};
use crate::metrics::{Event, Progress, now_seconds, rate};
use crate::rng::Rng;

/// A prompt, with its SFT answer where one is known.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptItem {
    pub prompt: String,
    pub reference: Option<String>,
}

/// A preference pair, with the judge's reference answer when there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub reference: Option<String>,
}

impl Pair {
    /// As TRL reads it.
    pub fn to_trl(&self) -> PreferencePair {
        PreferencePair { prompt: self.prompt.clone(), chosen: self.chosen.clone(), rejected: self.rejected.clone() }
    }
}

/// The pairs of one iteration.
#[derive(Debug, Clone, Default)]
pub struct PairSet {
    pub pairs: Vec<Pair>,
    /// Candidates dropped because chosen == rejected (no discernible improvement).
    pub unchanged: usize,
    /// Kept pairs whose chosen answer is empty.
    pub empty_chosen: usize,
    /// Changed drafts the pair filter (`pair_filter`) dropped.
    pub filtered: usize,
    /// Drafts made (each prompt's samples and, with `greedy_draft`, its greedy answer).
    pub candidates: usize,
    /// Among kept pairs, how often the chosen answer is the policy's own greedy answer: pairs
    /// that can sharpen the sampling distribution but not move greedy decoding.
    pub chosen_is_greedy: Option<f32>,
    /// Kept pairs with a reference: the judge rates chosen better, the same, worse.
    pub judged: Option<[usize; 3]>,
    pub improver_win_rate: Option<f32>,
    /// The first few candidates, kept or not, with the judge's scores where there is a
    /// reference (for the UI).
    pub samples: Vec<Candidate>,
    /// Tokens the model generated (drafts and improvements).
    pub generated_tokens: usize,
}

/// A draft and the answer preferred over it, as the judge sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub prompt: String,
    pub draft: String,
    pub improved: String,
    pub draft_score: Option<f32>,
    pub improved_score: Option<f32>,
}

/// Candidates kept per iteration for the sample table.
const SAMPLES_PER_ITERATION: usize = 8;


/// Stage 2, one iteration's pairs. For SGPO: the policy samples a draft, the same model
/// improves it, and (improved, draft) is a pair unless nothing changed or `cfg.pair_filter`
/// drops it. `max_len` bounds the sequences the confidence filter scores.
#[allow(clippy::too_many_arguments)]
pub async fn build_pairs(
    decoder: &Decoder<'_>,
    items: &[PromptItem],
    fixed: &[PreferencePair],
    cfg: &SgpoConfig,
    max_len: usize,
    iteration: usize,
    rng: &mut Rng,
    on_event: &mut dyn FnMut(Event),
) -> Result<PairSet> {
    let method = cfg.method;
    if method == Method::Dpo {
        let pairs = fixed
            .iter()
            .map(|p| Pair { prompt: p.prompt.clone(), chosen: p.chosen.clone(), rejected: p.rejected.clone(), reference: None })
            .collect();
        return Ok(PairSet { pairs, ..PairSet::default() });
    }
    let items: Vec<&PromptItem> = items.iter().filter(|i| method == Method::Sgpo || i.reference.is_some()).collect();
    let ids = items.iter().map(|i| decoder.tokenizer.policy_prompt(&i.prompt)).collect::<Result<Vec<_>>>()?;
    let report = |stage: &'static str, total: usize| {
        let started = now_seconds();
        move |done: usize, tokens: usize| Progress { stage: stage.to_string(), iteration, done, total, tokens_per_s: rate(tokens, started) }
    };
    // Drafts: `drafts_per_prompt` samples of every prompt, then (with `greedy_draft`) the
    // greedy answer when no sample already equals it. `owner[c]`: candidate c's item.
    let sampling = SamplingConfig::sampled(cfg.max_new_tokens, cfg.draft_temperature);
    let mut owner: Vec<usize> = (0..cfg.drafts_per_prompt).flat_map(|_| 0..items.len()).collect();
    let repeated: Vec<Vec<u32>> = owner.iter().map(|&i| ids[i].clone()).collect();
    let mut generated = [0usize; 3];
    let progress = report("generating", repeated.len());
    let mut drafts = decoder.complete(&repeated, &sampling, rng, &mut |d, t| {
        generated[0] = t;
        on_event(Event::Progress(progress(d, t)))
    })
    .await?;
    // The policy's own greedy answers: a draft source, and the yardstick of how often the
    // chosen answer is just what the policy would say anyway.
    let progress = report("greedy answers", items.len());
    let greedy = decoder.complete(&ids, &SamplingConfig::greedy(cfg.max_new_tokens), rng, &mut |d, t| {
        generated[2] = t;
        on_event(Event::Progress(progress(d, t)))
    })
    .await?;
    if cfg.greedy_draft {
        // Item i's samples are candidates i, i + n, i + 2n, ...
        for (i, answer) in greedy.iter().enumerate() {
            if !(0..cfg.drafts_per_prompt).any(|k| exact_match(&drafts[k * items.len() + i], answer)) {
                owner.push(i);
                drafts.push(answer.clone());
            }
        }
    }
    let prompts: Vec<String> = owner.iter().map(|&i| items[i].prompt.clone()).collect();
    // Per candidate: the chosen answer, and whether the label-free filter keeps it.
    let (chosen, keep): (Vec<String>, Vec<bool>) = match (method, cfg.pair_filter) {
        (Method::Sgpo, PairFilter::Majority { k, share }) => {
            let progress = report("improving", prompts.len() * k);
            let votes = majority_improvements(decoder, &prompts, &drafts, &sampling, k, rng, &mut |d, t| {
                generated[1] = t;
                on_event(Event::Progress(progress(d, t)))
            })
            .await?;
            votes.into_iter().map(|(answer, agreed)| (answer, agreed >= share)).unzip()
        }
        (Method::Sgpo, filter) => {
            let progress = report("improving", prompts.len() * cfg.improvement_passes);
            let mut improved = drafts.clone();
            for pass in 0..cfg.improvement_passes {
                let before = generated[1];
                improved = improve(decoder, &prompts, &improved, &SamplingConfig::greedy(cfg.max_new_tokens), rng, &mut |d, t| {
                    generated[1] = before + t;
                    on_event(Event::Progress(progress(pass * prompts.len() + d, before + t)))
                })
                .await?;
            }
            let keep = match filter {
                PairFilter::Confidence(margin) => {
                    improvement_margins(decoder, &prompts, &drafts, &improved, max_len).await?.into_iter().map(|m| m >= margin).collect()
                }
                _ => vec![true; improved.len()],
            };
            (improved, keep)
        }
        _ => (owner.iter().map(|&i| items[i].reference.clone().unwrap_or_default()).collect(), vec![true; owner.len()]),
    };
    // The greedy answers are a measurement unless they are drafts; evaluation is not counted.
    let greedy_tokens = if cfg.greedy_draft { generated[2] } else { 0 };
    let mut set = PairSet { candidates: owner.len(), generated_tokens: generated[0] + generated[1] + greedy_tokens, ..PairSet::default() };
    let (mut wins, mut judged, mut chosen_greedy) = (0usize, 0usize, 0usize);
    let judge_filter = method == Method::Sgpo && cfg.pair_filter == PairFilter::Judge;
    for (((&i, draft), better), kept) in owner.iter().zip(drafts).zip(chosen).zip(keep) {
        let item = items[i];
        let scores = item.reference.as_ref().map(|r| (judge(&draft, r), judge(&better, r)));
        if let Some((d, b)) = scores {
            judged += 1;
            wins += usize::from(b > d);
        }
        if set.samples.len() < SAMPLES_PER_ITERATION {
            set.samples.push(Candidate {
                prompt: item.prompt.clone(),
                draft: draft.clone(),
                improved: better.clone(),
                draft_score: scores.map(|s| s.0),
                improved_score: scores.map(|s| s.1),
            });
        }
        if exact_match(&better, &draft) {
            set.unchanged += 1;
        } else if !kept || judge_filter && !scores.is_some_and(|(d, b)| b > d) {
            set.filtered += 1;
        } else {
            set.empty_chosen += usize::from(better.trim().is_empty());
            chosen_greedy += usize::from(exact_match(&better, &greedy[i]));
            if let Some((d, b)) = scores {
                let counts = set.judged.get_or_insert([0; 3]);
                counts[verdict(b, d)] += 1;
            }
            set.pairs.push(Pair { prompt: item.prompt.clone(), chosen: better, rejected: draft, reference: item.reference.clone() });
        }
    }
    set.improver_win_rate = (judged > 0).then(|| wins as f32 / judged as f32);
    set.chosen_is_greedy = (!set.pairs.is_empty()).then(|| chosen_greedy as f32 / set.pairs.len() as f32);
    Ok(set)
}

/// Pairs as TRL's preference JSONL (`prompt`, `chosen`, `rejected` per line).
pub fn trl_jsonl(pairs: &[Pair]) -> String {
    pairs.iter().map(|p| serde_json::to_string(&p.to_trl()).expect("pairs serialise") + "\n").collect()
}
