//! The browser edge: a wasm-bindgen `Engine` that a Web Worker drives one step at a time.
//! It owns nothing the native engine lacks; it only turns the engine's events into JS values.

use burn::tensor::Device;
use serde::Deserialize;
use wasm_bindgen::prelude::*;

use crate::data::Example;
use crate::generate::SamplingConfig;
use crate::metrics::Event;
use crate::objective::DpoLoss;
use crate::sgpo::{Method, PreferenceData, SgpoConfig, SgpoRun};
use crate::tokenizer::Tokenizer;
use crate::train::{OptimConfig, SftConfig, SftRun};

/// The page's knobs; anything left out keeps its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WebConfig {
    pub preset: String,
    pub method: Method,
    pub sft_steps: usize,
    pub iterations: usize,
    pub prompts_per_iteration: usize,
    pub batch_size: usize,
    pub beta: f64,
    pub lr: f64,
    pub temperature: f32,
    pub seed: u64,
    /// Run on burn's CPU backend compiled to wasm instead of WebGPU (slow; for browsers
    /// without WebGPU).
    pub cpu: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            preset: "tiny".into(),
            method: Method::Sgpo,
            sft_steps: 60,
            iterations: 2,
            prompts_per_iteration: 32,
            batch_size: 8,
            beta: 0.1,
            lr: 5e-5,
            temperature: 1.0,
            seed: 42,
            cpu: false,
        }
    }
}

enum Phase {
    Sft(Box<SftRun>),
    Preference(Box<SgpoRun>),
}

fn js_err(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

#[wasm_bindgen]
pub struct Engine {
    device: Device,
    adapter: String,
    config: WebConfig,
    tokenizer: Tokenizer,
    eval: Vec<Example>,
    train: Vec<Example>,
    phase: Phase,
}

#[wasm_bindgen]
impl Engine {
    /// Open WebGPU and prepare a run (built-in tasks, tokenizer trained in the tab).
    pub async fn create(config: JsValue) -> Result<Engine, JsValue> {
        console_error_panic_hook();
        let config: WebConfig = if config.is_undefined() || config.is_null() {
            WebConfig::default()
        } else {
            serde_wasm_bindgen::from_value(config).map_err(js_err)?
        };
        let (device, adapter) = if config.cpu {
            (Device::flex(), "the CPU backend compiled to wasm (no WebGPU: slow)".to_string())
        } else {
            let (device, setup) = Device::wgpu_options()
                .init_with_setup_async()
                .await
                .map_err(|e| js_err(format!("WebGPU could not start: {e:?}")))?;
            let info = setup.adapter.get_info();
            let software = crate::device::is_software_adapter(&info.name, info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu);
            let note = if software { " — a software adapter: expect it to be slow" } else { "" };
            (device, format!("WebGPU: {} ({:?}){note}", info.name, info.backend))
        };
        let (train, eval) = crate::tasks::builtin_split(4000, 45, config.seed);
        let tokenizer = Tokenizer::train_on(&train, 256).map_err(js_err)?;
        let sft = SftConfig {
            preset: config.preset.clone(),
            steps: config.sft_steps,
            batch_size: config.batch_size,
            seed: config.seed,
            optim: OptimConfig { lr: 5e-3, warmup_steps: 5, ..OptimConfig::default() },
            ..SftConfig::default()
        };
        let run = SftRun::new(sft, tokenizer.clone(), &train, &device).map_err(js_err)?;
        Ok(Engine { device, adapter, config, tokenizer, eval, train, phase: Phase::Sft(Box::new(run)) })
    }

    pub fn adapter(&self) -> String {
        self.adapter.clone()
    }

    pub fn done(&self) -> bool {
        matches!(&self.phase, Phase::Preference(run) if run.is_done())
    }

    /// One unit of work; returns the events it produced (the same JSON as `metrics.jsonl`).
    pub async fn step(&mut self) -> Result<JsValue, JsValue> {
        let mut events = Vec::new();
        match &mut self.phase {
            Phase::Sft(run) => {
                events.push(Event::Train(run.step().await.map_err(js_err)?));
                if run.is_done() {
                    let config = SgpoConfig {
                        method: self.config.method,
                        iterations: self.config.iterations,
                        prompts_per_iteration: self.config.prompts_per_iteration,
                        batch_size: self.config.batch_size,
                        beta: self.config.beta,
                        loss: DpoLoss::Sigmoid,
                        draft_temperature: self.config.temperature,
                        improver_steps: 30,
                        improver_examples: 128,
                        max_new_tokens: 16,
                        eval_examples: self.eval.len(),
                        seed: self.config.seed,
                        dpo_optim: OptimConfig { lr: self.config.lr, warmup_steps: 0, min_lr_ratio: 1.0, weight_decay: 0.0, ..OptimConfig::default() },
                        ..SgpoConfig::default()
                    };
                    let data = PreferenceData { labeled: self.train.clone(), eval: self.eval.clone(), ..PreferenceData::default() };
                    let sgpo = SgpoRun::new(config, run.model_config.clone(), run.config.clone(), self.tokenizer.clone(), burn::module::Module::valid(&run.model), data, &self.device).map_err(js_err)?;
                    self.phase = Phase::Preference(Box::new(sgpo));
                }
            }
            Phase::Preference(run) => run.advance(&mut |e| events.push(e)).await.map_err(js_err)?,
        }
        serde_wasm_bindgen::to_value(&events).map_err(js_err)
    }

    /// The current policy's greedy answer to `prompt`.
    pub async fn answer(&self, prompt: String) -> Result<String, JsValue> {
        let model = match &self.phase {
            Phase::Sft(run) => burn::module::Module::valid(&run.model),
            Phase::Preference(run) => run.policy(),
        };
        let mut rng = crate::rng::Rng::new(0);
        let out = crate::eval::answer(&model, &self.tokenizer, &[prompt], &SamplingConfig::greedy(24), 1, &mut rng, &self.device)
            .await
            .map_err(js_err)?;
        Ok(out.into_iter().next().unwrap_or_default())
    }
}

fn console_error_panic_hook() {
    use std::sync::Once;
    static SET: Once = Once::new();
    SET.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            web_sys::console::error_1(&JsValue::from_str(&info.to_string()));
        }));
    });
}
