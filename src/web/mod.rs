//! The browser edge: a wasm-bindgen `Engine` that a Web Worker drives one step at a time. The
//! run itself is `crate::pipeline`; this file opens WebGPU, checks it is fit for the preset,
//! and converts values between JS and Rust.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::tensor::Device;
use burn::tensor::wgpu::wgpu;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use wasm_bindgen::prelude::*;

use crate::checkpoint::Checkpoint;
use crate::config::PipelineConfig;
use crate::device::{BufferLimits, DeviceChoice, is_software_adapter};
use crate::generate::{Decoder, SamplingConfig};
use crate::metrics::Event;
use crate::pipeline::{Inputs, ModelFiles, NamedText, Pipeline, Position, Snapshot};
use crate::rng::Rng;
use crate::sgpo::trl_jsonl;

fn js_err(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

/// As JSON would have it (`None` as `null`, not `undefined`): the events the page stores and
/// downloads are then the same lines as a native `metrics.jsonl`. Bytes become `Uint8Array`s
/// (JSON's arrays of numbers made IndexedDB hold a checkpoint as one number per byte, and
/// reading one back took minutes).
fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible().serialize_bytes_as_arrays(false)).map_err(js_err)
}

/// A value from JS, or its default when JS passed nothing; `what` names it in errors.
fn from_js<T: serde::de::DeserializeOwned + Default>(what: &str, value: JsValue) -> Result<T, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(T::default());
    }
    serde_wasm_bindgen::from_value(value).map_err(|e| js_err(format!("{what}: {e}")))
}

/// A checkpoint's named files, as the page stores them: `{name: Uint8Array}`.
type JsFiles = HashMap<String, ByteBuf>;

fn checkpoint_from_js(label: &str, files: &JsFiles) -> Result<Checkpoint, JsValue> {
    Checkpoint::from_files(label, |name| Ok(files.get(name).map(|b| b.to_vec()))).map_err(js_err)
}

/// `create`'s second argument: the user's files.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct JsInputs {
    data: Option<NamedText>,
    tokenizer: Option<NamedText>,
    /// A checkpoint to start the preference stage from.
    init: Option<JsCheckpoint>,
    /// A model with weights (a GGUF file, or a Hugging Face directory's files).
    model: Option<JsModel>,
}

#[derive(Deserialize)]
struct JsModel {
    name: String,
    files: JsFiles,
}

#[derive(Deserialize)]
struct JsCheckpoint {
    #[serde(default)]
    name: Option<String>,
    files: JsFiles,
}

/// A saved run, as `snapshot` returns it and `create` takes it back.
#[derive(Serialize, Deserialize, Default)]
struct JsSnapshot {
    files: JsFiles,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sft_model: Option<ByteBuf>,
    /// Where the run stood (informational; ignored on the way in).
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    position: Option<Position>,
    #[serde(default, skip_deserializing)]
    step: usize,
}

impl JsInputs {
    fn into_inputs(self) -> Result<Inputs, JsValue> {
        let init = match self.init {
            Some(c) => {
                let name = c.name.unwrap_or_else(|| "checkpoint".into());
                let checkpoint = checkpoint_from_js(&name, &c.files)?;
                Some((name, checkpoint))
            }
            None => None,
        };
        let model = self.model.map(|m| ModelFiles { name: m.name, files: m.files.into_iter().map(|(n, b)| (n, b.into_vec())).collect() });
        Ok(Inputs { data: self.data, tokenizer: self.tokenizer, init, model })
    }
}

struct Gpu {
    device: wgpu::Device,
    /// Set by wgpu's device-lost callback; checked around every step.
    lost: Arc<Mutex<Option<String>>>,
}

/// The device, its WebGPU handle, a line saying what it is, and its buffer limits.
type Opened = (Device, Option<Gpu>, String, Option<BufferLimits>);

fn cpu_backend(why: &str) -> Opened {
    (Device::flex(), None, format!("the CPU backend compiled to wasm{why}"), None)
}

/// What WebGPU's default adapter is, without opening a device on it.
async fn webgpu_adapter_info() -> Result<wgpu::AdapterInfo, JsValue> {
    let adapter = wgpu::Instance::default()
        .request_adapter(&wgpu::RequestAdapterOptions::default())
        .await
        .map_err(|e| js_err(format!("WebGPU has no adapter: {e}")))?;
    Ok(adapter.get_info())
}

async fn open_webgpu() -> Result<Opened, JsValue> {
    let (device, setup) = Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map_err(|e| js_err(format!("WebGPU could not start: {e:?}")))?;
    let info = setup.adapter.get_info();
    let software = is_software_adapter(&info.name, info.device_type == wgpu::DeviceType::Cpu);
    let note = if software { " — a software adapter: expect it to be slow" } else { "" };
    // The kernels with a variant or a limit for software adapters take them (as `device::select`
    // says natively).
    crate::kernels::set_software_adapter(software);
    let limits = setup.device.limits();
    let limits = BufferLimits { max_buffer_size: limits.max_buffer_size, max_storage_binding: limits.max_storage_buffer_binding_size as u64 };
    let lost = Arc::new(Mutex::new(None));
    let flag = lost.clone();
    setup.device.set_device_lost_callback(move |reason, message| {
        *flag.lock().expect("lost flag") = Some(format!("{reason:?}: {message}"));
    });
    let gpu = Gpu { device: setup.device.clone(), lost };
    // Browsers report an adapter's description only to pages that ask for it (often empty).
    let name = if info.name.is_empty() { "the browser's adapter" } else { info.name.as_str() };
    Ok((device, Some(gpu), format!("WebGPU: {name}{note}"), Some(limits)))
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
    /// The page's knobs with their defaults: the page fills its form from these.
    pub fn defaults() -> Result<JsValue, JsValue> {
        to_js(&PipelineConfig::default())
    }

    /// Open the device `config.device` names (`auto`: WebGPU unless its adapter is a software
    /// one, as the CLI's; without WebGPU at all the page asks first) and start a run, or continue the one
    /// `resume` holds (`{files: {name: Uint8Array}, sft_model?: Uint8Array}`).
    pub async fn create(config: JsValue, inputs: JsValue, resume: JsValue) -> Result<Engine, JsValue> {
        console_error_panic_hook();
        let config: PipelineConfig = from_js("config", config)?;
        let inputs = from_js::<JsInputs>("inputs", inputs)?.into_inputs()?;
        let (device, gpu, adapter, limits) = match config.device {
            DeviceChoice::Cpu => cpu_backend(""),
            choice => {
                let info = webgpu_adapter_info().await?;
                let software = is_software_adapter(&info.name, info.device_type == wgpu::DeviceType::Cpu);
                if software && choice == DeviceChoice::Auto {
                    cpu_backend(
                        ": WebGPU's only adapter here is a software rasteriser, slower than the CPU backend (choose the device WebGPU to use it anyway)",
                    )
                } else {
                    open_webgpu().await?
                }
            }
        };
        let pipeline = if resume.is_undefined() || resume.is_null() {
            Pipeline::new(config, &inputs, &device, limits).map_err(js_err)?
        } else {
            let saved: JsSnapshot = from_js("saved run", resume)?;
            let snapshot = Snapshot {
                checkpoint: checkpoint_from_js("saved run", &saved.files)?,
                sft_model: saved.sft_model.map(ByteBuf::into_vec),
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
        to_js(&self.pipeline.position())
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
        result.map_err(|e| self.gpu_error(e))?;
        to_js(&events)
    }

    /// Read back the training steps whose numbers are still on the GPU (a step reads them a
    /// few steps at a time) and return their events: due before `snapshot`.
    pub async fn flush(&mut self) -> Result<JsValue, JsValue> {
        self.check_device()?;
        let mut events: Vec<Event> = Vec::new();
        let result = self.pipeline.flush(&mut |e| events.push(e)).await;
        self.check_device()?;
        result.map_err(|e| self.gpu_error(e))?;
        to_js(&events)
    }

    /// The run's checkpoint, every step read back first (`flush`): `{files: {name: Uint8Array},
    /// sft_model?: Uint8Array, position}`.
    /// The files are a native run's `checkpoint-N/` directory.
    pub async fn snapshot(&self) -> Result<JsValue, JsValue> {
        let snapshot = self.pipeline.snapshot().await.map_err(|e| self.gpu_error(e))?;
        let files = snapshot.checkpoint.files().into_iter().map(|(name, bytes)| (name.to_string(), ByteBuf::from(bytes))).collect();
        to_js(&JsSnapshot {
            files,
            sft_model: snapshot.sft_model.map(ByteBuf::from),
            position: Some(self.pipeline.position()),
            step: snapshot.checkpoint.state.step,
        })
    }

    /// The last finished iteration's pairs as TRL preference rows (JSONL).
    pub fn pairs_jsonl(&self) -> String {
        trl_jsonl(self.pipeline.last_pairs())
    }

    /// A held-out prompt of this run, worded as the run asks its tasks (empty if none).
    pub fn example_prompt(&self) -> String {
        self.pipeline.example_prompt().unwrap_or_default().to_string()
    }

    /// The current policy's greedy answer to `prompt`.
    pub async fn answer(&self, prompt: String) -> Result<String, JsValue> {
        self.check_device()?;
        let policy = self.pipeline.policy();
        let decoder = Decoder { batch_size: 1, ..Decoder::new(&policy, self.pipeline.tokenizer(), &self.device) };
        let sampling = SamplingConfig::greedy(self.pipeline.config.max_new_tokens.max(24));
        let out = decoder.answer(&[prompt], &sampling, &mut Rng::new(0)).await.map_err(|e| self.gpu_error(e))?;
        Ok(out.into_iter().next().unwrap_or_default())
    }

    /// Destroy the GPU device, as a driver reset would (for testing the page's recovery).
    pub fn lose_device(&self) {
        if let Some(gpu) = &self.gpu {
            gpu.device.destroy();
        }
    }

    /// An error of work on the GPU, reported as the device's loss (`device lost (..)`) where it
    /// is one: wgpu's lost-device callback can run after the read-back that the loss broke, whose
    /// error then names the destroyed device while the flag is still unset.
    fn gpu_error(&self, e: impl std::fmt::Display) -> JsValue {
        let message = e.to_string();
        let destroyed = message.to_lowercase().contains("device was destroyed");
        match &self.gpu {
            Some(gpu) if destroyed || gpu.lost.lock().expect("lost flag").is_some() => js_err(format!("device lost ({message})")),
            _ => js_err(message),
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
