//! Decoding: batched sampling with a KV cache (temperature, top-k, top-p, stop at `<|end|>`,
//! seeded), and the decoding context the rest of the engine generates text through.
//! Prompts are left-padded so every row's next token sits in the last column; padding is
//! hidden from attention by the bias. Each step's draw is defined by [`sample_row`] (Gumbel-max
//! over a counter-based hash of the step's seed, the row and the token), which the GPU's
//! sampler computes too, so the same seed draws the same tokens on every backend.

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::Tokenizer;
use crate::error::Result;
use crate::kernels;
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

/// The uniform number in (0, 1) of token `token` in row `row` at the decode step seeded
/// `seed`: a counter-based hash (no state), so the GPU's sampler computes the same number
/// for every token independently (`shaders/sample.wgsl`).
pub fn uniform_draw(seed: u64, row: u32, token: u32) -> f32 {
    fn mix32(mut h: u32) -> u32 {
        h ^= h >> 16;
        h = h.wrapping_mul(0x7feb_352d);
        h ^= h >> 15;
        h = h.wrapping_mul(0x846c_a68b);
        h ^ (h >> 16)
    }
    let mut h = (seed as u32) ^ row.wrapping_mul(0x85eb_ca77);
    h = mix32(h ^ token.wrapping_mul(0x9e37_79b1));
    h = mix32(h ^ (seed >> 32) as u32);
    ((h >> 8) as f32 + 0.5) / 16_777_216.0
}

/// A u32 that orders as the f32 does (negative numbers flipped), so thresholds on logits can
/// be found exactly by bisection over integers, as the GPU does.
fn order_key(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits >> 31 == 1 { !bits } else { bits | 0x8000_0000 }
}

/// Draw row `row`'s token from its `logits` at the decode step seeded `seed`. Greedy: the
/// largest logit (lowest id on ties). Otherwise the tokens kept are those at or above the
/// top-k threshold (the k-th largest logit) and the top-p threshold (the largest logit t such
/// that the tokens at or above t hold `top_p` of the kept probability), and the draw is
/// Gumbel-max: the argmax of `logit / T - ln(-ln(u))`, `u` from [`uniform_draw`], which picks
/// each kept token with its renormalised probability at temperature T. The GPU sampler
/// (`kernels::sample_tokens`) computes the same.
pub fn sample_row(logits: &[f32], cfg: &SamplingConfig, seed: u64, row: u32) -> u32 {
    let argmax = |score: &dyn Fn(usize, f32) -> Option<f32>| {
        let mut best: Option<(u32, f32)> = None;
        for (i, &x) in logits.iter().enumerate() {
            if let Some(s) = score(i, x)
                && best.is_none_or(|b| s > b.1)
            {
                best = Some((i as u32, s));
            }
        }
        best.map_or(0, |b| b.0)
    };
    if cfg.temperature <= 0.0 {
        return argmax(&|_, x| Some(x));
    }
    let inv_t = 1.0 / cfg.temperature;
    let keys: Vec<u32> = logits.iter().map(|&x| order_key(x)).collect();
    let mut floor = 0u32;
    if cfg.top_k > 0 && cfg.top_k < logits.len() {
        let mut sorted = keys.clone();
        floor = *sorted.select_nth_unstable_by(cfg.top_k - 1, |a, b| b.cmp(a)).1;
    }
    if cfg.top_p < 1.0 {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut kept: Vec<(u32, f32)> =
            logits.iter().zip(&keys).filter(|(_, k)| **k >= floor).map(|(&x, &k)| (k, ((x - max) * inv_t).exp())).collect();
        let target = cfg.top_p * kept.iter().map(|p| p.1).sum::<f32>();
        kept.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        let mut mass = 0.0;
        for (key, p) in kept {
            mass += p;
            if mass >= target {
                floor = key;
                break;
            }
        }
    }
    argmax(&|i, x| (keys[i] >= floor).then(|| x * inv_t - (-uniform_draw(seed, row, i as u32).ln()).ln()))
}

fn int_tensor(rows: &[Vec<u32>], device: &Device) -> Tensor<2, Int> {
    let (b, t) = (rows.len(), rows[0].len());
    let flat: Vec<i32> = rows.iter().flatten().map(|&x| x as i32).collect();
    Tensor::from_data(TensorData::new(flat, [b, t]), device)
}

/// The token that ends an answer, and the one that fills rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop<'a> {
    pub end: u32,
    pub pad: u32,
    /// Token ids never drawn ([`Tokenizer::unproducible`]).
    pub suppress: &'a [u32],
}

impl<'a> Stop<'a> {
    pub fn of(tokenizer: &'a Tokenizer) -> Self {
        Self { end: tokenizer.special.end, pad: tokenizer.special.pad, suppress: tokenizer.unproducible() }
    }
}

/// Decode steps whose token ids a GPU run reads back together: the host keeps issuing steps
/// (each step's input is the previous step's ids, still on the device) and looks for ended
/// rows every this many tokens, at the cost of up to this many - 1 steps after the last row
/// ends. On the CPU backend and software adapters every step is read.
pub const STEPS_PER_READ_GPU: usize = 8;

/// Continue every prompt until `stop.end` or `max_new_tokens`. Returns the new tokens of each
/// row, without the end token. `use_cache = false` recomputes the whole prefix at every step
/// (the reference the cache is checked against, and the baseline of the benchmark). Each step
/// draws one seed from `rng`; a row's draw depends on that seed, its index and its logits.
pub async fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
    stop: Stop<'_>,
    rng: &mut Rng,
    use_cache: bool,
    device: &Device,
) -> Result<Vec<Vec<u32>>> {
    let Stop { end, pad, suppress } = stop;
    if prompts.is_empty() || cfg.max_new_tokens == 0 {
        return Ok(vec![Vec::new(); prompts.len()]);
    }
    // Keep the tail of over-long prompts so prompt + answer fit the model's context.
    let room = model.max_seq_len().saturating_sub(cfg.max_new_tokens).max(1);
    let prompts: Vec<&[u32]> = prompts.iter().map(|p| &p[p.len().saturating_sub(room)..]).collect();
    let (rows, width) = (prompts.len(), prompts.iter().map(|p| p.len()).max().unwrap_or(1).max(1));
    let mut seqs: Vec<Vec<u32>> = Vec::with_capacity(rows);
    let mut valid: Vec<Vec<bool>> = Vec::with_capacity(rows);
    for p in &prompts {
        let padding = width - p.len();
        seqs.push(std::iter::repeat_n(pad, padding).chain(p.iter().copied()).collect());
        valid.push(std::iter::repeat_n(false, padding).chain(std::iter::repeat_n(true, p.len())).collect());
    }
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); rows];
    let mut done = vec![false; rows];
    // -inf on the suppressed ids, added to every step's logits before the draw.
    let mask = (!suppress.is_empty()).then(|| {
        let n = model.vocab_size();
        let mut m = vec![0.0f32; n];
        for &id in suppress.iter().filter(|&&id| (id as usize) < n) {
            m[id as usize] = f32::NEG_INFINITY;
        }
        Tensor::<1>::from_data(TensorData::new(m, [n]), device).unsqueeze_dim::<2>(0)
    });
    let allowed = |logits: Tensor<2>| match &mask {
        Some(m) => logits + m.clone(),
        None => logits,
    };
    // Take one step's ids (a row's ids after its end are ignored); true once every row ended.
    let mut record = |ids: &[i64]| {
        for (i, &id) in ids.iter().enumerate() {
            if !done[i] {
                if id as u32 == end {
                    done[i] = true;
                } else {
                    out[i].push(id as u32);
                }
            }
        }
        done.iter().all(|&d| d)
    };

    if !use_cache {
        let mut logits = model.last_logits(int_tensor(&seqs, device), padded_bias(&valid, width, device), None);
        for _ in 0..cfg.max_new_tokens {
            let ids = readback::ints(kernels::sample_tokens(allowed(logits), cfg, rng.next_u64()).await?).await?;
            if record(&ids) {
                break;
            }
            for ((seq, v), &id) in seqs.iter_mut().zip(valid.iter_mut()).zip(&ids) {
                seq.push(id as u32);
                v.push(true);
            }
            logits = model.last_logits(int_tensor(&seqs, device), padded_bias(&valid, seqs[0].len(), device), None);
        }
        return Ok(out);
    }

    let capacity = width + cfg.max_new_tokens;
    let mut cache = KvCache::new(capacity);
    let mut logits = Some(model.last_logits(int_tensor(&seqs, device), padded_bias(&valid, width, device), Some(&mut cache)));
    // Every decode step's attention bias: the prompts' padding hidden, every new position seen.
    for v in valid.iter_mut() {
        v.resize(capacity, true);
    }
    let step_bias = padded_bias(&valid, 1, device);
    // A software adapter's "GPU" is the host's own cores: running ahead of it only competes
    // with it (measured on lavapipe: slower).
    let per_read = if crate::device::is_gpu(device) && !kernels::software_adapter() { STEPS_PER_READ_GPU } else { 1 };
    let mut unread: Vec<Tensor<1, Int>> = Vec::with_capacity(per_read);
    while let Some(step_logits) = logits.take() {
        let ids = kernels::sample_tokens(allowed(step_logits), cfg, rng.next_u64()).await?;
        unread.push(ids.clone());
        // The last token is drawn, never fed back.
        if cache.len() + 1 < capacity {
            logits = Some(model.last_logits(ids.reshape([rows, 1]), step_bias.clone(), Some(&mut cache)));
        }
        if unread.len() == per_read || logits.is_none() {
            let steps = readback::ints(Tensor::stack::<2>(std::mem::take(&mut unread), 0)).await?;
            if steps.chunks(rows).any(&mut record) {
                break;
            }
        }
    }
    Ok(out)
}

/// Rows decoded at once unless a caller says otherwise.
pub const DECODE_BATCH: usize = 64;

/// What decoding text needs besides the prompts: the model, its tokenizer, the device, and how
/// many rows run at once.
#[derive(Clone)]
pub struct Decoder<'a> {
    pub model: &'a Model,
    pub tokenizer: &'a Tokenizer,
    pub device: &'a Device,
    pub batch_size: usize,
    /// Tokens generated through this decoder so far (the experiment reports compute with it).
    pub generated: std::cell::Cell<usize>,
}

impl<'a> Decoder<'a> {
    pub fn new(model: &'a Model, tokenizer: &'a Tokenizer, device: &'a Device) -> Self {
        Self { model, tokenizer, device, batch_size: DECODE_BATCH, generated: Default::default() }
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
                self.generated.set(self.generated.get() + tokens.len());
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

    /// Draws of `cfg` from `logits` over many seeds and rows: how often each id came up.
    fn frequencies(logits: &[f32], cfg: &SamplingConfig, n: u64) -> Vec<f64> {
        let mut seen = vec![0usize; logits.len()];
        for s in 0..n {
            seen[sample_row(logits, cfg, s.wrapping_mul(0x9e37_79b9_7f4a_7c15), (s % 7) as u32) as usize] += 1;
        }
        seen.iter().map(|&c| c as f64 / n as f64).collect()
    }

    #[test]
    fn sampling_follows_the_distribution_and_respects_greedy_top_k_and_top_p() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        assert_eq!(sample_row(&logits, &SamplingConfig::greedy(1), 5, 0), 1);
        assert_eq!(sample_row(&[2.0, 7.0, 7.0, 1.0], &SamplingConfig::greedy(1), 5, 0), 1, "ties go to the lowest id");
        // At temperature T each id comes up with probability softmax(logits / T).
        for t in [1.0f32, 0.5, 2.0] {
            let z: f64 = logits.iter().map(|&x| (x as f64 / t as f64).exp()).sum();
            let seen = frequencies(&logits, &SamplingConfig::sampled(1, t), 40_000);
            for (i, &x) in logits.iter().enumerate() {
                let p = (x as f64 / t as f64).exp() / z;
                assert!((seen[i] - p).abs() < 0.01, "T {t}, id {i}: drawn {:.4}, probability {p:.4}", seen[i]);
            }
        }
        let base = SamplingConfig { max_new_tokens: 1, temperature: 1.0, top_k: 1, top_p: 1.0 };
        assert_eq!(frequencies(&logits, &base, 500)[1], 1.0, "top-k 1 is greedy");
        let top2 = frequencies(&logits, &SamplingConfig { top_k: 2, ..base.clone() }, 4000);
        assert_eq!(top2[0] + top2[2], 0.0);
        assert!((top2[1] - 0.525).abs() < 0.03, "renormalised over the two kept: {top2:?}");
        // Probabilities ~ .478, .433, .065, .024: top-p 0.3 keeps id 1 alone, 0.6 ids 1 and 3.
        assert_eq!(frequencies(&logits, &SamplingConfig { top_k: 0, top_p: 0.3, ..base.clone() }, 500)[1], 1.0);
        let nucleus = frequencies(&logits, &SamplingConfig { top_k: 0, top_p: 0.6, ..base.clone() }, 4000);
        assert_eq!(nucleus[0] + nucleus[2], 0.0);
        assert!(nucleus[3] > 0.4, "{nucleus:?}");
        // The same seed and row give the same draw; another row or seed, independent draws.
        let cfg = SamplingConfig::sampled(1, 1.0);
        let flat = [0.0f32; 64];
        assert_eq!(sample_row(&flat, &cfg, 11, 3), sample_row(&flat, &cfg, 11, 3));
        let rows: std::collections::HashSet<u32> = (0..16).map(|r| sample_row(&flat, &cfg, 11, r)).collect();
        assert!(rows.len() > 8, "16 rows of a flat distribution drew {rows:?}");
    }

    /// Hot sampling from an untrained model draws every token the tokenizer allows, none of
    /// the ones it suppresses (without the mask, ~40% of this vocabulary is lone high bytes).
    #[test]
    fn generation_never_draws_suppressed_tokens() {
        let device = Device::flex();
        let tok = Tokenizer::train_on(&crate::data::tasks::generate(200, 1), 300).unwrap();
        let model = crate::config::ModelConfig::tiny(tok.vocab_size()).init(5, &device);
        let prompts: Vec<Vec<u32>> = (0..8).map(|i| tok.policy_prompt(&format!("sort the numbers: {i} 3 1")).unwrap()).collect();
        let stop = Stop { end: u32::MAX, ..Stop::of(&tok) };
        let out = pollster::block_on(generate(&model, &prompts, &SamplingConfig::sampled(40, 5.0), stop, &mut Rng::new(1), true, &device)).unwrap();
        let drawn: std::collections::BTreeSet<u32> = out.iter().flatten().copied().collect();
        assert!(drawn.len() > 50, "hot sampling draws widely: {}", drawn.len());
        let banned: Vec<u32> = drawn.iter().copied().filter(|id| tok.unproducible().contains(id)).collect();
        assert!(banned.is_empty(), "drew {banned:?}");
        for row in &out {
            assert!(!tok.decode(row).unwrap().contains('\u{fffd}'));
        }
    }
}
