//! The browser edge: a wasm-bindgen `Engine` that a Web Worker drives one step at a time. The
//! run itself is `crate::pipeline`; this file opens WebGPU, checks it is fit for the preset,
//! and converts values between JS and Rust.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::tensor::Device;
use burn::tensor::wgpu::wgpu;
use js_sys::{Object, Reflect, Uint8Array};
use serde::Deserialize;
use wasm_bindgen::prelude::*;

use crate::checkpoint::Checkpoint;
use crate::device::{BufferLimits, is_software_adapter};
use crate::generate::SamplingConfig;
use crate::metrics::Event;
use crate::pipeline::{Inputs, NamedText, Pipeline, PipelineConfig, Snapshot};

fn js_err(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

/// As JSON would have it (`None` as `null`, not `undefined`): the events the page stores and
/// downloads are then the same lines as a native `metrics.jsonl`.
fn to_json_value<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(js_err)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TextInputs {
    data: Option<NamedText>,
    tokenizer: Option<NamedText>,
}

/// `{name: Uint8Array}` from JS.
fn files_from_js(files: &JsValue) -> HashMap<String, Vec<u8>> {
    let mut out = HashMap::new();
    for entry in Object::entries(&Object::from(files.clone())).iter() {
        let pair = js_sys::Array::from(&entry);
        let name = pair.get(0).as_string().unwrap_or_default();
        out.insert(name, Uint8Array::new(&pair.get(1)).to_vec());
    }
    out
}

fn checkpoint_from_js(label: &str, files: &JsValue) -> Result<Checkpoint, JsValue> {
    let files = files_from_js(files);
    Checkpoint::from_files(label, |name| Ok(files.get(name).cloned())).map_err(js_err)
}

fn get(obj: &JsValue, key: &str) -> Option<JsValue> {
    Reflect::get(obj, &JsValue::from_str(key)).ok().filter(|v| !v.is_undefined() && !v.is_null())
}

fn inputs_from_js(inputs: &JsValue) -> Result<Inputs, JsValue> {
    if inputs.is_undefined() || inputs.is_null() {
        return Ok(Inputs::default());
    }
    let text: TextInputs = serde_wasm_bindgen::from_value(inputs.clone()).map_err(js_err)?;
    let init = match get(inputs, "init") {
        Some(init) => {
            let name = get(&init, "name").and_then(|n| n.as_string()).unwrap_or_else(|| "checkpoint".into());
            let files = get(&init, "files").ok_or_else(|| js_err(format!("{name}: no checkpoint files found")))?;
            Some((name.clone(), checkpoint_from_js(&name, &files)?))
        }
        None => None,
    };
    Ok(Inputs { data: text.data, tokenizer: text.tokenizer, init })
}

struct Gpu {
    device: wgpu::Device,
    /// Set by wgpu's device-lost callback; checked around every step.
    lost: Arc<Mutex<Option<String>>>,
}

#[wasm_bindgen]
pub struct Engine {
    device: Device,
    gpu: Option<Gpu>,
    adapter: String,
    pipeline: Pipeline,
}

#[wasm_bindgen]
impl Engine {
    /// Open WebGPU (or the CPU backend when `config.cpu`) and start a run, or continue the one
    /// `resume` holds (`{files: {name: Uint8Array}, sft_model?: Uint8Array}`).
    pub async fn create(config: JsValue, inputs: JsValue, resume: JsValue) -> Result<Engine, JsValue> {
        console_error_panic_hook();
        let config: PipelineConfig = if config.is_undefined() || config.is_null() {
            PipelineConfig::default()
        } else {
            serde_wasm_bindgen::from_value(config).map_err(|e| js_err(format!("config: {e}")))?
        };
        let inputs = inputs_from_js(&inputs)?;
        let (device, gpu, adapter, limits) = if config.cpu {
            (Device::flex(), None, "the CPU backend compiled to wasm (no WebGPU: slow)".to_string(), None)
        } else {
            let (device, setup) = Device::wgpu_options()
                .init_with_setup_async()
                .await
                .map_err(|e| js_err(format!("WebGPU could not start: {e:?}")))?;
            let info = setup.adapter.get_info();
            let software = is_software_adapter(&info.name, info.device_type == wgpu::DeviceType::Cpu);
            let note = if software { " — a software adapter: expect it to be slow" } else { "" };
            let limits = setup.device.limits();
            let limits = BufferLimits { max_buffer_size: limits.max_buffer_size, max_storage_binding: limits.max_storage_buffer_binding_size as u64 };
            let lost = Arc::new(Mutex::new(None));
            let flag = lost.clone();
            setup.device.set_device_lost_callback(move |reason, message| {
                *flag.lock().expect("lost flag") = Some(format!("{reason:?}: {message}"));
            });
            let gpu = Gpu { device: setup.device.clone(), lost };
            (device, Some(gpu), format!("WebGPU: {} ({:?}){note}", info.name, info.backend), Some(limits))
        };
        let pipeline = if resume.is_undefined() || resume.is_null() {
            Pipeline::new(config, &inputs, &device, limits).map_err(js_err)?
        } else {
            let files = get(&resume, "files").ok_or_else(|| js_err("saved run: no checkpoint files"))?;
            let snapshot = Snapshot {
                checkpoint: checkpoint_from_js("saved run", &files)?,
                sft_model: get(&resume, "sft_model").map(|b| Uint8Array::new(&b).to_vec()),
            };
            Pipeline::resume(config, &inputs, &snapshot, &device).map_err(js_err)?
        };
        Ok(Engine { device, gpu, adapter, pipeline })
    }

    pub fn adapter(&self) -> String {
        self.adapter.clone()
    }

    pub fn done(&self) -> bool {
        self.pipeline.is_done()
    }

    /// `{phase, stage, step, iteration, done}`.
    pub fn position(&self) -> Result<JsValue, JsValue> {
        to_json_value(&self.pipeline.position())
    }

    /// True right after a unit that ended a stage or an iteration: a good moment to save.
    pub fn at_boundary(&self) -> bool {
        self.pipeline.at_boundary()
    }

    /// One unit of work; returns the events it produced (the same JSON as `metrics.jsonl`).
    /// A lost GPU device is reported as an error starting `device lost`.
    pub async fn step(&mut self) -> Result<JsValue, JsValue> {
        self.check_device()?;
        let mut events: Vec<Event> = Vec::new();
        let result = self.pipeline.step(&mut |e| events.push(e)).await;
        self.check_device()?;
        result.map_err(js_err)?;
        to_json_value(&events)
    }

    /// The run's checkpoint: `{files: {name: Uint8Array}, sft_model?: Uint8Array, position}`.
    /// The files are a native run's `checkpoint-N/` directory.
    pub async fn snapshot(&self) -> Result<JsValue, JsValue> {
        let snapshot = self.pipeline.snapshot().await.map_err(js_err)?;
        let files = Object::new();
        for (name, bytes) in snapshot.checkpoint.files() {
            Reflect::set(&files, &name.into(), &Uint8Array::from(&bytes[..]))?;
        }
        let out = Object::new();
        Reflect::set(&out, &"files".into(), &files)?;
        Reflect::set(&out, &"step".into(), &JsValue::from(snapshot.checkpoint.state.step as u32))?;
        if let Some(sft) = &snapshot.sft_model {
            Reflect::set(&out, &"sft_model".into(), &Uint8Array::from(&sft[..]))?;
        }
        Reflect::set(&out, &"position".into(), &self.position()?)?;
        Ok(out.into())
    }

    /// The last finished iteration's pairs as TRL preference rows (JSONL).
    pub fn pairs_jsonl(&self) -> String {
        self.pipeline
            .last_pairs()
            .iter()
            .map(|p| serde_json::to_string(&p.to_trl()).expect("pairs serialise") + "\n")
            .collect()
    }

    /// The current policy's greedy answer to `prompt`.
    pub async fn answer(&self, prompt: String) -> Result<String, JsValue> {
        self.check_device()?;
        let mut rng = crate::rng::Rng::new(0);
        let sampling = SamplingConfig::greedy(self.pipeline.config.max_new_tokens.max(24));
        let out = crate::eval::answer(&self.pipeline.policy(), self.pipeline.tokenizer(), &[prompt], &sampling, 1, &mut rng, &self.device)
            .await
            .map_err(js_err)?;
        Ok(out.into_iter().next().unwrap_or_default())
    }

    /// Destroy the GPU device, as a driver reset would (for testing the page's recovery).
    pub fn lose_device(&self) {
        if let Some(gpu) = &self.gpu {
            gpu.device.destroy();
        }
    }

    fn check_device(&self) -> Result<(), JsValue> {
        if let Some(gpu) = &self.gpu
            && let Some(why) = gpu.lost.lock().expect("lost flag").clone()
        {
            return Err(js_err(format!("device lost ({why})")));
        }
        Ok(())
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
