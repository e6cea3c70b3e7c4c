//! The improver role (SGPO.md, stage 1): its targets, a step from the policy's own answer
//! `y_p` toward the SFT answer `y_sft` that is discernible but not a jump, the stage's
//! training data, and the rewriting of drafts.

use crate::config::{ImproverTargets, SgpoConfig};
use crate::data::{Example, TokenSeq};
use crate::error::Result;
use crate::generate::{Decoder, SamplingConfig};
use crate::rng::Rng;

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

/// `edit:ALPHA`: apply the first `ceil(alpha * n)` of the `n` edits that turn `from` into `to`.
/// The result is exactly that many edits closer to `to`; alpha = 1 gives `to` itself.
pub fn partial_edit<T: Clone + PartialEq>(from: &[T], to: &[T], alpha: f32) -> Vec<T> {
    let ops = edit_script(from, to);
    let n_edits = ops.iter().filter(|&&op| op != Op::Keep).count();
    let mut budget = ((alpha.clamp(0.0, 1.0) * n_edits as f32).ceil() as usize).min(n_edits);
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(from.len().max(to.len()));
    for op in ops {
        let apply = op != Op::Keep && budget > 0;
        if apply {
            budget -= 1;
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

/// The improver role: rewrite each draft, greedily.
pub async fn improve(
    decoder: &Decoder<'_>,
    prompts: &[String],
    drafts: &[String],
    max_new_tokens: usize,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<String>> {
    let tok = decoder.tokenizer;
    let ids = prompts.iter().zip(drafts).map(|(p, d)| tok.improver_prompt(p, d)).collect::<Result<Vec<_>>>()?;
    decoder.complete(&ids, &SamplingConfig::greedy(max_new_tokens), rng, progress).await
}

/// The text a reference-guided improver sees as its prompt.
fn with_reference(prompt: &str, reference: &str) -> String {
    format!("{prompt}\nreference answer: {reference}")
}

/// Stage 1 data: the policy's own drafts, each with a target a step closer to the SFT answer
/// (`config.improver_targets`), as improver sequences of at most `max_len` tokens.
pub async fn improver_data(
    decoder: &Decoder<'_>,
    examples: &[Example],
    config: &SgpoConfig,
    max_len: usize,
    rng: &mut Rng,
) -> Result<Vec<TokenSeq>> {
    let tok = decoder.tokenizer;
    let prompts: Vec<String> = examples.iter().map(|e| e.prompt.clone()).collect();
    let sampling = SamplingConfig::sampled(config.max_new_tokens, config.draft_temperature);
    let drafts = decoder.answer(&prompts, &sampling, rng).await?;
    let goals: Vec<String> = match config.improver_targets {
        ImproverTargets::Sft => examples.iter().map(|e| e.response.clone()).collect(),
        ImproverTargets::Edit(alpha) => examples
            .iter()
            .zip(&drafts)
            .map(|(e, d)| tok.decode(&partial_edit(&tok.encode(d)?, &tok.encode(&e.response)?, alpha)))
            .collect::<Result<_>>()?,
        ImproverTargets::Reference => {
            let guided: Vec<String> = examples.iter().map(|e| with_reference(&e.prompt, &e.response)).collect();
            improve(decoder, &guided, &drafts, config.max_new_tokens, rng, &mut |_, _| {}).await?
        }
    };
    examples
        .iter()
        .zip(drafts.iter().zip(&goals))
        .map(|(e, (d, g))| Ok(TokenSeq::improver(tok, &e.prompt, d, g)?.fit(max_len + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
