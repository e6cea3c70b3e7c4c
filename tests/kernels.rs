//! Our WGSL kernels (`shaders/`) against the plain burn composition each replaces, on burn's
//! wgpu backend (lavapipe on CI): values, and gradients where they train. The cases live in
//! `common/kernels.rs`, shared with the browser tests (`tests/web.rs`, WebGPU in Chromium).
#![cfg(not(target_arch = "wasm32"))] // native: wasm-pack builds every test target for wasm32

use burn::tensor::{Device, DeviceKind};
use sgpo::config::{OptimConfig, SftConfig};
use sgpo::data::Tokenizer;
use sgpo::train::SftRun;

#[path = "common/kernels.rs"]
mod cases;

// One test: the kernels switch is process-wide.
#[test]
fn kernels_match_the_burn_ops_they_replace() {
    sgpo::device::probe_wgpu().expect("no wgpu adapter: install a Vulkan driver (CI installs mesa-vulkan-drivers for lavapipe)");
    let gpu = Device::wgpu(DeviceKind::DefaultDevice);
    pollster::block_on(cases::all_match(&gpu));
    sft_follows_the_burn_ops(&Device::flex(), 30);
    sft_follows_the_burn_ops(&gpu, 6);
}

/// SFT of the tiny preset through the kernels (on the CPU, their twins) and through burn's
/// ops, from the same seed: the same losses and gradient norms step for step, to rounding (the
/// two round differently, and that grows over a run, but not this early). Catches what the
/// per-kernel cases cannot: the kernels wired in wrongly, e.g. clipping's factor.
fn sft_follows_the_burn_ops(device: &Device, steps: usize) {
    let examples = sgpo::data::tasks::generate(400, 1);
    let tokenizer = Tokenizer::train_on(&examples, 200).unwrap();
    // A high learning rate and a low clip, so that clipping acts on most steps.
    let config = SftConfig {
        preset: "tiny".into(),
        steps,
        batch_size: 8,
        seed: 7,
        optim: OptimConfig { lr: 5e-3, warmup_steps: 3, grad_clip: 0.5, ..OptimConfig::default() },
        ..SftConfig::default()
    };
    let log = |kernels: bool| {
        sgpo::kernels::set_enabled(kernels);
        let mut run = SftRun::new(config.clone(), tokenizer.clone(), &examples, device).unwrap();
        // Read back a few steps at a time, as runs do (the last step reads the rest).
        let steps: Vec<(f32, f32)> = (0..steps).flat_map(|_| pollster::block_on(run.step()).unwrap()).map(|m| (m.loss, m.grad_norm)).collect();
        sgpo::kernels::set_enabled(true);
        steps
    };
    let (fused, plain) = (log(true), log(false));
    let clipped = plain.iter().filter(|(_, norm)| *norm > 0.5).count();
    assert!(clipped > steps / 2, "clipping acted on {clipped} of {steps} steps");
    for (step, ((loss, norm), (plain_loss, plain_norm))) in fused.iter().zip(&plain).enumerate() {
        let (dl, dn) = ((loss - plain_loss).abs() / plain_loss, (norm - plain_norm).abs() / plain_norm);
        assert!(dl < 1e-3 && dn < 1e-2, "{device:?} step {}: loss {loss} vs {plain_loss}, gradient norm {norm} vs {plain_norm}", step + 1);
    }
    let (first, last) = (plain[0].0, plain[steps - 1].0);
    eprintln!("SFT on {device:?}, kernels on vs off: {steps} steps agree (loss {first} -> {last}, clipped on {clipped})");
}
