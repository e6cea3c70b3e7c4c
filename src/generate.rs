//! Decoding: batched sampling with a KV cache (temperature, top-k, top-p, stop at `<|end|>`,
//! seeded), and the decoding context the rest of the engine generates text through.
//! Prompts are left-padded so every row's next token sits in the last column; padding is
//! hidden from attention by the bias. Sampling happens on the host from the last logits, so
//! the same seed draws the same tokens on every backend.

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::Tokenizer;
use crate::error::Result;
use crate::model::{KvCache, Model, padded_bias};
use crate::readback;
use crate::rng::Rng;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 keeps every token.
    pub top_k: usize,
    /// 1 keeps every token.
    pub top_p: f32,
}

impl SamplingConfig {
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self { max_new_tokens, temperature: 0.0, top_k: 0, top_p: 1.0 }
    }

    /// Plain sampling at `temperature` from the whole vocabulary.
    pub fn sampled(max_new_tokens: usize, temperature: f32) -> Self {
        Self { max_new_tokens, temperature, top_k: 0, top_p: 1.0 }
    }
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self { max_new_tokens: 48, temperature: 1.0, top_k: 0, top_p: 1.0 }
    }
}

/// Draw one token id from `logits` (one row).
pub fn sample(logits: &[f32], cfg: &SamplingConfig, rng: &mut Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best })
            .0 as u32
    };
    if cfg.temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| (i as u32, ((x - max) / cfg.temperature).exp()))
        .collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if cfg.top_k > 0 {
        probs.truncate(cfg.top_k);
    }
    if cfg.top_p < 1.0 {
        let total: f32 = probs.iter().map(|p| p.1).sum();
        let mut cum = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                cum += p.1 / total;
                cum >= cfg.top_p
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
    }
    let total: f32 = probs.iter().map(|p| p.1).sum();
    let mut u = rng.next_f32() * total;
    for &(id, p) in &probs {
        if u < p {
            return id;
        }
        u -= p;
    }
    probs.last().map_or_else(argmax, |p| p.0)
}

fn int_tensor(rows: &[Vec<u32>], device: &Device) -> Tensor<2, Int> {
    let (b, t) = (rows.len(), rows[0].len());
    let flat: Vec<i32> = rows.iter().flatten().map(|&x| x as i32).collect();
    Tensor::from_data(TensorData::new(flat, [b, t]), device)
}

/// The last position's logits of every row, on the host.
async fn last_logits(logits: Tensor<3>) -> Result<Vec<Vec<f32>>> {
    let [b, t, v] = logits.dims();
    let flat = readback::floats(logits.narrow(1, t - 1, 1).reshape([b, v])).await?;
    Ok(flat.chunks(v).map(|c| c.to_vec()).collect())
}

/// The token that ends an answer, and the one that fills rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub end: u32,
    pub pad: u32,
}

impl Stop {
    pub fn of(tokenizer: &Tokenizer) -> Self {
        Self { end: tokenizer.special.end, pad: tokenizer.special.pad }
    }
}

/// Continue every prompt until `stop.end` or `max_new_tokens`. Returns the new tokens of each
/// row, without the end token. `use_cache = false` recomputes the whole prefix at every step
/// (the reference the cache is checked against, and the baseline of the benchmark).
pub async fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
    stop: Stop,
    rng: &mut Rng,
    use_cache: bool,
    device: &Device,
) -> Result<Vec<Vec<u32>>> {
    let Stop { end, pad } = stop;
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    // Keep the tail of over-long prompts so prompt + answer fit the model's context.
    let room = model.max_seq_len().saturating_sub(cfg.max_new_tokens).max(1);
    let prompts: Vec<&[u32]> = prompts.iter().map(|p| &p[p.len().saturating_sub(room)..]).collect();
    let width = prompts.iter().map(|p| p.len()).max().unwrap_or(1).max(1);
    let mut seqs: Vec<Vec<u32>> = Vec::with_capacity(prompts.len());
    let mut valid: Vec<Vec<bool>> = Vec::with_capacity(prompts.len());
    for p in &prompts {
        let padding = width - p.len();
        seqs.push(std::iter::repeat_n(pad, padding).chain(p.iter().copied()).collect());
        valid.push(std::iter::repeat_n(false, padding).chain(std::iter::repeat_n(true, p.len())).collect());
    }
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut done = vec![false; prompts.len()];
    let mut cache = KvCache::default();

    let mut logits = if use_cache {
        model.forward(int_tensor(&seqs, device), padded_bias(&valid, width, device), Some(&mut cache))
    } else {
        model.forward(int_tensor(&seqs, device), padded_bias(&valid, width, device), None)
    };
    for _ in 0..cfg.max_new_tokens {
        let rows = last_logits(logits).await?;
        let mut next = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let token = if done[i] { pad } else { sample(row, cfg, rng) };
            if !done[i] {
                if token == end {
                    done[i] = true;
                } else {
                    out[i].push(token);
                }
            }
            next.push(token);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        for (i, seq) in seqs.iter_mut().enumerate() {
            seq.push(next[i]);
            valid[i].push(next[i] != pad);
        }
        let len = seqs[0].len();
        logits = if use_cache {
            let step: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
            model.forward(int_tensor(&step, device), padded_bias(&valid, 1, device), Some(&mut cache))
        } else {
            model.forward(int_tensor(&seqs, device), padded_bias(&valid, len, device), None)
        };
    }
    Ok(out)
}

/// Rows decoded at once unless a caller says otherwise.
pub const DECODE_BATCH: usize = 64;

/// What decoding text needs besides the prompts: the model, its tokenizer, the device, and how
/// many rows run at once.
#[derive(Clone, Copy)]
pub struct Decoder<'a> {
    pub model: &'a Model,
    pub tokenizer: &'a Tokenizer,
    pub device: &'a Device,
    pub batch_size: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(model: &'a Model, tokenizer: &'a Tokenizer, device: &'a Device) -> Self {
        Self { model, tokenizer, device, batch_size: DECODE_BATCH }
    }

    /// Continue every prompt (token ids in any role), `batch_size` rows at a time, and decode.
    /// `progress(rows done, tokens generated)` is called after each batch.
    pub async fn complete(
        &self,
        prompts: &[Vec<u32>],
        sampling: &SamplingConfig,
        rng: &mut Rng,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(prompts.len());
        let mut generated = 0;
        let stop = Stop::of(self.tokenizer);
        for chunk in prompts.chunks(self.batch_size.max(1)) {
            for tokens in generate(self.model, chunk, sampling, stop, rng, true, self.device).await? {
                generated += tokens.len();
                out.push(self.tokenizer.decode(&tokens)?);
            }
            progress(out.len(), generated);
        }
        Ok(out)
    }

    /// Answers to `prompts` in the policy role.
    pub async fn answer(&self, prompts: &[String], sampling: &SamplingConfig, rng: &mut Rng) -> Result<Vec<String>> {
        let ids = prompts.iter().map(|p| self.tokenizer.policy_prompt(p)).collect::<Result<Vec<_>>>()?;
        self.complete(&ids, sampling, rng, &mut |_, _| {}).await
    }

    /// Greedy answers to `prompts` in the policy role.
    pub async fn greedy_answers(&self, prompts: &[String], max_new_tokens: usize) -> Result<Vec<String>> {
        self.answer(prompts, &SamplingConfig::greedy(max_new_tokens), &mut Rng::new(0)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_respects_greedy_top_k_and_top_p() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        let mut rng = Rng::new(0);
        assert_eq!(sample(&logits, &SamplingConfig::greedy(1), &mut rng), 1);
        let top1 = SamplingConfig { max_new_tokens: 1, temperature: 1.0, top_k: 1, top_p: 1.0 };
        for _ in 0..20 {
            assert_eq!(sample(&logits, &top1, &mut rng), 1);
        }
        let top2 = SamplingConfig { top_k: 2, ..top1.clone() };
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[sample(&logits, &top2, &mut rng) as usize] += 1;
        }
        assert_eq!(seen[0] + seen[2], 0);
        assert!(seen[1] > 100 && seen[3] > 100, "{seen:?}");
        // top_p small enough keeps only the most likely token.
        let nucleus = SamplingConfig { top_k: 0, top_p: 0.3, ..top1 };
        assert!((0..50).all(|_| sample(&logits, &nucleus, &mut rng) == 1));
    }
}
