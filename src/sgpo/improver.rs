//! The improver role (SGPO.md, stage 1): its targets, a step from the policy's own answer
//! `y_p` toward the SFT answer `y_sft` that is discernible but not a jump, the stage's
//! training data, and the rewriting of drafts.

use crate::config::{ImproverTargets, SgpoConfig};
use crate::data::judge::{exact_match, judge, verdict};
use crate::data::{Example, TokenSeq, Tokenizer};
use crate::error::Result;
use crate::generate::{Decoder, SamplingConfig};
use crate::rng::Rng;
use crate::train::sequence_scores;

/// One step of a token-level edit script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Keep,
    Substitute,
    Delete,
    Insert,
}

/// The minimal edit script from `from` to `to`, in left-to-right order.
fn edit_script<T: PartialEq>(from: &[T], to: &[T]) -> Vec<Op> {
    let (n, m) = (from.len(), to.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for j in 0..=m {
        d[0][j] = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let sub = d[i - 1][j - 1] + usize::from(from[i - 1] != to[j - 1]);
            d[i][j] = sub.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
        }
    }
    let (mut i, mut j) = (n, m);
    let mut ops = Vec::with_capacity(n.max(m));
    while i > 0 || j > 0 {
        if i > 0 && j > 0 && d[i][j] == d[i - 1][j - 1] + usize::from(from[i - 1] != to[j - 1]) {
            ops.push(if from[i - 1] == to[j - 1] { Op::Keep } else { Op::Substitute });
            i -= 1;
            j -= 1;
        } else if i > 0 && d[i][j] == d[i - 1][j] + 1 {
            ops.push(Op::Delete);
            i -= 1;
        } else {
            ops.push(Op::Insert);
            j -= 1;
        }
    }
    ops.reverse();
    ops
}

/// How many of `n` edits a step of size `alpha` takes.
fn edits_for(alpha: f32, n: usize) -> usize {
    ((alpha.clamp(0.0, 1.0) * n as f32).ceil() as usize).min(n)
}

/// `edit:ALPHA`: apply the first `ceil(alpha * n)` of the `n` edits that turn `from` into `to`.
/// The result is exactly that many edits closer to `to`; alpha = 1 gives `to` itself.
pub fn partial_edit<T: Clone + PartialEq>(from: &[T], to: &[T], alpha: f32) -> Vec<T> {
    let ops = edit_script(from, to);
    let budget = edits_for(alpha, edit_count(&ops));
    apply_edits(from, to, &ops, |k| k < budget)
}

/// `words:ALPHA`: the same step over whitespace-separated words, with the `ceil(alpha * n)`
/// edits (at least one) drawn at random rather than from the left, joined by single spaces.
/// Whole words only, so a target never glues two numbers into one (`3 5` toward `1 3 5` gives
/// `1 3 5` or stays a word apart, never `13 5`); any k edits of a minimal script leave exactly
/// n - k, so every target is that many words closer to `to`.
pub fn word_edit(from: &str, to: &str, alpha: f32, rng: &mut Rng) -> String {
    let (from, to): (Vec<&str>, Vec<&str>) = (from.split_whitespace().collect(), to.split_whitespace().collect());
    let ops = edit_script(&from, &to);
    let n_edits = edit_count(&ops);
    let mut order: Vec<usize> = (0..n_edits).collect();
    rng.shuffle(&mut order);
    let picked = &order[..edits_for(alpha, n_edits).max(n_edits.min(1))];
    apply_edits(&from, &to, &ops, |k| picked.contains(&k)).join(" ")
}

fn edit_count(ops: &[Op]) -> usize {
    ops.iter().filter(|&&op| op != Op::Keep).count()
}

/// `from` with the edits of `ops` (the minimal script from `from` to `to`) applied where
/// `apply(k)` holds for the k-th edit (counted from the left).
fn apply_edits<T: Clone + PartialEq>(from: &[T], to: &[T], ops: &[Op], apply: impl Fn(usize) -> bool) -> Vec<T> {
    let (mut i, mut j, mut k) = (0, 0, 0);
    let mut out = Vec::with_capacity(from.len().max(to.len()));
    for &op in ops {
        let apply = op != Op::Keep && apply(k);
        if op != Op::Keep {
            k += 1;
        }
        match (op, apply) {
            (Op::Keep, _) | (Op::Substitute, false) | (Op::Delete, false) => out.push(from[i].clone()),
            (Op::Substitute, true) | (Op::Insert, true) => out.push(to[j].clone()),
            (Op::Delete, true) | (Op::Insert, false) => {}
        }
        match op {
            Op::Keep | Op::Substitute => {
                i += 1;
                j += 1;
            }
            Op::Delete => i += 1,
            Op::Insert => j += 1,
        }
    }
    out
}

/// The improver role: rewrite each draft (greedily, unless `sampling` says otherwise).
pub async fn improve(
    decoder: &Decoder<'_>,
    prompts: &[String],
    drafts: &[String],
    sampling: &SamplingConfig,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<String>> {
    let tok = decoder.tokenizer;
    let ids = prompts.iter().zip(drafts).map(|(p, d)| tok.improver_prompt(p, d)).collect::<Result<Vec<_>>>()?;
    decoder.complete(&ids, sampling, rng, progress).await
}

/// Self-consistency: `k` improvements of each draft sampled with `sampling`. Per draft, the
/// most frequent rewrite (the first drawn among equals; answers compared as the judge's exact
/// match does) and the share of the `k` that agree with it. `progress(rewrites done of
/// k * drafts, tokens)`.
pub async fn majority_improvements(
    decoder: &Decoder<'_>,
    prompts: &[String],
    drafts: &[String],
    sampling: &SamplingConfig,
    k: usize,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<(String, f32)>> {
    let mut votes: Vec<Vec<String>> = vec![Vec::with_capacity(k); prompts.len()];
    let mut tokens_before = 0;
    for round in 0..k {
        let mut tokens_now = 0;
        let round = improve(decoder, prompts, drafts, sampling, rng, &mut |done, tokens| {
            tokens_now = tokens;
            progress(round * prompts.len() + done, tokens_before + tokens)
        })
        .await?;
        tokens_before += tokens_now;
        for (v, r) in votes.iter_mut().zip(round) {
            v.push(r);
        }
    }
    Ok(votes.into_iter().map(|v| majority(&v)).collect())
}

/// The most frequent of `answers` (the first of equals) and its share.
pub fn majority(answers: &[String]) -> (String, f32) {
    let count = |a: &String| answers.iter().filter(|b| exact_match(a, b)).count();
    let best = answers.iter().fold(None::<(&String, usize)>, |best, a| {
        let n = count(a);
        if best.is_none_or(|(_, m)| n > m) { Some((a, n)) } else { best }
    });
    best.map_or((String::new(), 0.0), |(a, n)| (a.clone(), n as f32 / answers.len() as f32))
}

/// The improver's confidence in each rewrite: in the improver role, the mean log-prob per token
/// of `improved` minus that of writing `draft` back unchanged (sequences cut to `max_len`).
pub async fn improvement_margins(decoder: &Decoder<'_>, prompts: &[String], drafts: &[String], improved: &[String], max_len: usize) -> Result<Vec<f32>> {
    let tok = decoder.tokenizer;
    let mut seqs = Vec::with_capacity(2 * prompts.len());
    for ((p, d), i) in prompts.iter().zip(drafts).zip(improved) {
        seqs.push(TokenSeq::improver(tok, p, d, i)?.fit(max_len + 1));
        seqs.push(TokenSeq::improver(tok, p, d, d)?.fit(max_len + 1));
    }
    let scores = sequence_scores(decoder.model, &seqs, tok.special.pad, true, decoder.device).await?;
    Ok(scores.chunks(2).map(|s| s[0] - s[1]).collect())
}

/// The text a reference-guided improver sees as its prompt: a sentence for a chat model, the
/// terse line our own models' tokenizers were trained around otherwise.
pub fn with_reference(prompt: &str, reference: &str, chat: bool) -> String {
    if chat { format!("{prompt}\n\nA correct answer, for reference:\n{reference}") } else { format!("{prompt}\nreference answer: {reference}") }
}

/// Stage 1's training data for the improver role.
pub struct ImproverData {
    /// (prompt, draft -> target) as improver sequences.
    pub seqs: Vec<TokenSeq>,
    /// Targets against their drafts, by the judge: (better, tied, worse). Tied includes targets
    /// that copy the draft, which teach the improver to change nothing.
    pub targets_judged: [usize; 3],
}

/// Stage 1's drafts: the policy's sampled answers to the examples' prompts.
pub async fn stage1_drafts(decoder: &Decoder<'_>, examples: &[Example], config: &SgpoConfig, rng: &mut Rng) -> Result<Vec<String>> {
    let prompts: Vec<String> = examples.iter().map(|e| e.prompt.clone()).collect();
    decoder.answer(&prompts, &SamplingConfig::sampled(config.max_new_tokens, config.draft_temperature), rng).await
}

/// The first phase of `reference-trained:ALPHA`: for each example and its draft, the prompt
/// with the SFT answer in view and a target a `words:ALPHA` step from the draft toward it. An
/// improver trained on these learns to rewrite by reading the reference, as the paper's does.
pub fn reference_lessons(examples: &[Example], drafts: &[String], alpha: f32, chat: bool, rng: &mut Rng) -> Vec<(String, String)> {
    examples.iter().zip(drafts).map(|(e, d)| (with_reference(&e.prompt, &e.response, chat), word_edit(d, &e.response, alpha, rng))).collect()
}

/// Stage 1 data from the policy's `drafts` of the examples: each with a target a step closer
/// to the SFT answer (`config.improver_targets`; for `reference` and `reference-trained` the
/// decoder's model writes it with the answer in view), as improver sequences of at most
/// `max_len` tokens.
pub async fn improver_data(
    decoder: &Decoder<'_>,
    examples: &[Example],
    drafts: &[String],
    config: &SgpoConfig,
    max_len: usize,
    rng: &mut Rng,
) -> Result<ImproverData> {
    let tok = decoder.tokenizer;
    let goals: Vec<String> = match config.improver_targets {
        ImproverTargets::Sft => examples.iter().map(|e| e.response.clone()).collect(),
        ImproverTargets::Edit(alpha) => examples
            .iter()
            .zip(drafts)
            .map(|(e, d)| tok.decode(&partial_edit(&tok.encode(d)?, &tok.encode(&e.response)?, alpha)))
            .collect::<Result<_>>()?,
        ImproverTargets::Words(alpha) => examples.iter().zip(drafts).map(|(e, d)| word_edit(d, &e.response, alpha, rng)).collect(),
        ImproverTargets::Reference | ImproverTargets::ReferenceTrained(_) => {
            let guided: Vec<String> = examples.iter().map(|e| with_reference(&e.prompt, &e.response, tok.chat().is_some())).collect();
            improve(decoder, &guided, drafts, &SamplingConfig::greedy(config.max_new_tokens), rng, &mut |_, _| {}).await?
        }
    };
    let mut targets_judged = [0; 3];
    for (e, (d, g)) in examples.iter().zip(drafts.iter().zip(&goals)) {
        targets_judged[verdict(judge(g, &e.response), judge(d, &e.response))] += 1;
    }
    let rows = examples.iter().zip(drafts.iter().zip(&goals)).map(|(e, (d, g))| (e.prompt.as_str(), d.as_str(), g.as_str()));
    Ok(ImproverData { seqs: improver_seqs(tok, rows, max_len)?, targets_judged })
}

/// (prompt, draft, target) rows as improver sequences of at most `max_len` tokens (plus the
/// shifted target).
pub fn improver_seqs<'a>(tok: &Tokenizer, rows: impl Iterator<Item = (&'a str, &'a str, &'a str)>, max_len: usize) -> Result<Vec<TokenSeq>> {
    rows.map(|(prompt, draft, target)| Ok(TokenSeq::improver(tok, prompt, draft, target)?.fit(max_len + 1))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_is_the_most_frequent_answer_first_among_equals() {
        let answers = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(majority(&answers(&["1 2", "3", "1  2", "3 "])), ("1 2".to_string(), 0.5));
        assert_eq!(majority(&answers(&["a", "b", "b"])), ("b".to_string(), 2.0 / 3.0));
        assert_eq!(majority(&answers(&["a", "b"])), ("a".to_string(), 0.5));
    }
    use crate::data::judge::levenshtein as edit_distance;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn partial_edit_steps_toward_the_reference() {
        let (from, to) = (chars("1 5 3"), chars("1 3 5 9"));
        let n = edit_distance(&from, &to);
        assert!(n > 0);
        for alpha in [0.0, 0.25, 0.5, 0.75, 1.0] {
            let mid = partial_edit(&from, &to, alpha);
            let k = (alpha * n as f32).ceil() as usize;
            assert_eq!(edit_distance(&mid, &to), n - k, "alpha {alpha}");
            assert!(edit_distance(&from, &mid) <= k);
        }
        assert_eq!(partial_edit(&from, &to, 1.0), to);
        assert_eq!(partial_edit(&from, &to, 0.0), from);
        assert_eq!(partial_edit::<char>(&[], &to, 0.5).len(), 4);
        assert_eq!(partial_edit(&to, &to, 0.5), to);
    }

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn word_edits_are_whole_words_a_random_step_closer() {
        let (from, to) = ("3 5", "1 3 5");
        // The token-level step glues the inserted digit to the next number; words never do.
        assert_eq!(word_edit(from, to, 0.5, &mut Rng::new(0)), "1 3 5");
        let (from, to) = ("the   cat sat on mat", "a cat sat on the red mat today");
        let n = edit_distance(&words(from), &words(to));
        assert_eq!(n, 4);
        let vocabulary: Vec<&str> = words(from).into_iter().chain(words(to)).collect();
        let mut first_edit_skipped = false;
        for seed in 0..20 {
            for alpha in [0.01, 0.25, 0.5, 1.0] {
                let mid = word_edit(from, to, alpha, &mut Rng::new(seed));
                let k = ((alpha * n as f32).ceil() as usize).max(1);
                assert_eq!(mid, words(&mid).join(" "), "single spaces, no stray ones: {mid:?}");
                assert!(words(&mid).iter().all(|w| vocabulary.contains(w)), "{mid:?}");
                assert_eq!(edit_distance(&words(&mid), &words(to)), n - k, "alpha {alpha}: {mid:?}");
                assert_eq!(edit_distance(&words(from), &words(&mid)), k, "alpha {alpha}: {mid:?}");
                first_edit_skipped |= k == 1 && words(&mid)[0] == "the";
            }
        }
        assert!(first_edit_skipped, "edits are drawn at random, not always the leftmost");
        assert_eq!(word_edit(to, to, 0.5, &mut Rng::new(1)), to);
        assert_eq!(word_edit("", "a b", 0.5, &mut Rng::new(1)), "a");
    }

    #[test]
    fn reference_lessons_show_the_answer_and_step_toward_it_in_whole_words() {
        let example = |prompt: &str, response: &str| Example { prompt: prompt.into(), response: response.into(), task: None };
        let examples = [example("sort: 3 1 2", "1 2 3"), example("reverse: a b c d", "d c b a"), example("max: 4 9", "9")];
        let drafts: Vec<String> = ["3 1 2", "a b c d", "9"].map(String::from).into();
        for chat in [false, true] {
            let lessons = reference_lessons(&examples, &drafts, 0.5, chat, &mut Rng::new(3));
            assert_eq!(lessons.len(), 3);
            for ((prompt, target), (e, d)) in lessons.iter().zip(examples.iter().zip(&drafts)) {
                assert!(prompt.starts_with(&e.prompt) && prompt.ends_with(&e.response), "{prompt:?}");
                let n = edit_distance(&words(d), &words(&e.response));
                let k = ((0.5 * n as f32).ceil() as usize).max(n.min(1));
                assert_eq!(edit_distance(&words(target), &words(&e.response)), n - k, "{d:?} -> {target:?}");
                assert_eq!(target, &words(target).join(" "));
            }
            // A right draft is its own target: the improver learns to keep it.
            assert_eq!(lessons[2].1, "9");
        }
    }
}
