//! In a real browser (wasm-bindgen-test + Chromium): the engine on WebGPU against the same
//! engine on the CPU backend compiled to wasm, on the same weights. Native tests check the CPU
//! backend against native wgpu; here WebGPU itself is checked.
#![cfg(target_arch = "wasm32")]

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use wasm_bindgen_test::*;

use sgpo::config::{SftConfig, SgpoConfig};
use sgpo::data::{PreferencePair, Tokenizer};
use sgpo::generate::{SamplingConfig, Stop, generate};
use sgpo::readback::{self, max_diff};
use sgpo::rng::Rng;
use sgpo::metrics::DpoStep;
use sgpo::train::{PreferenceTrainer, ScoredPair, SftRun, score_pairs};

wasm_bindgen_test_configure!(run_in_browser);

#[path = "common/kernels.rs"]
mod kernel_cases;
#[path = "common/resume.rs"]
mod resume;

/// Logits may differ by float summation order; 1e-4 absolute is far below any decision.
const TOLERANCE: f32 = 1e-4;

/// The run's model's logits on a fixed two-row batch.
async fn logits(run: &SftRun, device: &Device) -> Vec<f32> {
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![3i32, 9, 27, 81, 5, 7], [2, 3]), device);
    readback::floats(run.model.valid().forward_causal(ids)).await.unwrap()
}

thread_local! {
    static WEBGPU: std::cell::RefCell<Option<Device>> = const { std::cell::RefCell::new(None) };
}

/// WebGPU is opened once per page; every test shares the device.
async fn webgpu() -> Device {
    if let Some(device) = WEBGPU.with(|d| d.borrow().clone()) {
        return device;
    }
    let device = Device::wgpu_options().init_async().await.expect("WebGPU adapter (Chromium needs --enable-unsafe-webgpu)");
    WEBGPU.with(|d| *d.borrow_mut() = Some(device.clone()));
    device
}

/// Every WGSL kernel against the burn ops it replaces, on WebGPU (natively: `tests/kernels.rs`
/// on lavapipe): values, gradients where it trains, the sampler's ids against the host's.
#[wasm_bindgen_test]
async fn kernels_match_the_burn_ops_they_replace_on_webgpu() {
    kernel_cases::all_match(&webgpu().await).await;
}

#[wasm_bindgen_test]
async fn webgpu_matches_cpu_on_forward_generation_and_a_dpo_update() {
    let gpu = webgpu().await;
    let cpu = Device::flex();
    let examples = sgpo::data::tasks::generate(120, 1);
    let tok = Tokenizer::train_on(&examples, 150).unwrap();
    let config = SftConfig { preset: "tiny".into(), steps: 1, batch_size: 4, ..SftConfig::default() };
    let start = SftRun::new(config, tok.clone(), &examples, &cpu).unwrap().checkpoint().await.unwrap();
    let on = |device: &Device| SftRun::resume(&start, &examples, device).unwrap();
    let (cpu_run, gpu_run) = (on(&cpu), on(&gpu));

    // Forward.
    let a = logits(&cpu_run, &cpu).await;
    let b = logits(&gpu_run, &gpu).await;
    let d = max_diff(&a, &b);
    assert!(d < TOLERANCE, "forward differs by {d}");

    // Generation (greedy, KV cache, the full 6 tokens).
    let prompts: Vec<Vec<u32>> = examples[..3].iter().map(|e| tok.policy_prompt(&e.prompt).unwrap()).collect();
    let greedy = SamplingConfig::greedy(6);
    let s = tok.special;
    let g_cpu = generate(&cpu_run.model.valid(), &prompts, &greedy, Stop { end: u32::MAX, pad: s.pad, suppress: &[] }, &mut Rng::new(0), true, &cpu).await.unwrap();
    let g_gpu = generate(&gpu_run.model.valid(), &prompts, &greedy, Stop { end: u32::MAX, pad: s.pad, suppress: &[] }, &mut Rng::new(0), true, &gpu).await.unwrap();
    assert_eq!(g_cpu, g_gpu);

    // One DPO update on the same pairs and reference log-probs.
    let pairs = vec![
        PreferencePair { prompt: "add: 1 + 2".into(), chosen: "3".into(), rejected: "4".into() },
        PreferencePair { prompt: "last word: cat dog".into(), chosen: "dog".into(), rejected: "cat".into() },
    ];
    let scored = score_pairs(&cpu_run.model.valid(), &tok, &pairs, false, 128, &cpu).await.unwrap();
    let refs: Vec<_> = scored.iter().collect();
    let cfg = SgpoConfig::default();
    let mut t_cpu = PreferenceTrainer::new(cpu_run.model.clone(), cfg.clone(), s.pad, &cpu);
    let mut t_gpu = PreferenceTrainer::new(gpu_run.model.clone(), cfg, s.pad, &gpu);
    let (m_cpu, m_gpu) = (one_dpo_step(&mut t_cpu, &refs).await, one_dpo_step(&mut t_gpu, &refs).await);
    assert!((m_cpu.loss - m_gpu.loss).abs() < TOLERANCE, "DPO loss {} vs {}", m_cpu.loss, m_gpu.loss);
    assert!((m_cpu.grad_norm - m_gpu.grad_norm).abs() < 1e-3 * m_cpu.grad_norm.max(1.0));
    let after_cpu = score_pairs(&t_cpu.model.valid(), &tok, &pairs, false, 128, &cpu).await.unwrap();
    let after_gpu = score_pairs(&t_gpu.model.valid(), &tok, &pairs, false, 128, &gpu).await.unwrap();
    for (x, y) in after_cpu.iter().zip(&after_gpu) {
        assert!((x.reference_chosen - y.reference_chosen).abs() < 1e-3);
        assert!((x.reference_rejected - y.reference_rejected).abs() < 1e-3);
    }
}

/// One DPO step, its numbers read back afterwards as a run reads them (a few steps at a time).
async fn one_dpo_step(trainer: &mut PreferenceTrainer, pairs: &[&ScoredPair]) -> DpoStep {
    let mut records = trainer.step(pairs, &[], 1).await.unwrap();
    trainer.flush(&mut |m| records.push(m)).await.unwrap();
    assert_eq!(records.len(), 1, "one step, read once");
    records.remove(0)
}

/// A checkpoint taken on WebGPU (burn's own serialisation reads synchronously, which WebGPU
/// cannot; ours reads asynchronously first) restores the same model on the CPU backend.
#[wasm_bindgen_test]
async fn a_checkpoint_written_on_webgpu_restores_the_same_model() {
    let gpu = webgpu().await;
    let cpu = Device::flex();
    let examples = sgpo::data::tasks::generate(120, 2);
    let tok = Tokenizer::train_on(&examples, 150).unwrap();
    let config = SftConfig { preset: "tiny".into(), steps: 2, batch_size: 4, ..SftConfig::default() };
    let mut run = SftRun::new(config, tok, &examples, &gpu).unwrap();
    run.step().await.unwrap();
    run.step().await.unwrap();
    let saved = run.checkpoint().await.unwrap();
    let restored = SftRun::resume(&saved, &examples, &cpu).unwrap();
    assert_eq!(restored.state, run.state);
    let a = logits(&run, &gpu).await;
    let b = logits(&restored, &cpu).await;
    let d = max_diff(&a, &b);
    assert!(d < TOLERANCE, "restored model differs by {d}");
}

/// The page's run on WebGPU, stopped mid-SFT, mid-improver and in the DPO stage and resumed
/// each time from its snapshot (weights, AdamW's moments read back asynchronously, data order,
/// rng), gives the losses of the run that never stopped.
#[wasm_bindgen_test]
async fn a_page_run_resumed_from_snapshots_matches_an_uninterrupted_one_on_webgpu() {
    let (expected, resumed) = resume::straight_and_resumed(&webgpu().await).await;
    assert_eq!(resumed, expected);
}

/// The page's road from a model file (a GGUF fixture; LoRA, no SFT; stage 1, then DPO) on
/// WebGPU against the same run on the CPU backend compiled to wasm: every loss agrees (both
/// draw the same tokens from the same seed, so they train on the same pairs).
#[wasm_bindgen_test]
async fn a_gguf_model_run_with_lora_matches_the_cpu_backend_on_webgpu() {
    use sgpo::config::PipelineConfig;
    use sgpo::pipeline::{Inputs, ModelFiles, Pipeline};

    let name = "llama-tiny.Q8_0.gguf";
    let bytes = include_bytes!("fixtures/llama-tiny.Q8_0.gguf").to_vec();
    let inputs = Inputs { model: Some(ModelFiles { name: name.into(), files: [(name.to_string(), bytes)].into() }), ..Inputs::default() };
    let config = PipelineConfig { lora_rank: 4, improver_steps: 2, prompts_per_iteration: 4, eval_examples: 2, max_new_tokens: 4, ..resume::config() };
    let mut runs = Vec::new();
    for device in [Device::flex(), webgpu().await] {
        let mut events = Vec::new();
        let start = js_sys::Date::now();
        resume::run_to_end(Pipeline::new(config.clone(), &inputs, &device, None).unwrap(), &mut events).await;
        web_sys::console::log_1(&format!("{device:?}: {:.1} s", (js_sys::Date::now() - start) / 1e3).into());
        runs.push(resume::losses(&events));
    }
    let (cpu, gpu) = (&runs[0], &runs[1]);
    assert!(cpu.iter().any(|(stage, _, _)| stage == "improver") && cpu.iter().any(|(stage, _, _)| stage == "dpo"), "{cpu:?}");
    assert!(cpu.iter().all(|(stage, _, _)| stage != "sft"), "a model run has no SFT: {cpu:?}");
    assert_eq!(cpu.len(), gpu.len());
    for ((stage, step, a), (_, _, b)) in cpu.iter().zip(gpu) {
        assert!((a - b).abs() < 1e-3, "{stage} step {step}: loss {a} on the CPU, {b} on WebGPU");
    }
}

/// A snapshot reaches JS with its files as `Uint8Array`s (stored as such in IndexedDB and read
/// back in one copy each; as arrays of numbers a reload of the test's tiny run took 2.5 min to
/// resume), and the engine resumes from it.
#[wasm_bindgen_test]
async fn snapshots_cross_to_javascript_as_byte_arrays_and_resume() {
    use js_sys::{Object, Reflect, Uint8Array};
    use sgpo::config::PipelineConfig;
    use sgpo::device::DeviceChoice;
    use sgpo::web::Engine;
    use wasm_bindgen::{JsCast, JsValue};

    let config = serde_wasm_bindgen::to_value(&PipelineConfig { device: DeviceChoice::Cpu, ..resume::config() }).unwrap();
    let mut engine = Engine::create(config.clone(), JsValue::UNDEFINED, JsValue::UNDEFINED).await.unwrap();
    engine.step().await.unwrap();
    engine.flush().await.unwrap();
    let snapshot = engine.snapshot().await.unwrap();
    let files = Reflect::get(&snapshot, &"files".into()).unwrap();
    let names = Object::keys(files.unchecked_ref::<Object>());
    assert!(names.length() >= 5, "{names:?}");
    for name in names.iter() {
        let bytes = Reflect::get(&files, &name).unwrap();
        assert!(bytes.is_instance_of::<Uint8Array>(), "{name:?} is not a Uint8Array");
    }
    let resumed = Engine::create(config, JsValue::UNDEFINED, snapshot).await.unwrap();
    let step = |e: &Engine| Reflect::get(&e.position().unwrap(), &"step".into()).unwrap().as_f64();
    assert_eq!(step(&resumed), Some(1.0));
    assert_eq!(step(&resumed), step(&engine));
}
