//! `sgpo bench --check`: this device's logits against burn's CPU backend's on the same weights,
//! before its times are trusted: the training forward over every position, and a cached decode
//! (a prefill with a left-padded row, then teacher-forced steps) with the kernels as switched.
//! The parity tests run on lavapipe and in Chromium; this runs the same comparison on whatever
//! GPU `scripts/bench-gpu.sh` is lent, and on binaries built with burn's autotune or fusion.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;

use sgpo::model::Model;
use sgpo::readback::max_diff;

/// Largest difference allowed, relative to the largest logit (at least 1), as the wgpu tests
/// allow: on lavapipe SmolLM2's 30 layers differ by 4e-6, and attention's scale 5% off moved
/// `small`'s decode by 1.7e-3 (random weights attend almost uniformly, so errors there are
/// damped: the tolerance cannot be loose).
pub const RELATIVE_TOLERANCE: f32 = 1e-4;

#[derive(Serialize)]
pub struct Check {
    /// The largest |logit| on the CPU backend, what the differences are relative to (at least 1).
    pub scale: f32,
    /// The largest difference allowed: [`RELATIVE_TOLERANCE`] times `scale`.
    pub allowed: f32,
    /// Largest difference of the forward's logits, every position of 2 rows.
    pub forward_max_diff: f32,
    /// Largest difference of a cached decode's last-position logits, prefill and each step.
    pub decode_max_diff: f32,
    pub passed: bool,
}

const PROMPT: usize = 8;
const STEPS: usize = 4;

/// The comparison for `model` (on `device`, no autodiff), whose vocabulary is `vocab` tokens.
pub fn against_cpu(model: &Model, vocab: usize, device: &Device) -> Check {
    let cpu = Device::flex();
    let on_cpu = model.clone().fork(&cpu);
    let token = |i: usize| ((i * 7919 + 13) % vocab) as i32;
    let ids: Vec<i32> = (0..2 * PROMPT).map(token).collect();
    let forward = |model: &Model, device: &Device| -> Vec<f32> {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [2, PROMPT]), device);
        model.forward_causal(ids).into_data().iter::<f32>().collect()
    };
    // The second row's first position is padding.
    let decode = |model: &Model, device: &Device| -> Vec<f32> {
        let prompts = [ids[..PROMPT].to_vec(), ids[PROMPT..].to_vec()];
        let steps: Vec<Vec<i32>> = (0..STEPS).map(|step| vec![token(100 + step), token(200 + step)]).collect();
        pollster::block_on(model.forced_decode_logits(&prompts, &[0, 1], &steps, device)).expect("read the logits back")
    };
    let (forward_cpu, decode_cpu) = (forward(&on_cpu, &cpu), decode(&on_cpu, &cpu));
    let scale = forward_cpu.iter().chain(&decode_cpu).fold(1.0f32, |m, x| m.max(x.abs()));
    let forward_max_diff = max_diff(&forward_cpu, &forward(model, device));
    let decode_max_diff = max_diff(&decode_cpu, &decode(model, device));
    let allowed = RELATIVE_TOLERANCE * scale;
    let passed = forward_max_diff.max(decode_max_diff) <= allowed;
    Check { scale, allowed, forward_max_diff, decode_max_diff, passed }
}
