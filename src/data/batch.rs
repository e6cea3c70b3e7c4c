//! Token sequences and the padded batches the model trains on.

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::{Example, Tokenizer};
use crate::error::Result;

/// A prompt followed by its response; only response tokens are learned from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSeq {
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
}

impl TokenSeq {
    pub fn new(prompt: Vec<u32>, response: Vec<u32>) -> Self {
        let prompt_len = prompt.len();
        let mut tokens = prompt;
        tokens.extend(response);
        Self { tokens, prompt_len }
    }

    /// Policy role: `<|user|> x <|assistant|> y <|end|>`.
    pub fn policy(tok: &Tokenizer, prompt: &str, response: &str) -> Result<Self> {
        Ok(Self::new(tok.policy_prompt(prompt)?, tok.response(response)?))
    }

    /// Improver role: `<|user|> x <|draft|> y <|improved|> y' <|end|>`.
    pub fn improver(tok: &Tokenizer, prompt: &str, draft: &str, improved: &str) -> Result<Self> {
        Ok(Self::new(tok.improver_prompt(prompt, draft)?, tok.response(improved)?))
    }

    /// Keep at most `max_len` tokens, cutting the prompt's head first so the answer survives.
    pub fn fit(mut self, max_len: usize) -> Self {
        if self.tokens.len() > max_len {
            let cut = (self.tokens.len() - max_len).min(self.prompt_len);
            self.tokens.drain(..cut);
            self.prompt_len -= cut;
            self.tokens.truncate(max_len);
        }
        self
    }
}

pub fn policy_seqs(tok: &Tokenizer, examples: &[Example], max_len: usize) -> Result<Vec<TokenSeq>> {
    examples
        .iter()
        .map(|e| Ok(TokenSeq::policy(tok, &e.prompt, &e.response)?.fit(max_len + 1)))
        .collect()
}

/// Right-padded next-token batch: `inputs[t]` predicts `targets[t]`; `mask` is 1 where the
/// target is a response token.
#[derive(Debug, Clone)]
pub struct Batch {
    pub inputs: Tensor<2, Int>,
    pub targets: Tensor<2, Int>,
    pub mask: Tensor<2>,
    /// Response tokens, the denominator of the mean loss.
    pub n_targets: usize,
    /// Non-pad input tokens, for throughput.
    pub n_tokens: usize,
    /// Response tokens per row (IPO's length normalisation).
    pub row_targets: Vec<usize>,
}

impl Batch {
    pub fn new(seqs: &[&TokenSeq], pad: u32, device: &Device) -> Self {
        let b = seqs.len();
        let t = seqs.iter().map(|s| s.tokens.len().saturating_sub(1)).max().unwrap_or(1).max(1);
        let mut inputs = vec![pad as i32; b * t];
        let mut targets = vec![pad as i32; b * t];
        let mut mask = vec![0.0f32; b * t];
        let (mut n_targets, mut n_tokens) = (0, 0);
        let mut row_targets = vec![0; b];
        for (row, s) in seqs.iter().enumerate() {
            let n = s.tokens.len().saturating_sub(1);
            n_tokens += n;
            for i in 0..n {
                inputs[row * t + i] = s.tokens[i] as i32;
                targets[row * t + i] = s.tokens[i + 1] as i32;
                if i + 1 >= s.prompt_len {
                    mask[row * t + i] = 1.0;
                    row_targets[row] += 1;
                }
            }
            n_targets += row_targets[row];
        }
        Self {
            inputs: Tensor::from_data(TensorData::new(inputs, [b, t]), device),
            targets: Tensor::from_data(TensorData::new(targets, [b, t]), device),
            mask: Tensor::from_data(TensorData::new(mask, [b, t]), device),
            n_targets,
            n_tokens,
            row_targets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_masks_prompt_and_padding() {
        let device = Device::flex();
        let a = TokenSeq::new(vec![1, 2], vec![3, 4]);
        let b = TokenSeq::new(vec![5], vec![6]);
        let batch = Batch::new(&[&a, &b], 0, &device);
        assert_eq!(batch.inputs.dims(), [2, 3]);
        let mask: Vec<f32> = batch.mask.into_data().iter::<f32>().collect();
        // a: targets 2 (prompt), 3, 4 (response); b: target 6 (response), then padding.
        assert_eq!(mask, vec![0.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        let targets: Vec<i64> = batch.targets.into_data().iter::<i64>().collect();
        assert_eq!(targets, vec![2, 3, 4, 6, 0, 0]);
        assert_eq!((batch.n_targets, batch.n_tokens), (3, 4));
        assert_eq!(batch.row_targets, vec![2, 1]);
    }

    #[test]
    fn fit_cuts_the_prompt_first() {
        let s = TokenSeq::new(vec![1, 2, 3, 4], vec![5, 6]).fit(4);
        assert_eq!(s.tokens, vec![3, 4, 5, 6]);
        assert_eq!(s.prompt_len, 2);
    }
}
