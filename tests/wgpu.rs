//! The product's backend, burn-wgpu (lavapipe on CI), against burn's CPU backend on the same
//! weights: forward, one SFT step and greedy generation must agree, and a cached decode of the
//! tiny checkpoints (Llama, Qwen2 with its q/k/v biases).
#![cfg(not(target_arch = "wasm32"))] // native: wasm-pack builds every test target for wasm32

use burn::module::Module;
use burn::tensor::{Device, DeviceKind, Int, Tensor, TensorData};
use pollster::block_on;

use sgpo::config::{OptimConfig, SftConfig};
use sgpo::data::Tokenizer;
use sgpo::generate::{SamplingConfig, Stop, generate};
use sgpo::rng::Rng;
use sgpo::readback::max_diff;
use sgpo::train::SftRun;

/// Logits may differ by float summation order; 1e-4 absolute is far below any decision.
const TOLERANCE: f32 = 1e-4;

#[test]
fn wgpu_matches_cpu_on_forward_sft_step_and_generation() {
    let adapter = sgpo::device::probe_wgpu().expect(
        "no wgpu adapter: install a Vulkan driver (CI installs mesa-vulkan-drivers for lavapipe)",
    );
    eprintln!("wgpu adapter: {adapter:?}");
    let examples = sgpo::data::tasks::generate(200, 1);
    let tok = Tokenizer::train_on(&examples, 200).unwrap();
    let config = SftConfig {
        preset: "tiny".into(),
        steps: 2,
        batch_size: 4,
        optim: OptimConfig { lr: 1e-2, warmup_steps: 1, ..OptimConfig::default() },
        ..SftConfig::default()
    };
    let cpu = Device::flex();
    let gpu = Device::wgpu(DeviceKind::DefaultDevice);
    let start = block_on(SftRun::new(config, tok.clone(), &examples, &cpu).unwrap().checkpoint()).unwrap();
    let mut on_cpu = SftRun::resume(&start, &examples, &cpu).unwrap();
    let mut on_gpu = SftRun::resume(&start, &examples, &gpu).unwrap();

    let logits = |run: &SftRun, device: &Device| -> Vec<f32> {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![3i32, 9, 27, 81, 5, 7], [2, 3]), device);
        run.model.valid().forward_causal(ids).into_data().iter::<f32>().collect()
    };
    let d = max_diff(&logits(&on_cpu, &cpu), &logits(&on_gpu, &gpu));
    assert!(d < TOLERANCE, "forward differs by {d}");

    // Two steps read back together at the end, as runs read them.
    let two_steps = |run: &mut SftRun| {
        let mut read: Vec<_> = (0..2).flat_map(|_| block_on(run.step()).unwrap()).collect();
        block_on(run.flush(&mut |m| read.push(m))).unwrap();
        read
    };
    let (on_cpu_read, on_gpu_read) = (two_steps(&mut on_cpu), two_steps(&mut on_gpu));
    assert_eq!(on_gpu_read.len(), 2);
    for (a, b) in on_cpu_read.iter().zip(&on_gpu_read) {
        assert!((a.loss - b.loss).abs() < TOLERANCE, "loss {} vs {}", a.loss, b.loss);
        assert!((a.grad_norm - b.grad_norm).abs() < 1e-3 * a.grad_norm.max(1.0), "grad norm {} vs {}", a.grad_norm, b.grad_norm);
    }
    let d = max_diff(&logits(&on_cpu, &cpu), &logits(&on_gpu, &gpu));
    assert!(d < 1e-3, "after two AdamW steps the logits differ by {d}");

    let prompts: Vec<Vec<u32>> = examples[..3].iter().map(|e| tok.policy_prompt(&e.prompt).unwrap()).collect();
    let s = tok.special;
    let greedy = SamplingConfig::greedy(6);
    let run_gen = |run: &SftRun, device: &Device| {
        block_on(generate(&run.model.valid(), &prompts, &greedy, Stop { end: u32::MAX, pad: s.pad, suppress: &[] }, &mut Rng::new(0), true, device)).unwrap()
    };
    assert_eq!(run_gen(&on_cpu, &cpu), run_gen(&on_gpu, &gpu));
}

/// A cached decode on wgpu, where a step's few rows take the fused decode kernels (queries,
/// keys and values in one `linear_qkv` dispatch, with Qwen2's q/k/v biases and grouped heads;
/// attention over the cache), against the CPU backend on the same weights: the logits of a
/// left-padded prompt's last position and of four teacher-forced steps after it, for the tiny
/// Llama and Qwen2 checkpoints `scripts/make-fixtures.py` made.
#[test]
fn cached_decoding_of_checkpoints_on_wgpu_matches_cpu() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // The second row's first position is padding.
    let prompts = [vec![3, 4, 5, 6, 7], vec![0, 9, 10, 11, 12]];
    let steps: Vec<Vec<i32>> = (0..4).map(|step| vec![13 + step, 20 + step]).collect();
    let decode = |name: &str, device: &Device| -> Vec<f32> {
        let (_, model, _) = sgpo::native::open_model(&fixtures.join(name), device).unwrap();
        block_on(model.model.forced_decode_logits(&prompts, &[0, 1], &steps, device)).unwrap()
    };
    let gpu = Device::wgpu(DeviceKind::DefaultDevice);
    for name in ["llama-tiny", "qwen2-tiny"] {
        let (on_cpu, on_gpu) = (decode(name, &Device::flex()), decode(name, &gpu));
        let d = max_diff(&on_cpu, &on_gpu);
        eprintln!("{name}: cached decode on wgpu vs cpu: {d:.1e}");
        assert!(d < TOLERANCE, "{name}: cached decode logits differ by {d} between wgpu and the CPU");
        assert!(on_cpu.iter().any(|&x| x.abs() > 1e-3), "{name}: logits all near zero");
    }
}
