//! Hugging Face model directories: `config.json` (`LlamaForCausalLM`, `Qwen2ForCausalLM`),
//! `model.safetensors` or a sharded `model.safetensors.index.json` in F32, F16 or BF16, and
//! the tokenizer with its chat template (`tokenizer.json`, `tokenizer_config.json` or
//! `chat_template.jinja`, `generation_config.json`). Files come through a reader, so the same
//! code serves a directory on disk and files a page was given.

use std::collections::HashMap;

use burn::tensor::Device;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::TextModel;
use super::text_model::check_vocab;
use crate::config::{ChatConfig, IMPROVER_SYSTEM, ModelConfig, RunConfig};
use crate::data::Tokenizer;
use crate::data::chat_template::ChatTemplate;
use crate::error::{Error, Result};

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
const CHAT_TEMPLATE: &str = "chat_template.jinja";
pub const GENERATION_CONFIG: &str = "generation_config.json";
const ARCHITECTURES: [&str; 2] = ["LlamaForCausalLM", "Qwen2ForCausalLM"];

/// A file of the model by name, or `None` when it is absent.
pub type Reader<'a> = dyn FnMut(&str) -> Result<Option<Vec<u8>>> + 'a;

/// Open the model in the files `read` gives; `label` (the directory) names them in errors.
pub fn open(label: &str, read: &mut Reader<'_>, device: &Device) -> Result<(RunConfig, TextModel)> {
    let name = |file: &str| format!("{label}/{file}");
    let text = |read: &mut Reader<'_>, file: &str| -> Result<Option<String>> {
        read(file)?.map(|b| String::from_utf8(b).map_err(|e| Error::file(name(file), e))).transpose()
    };
    let config_json = text(read, CONFIG)?.ok_or_else(|| Error::file(name(CONFIG), "missing: not a Hugging Face model directory"))?;
    let (architecture, config) = model_config(&name(CONFIG), &config_json)?;
    let tokenizer_json = text(read, TOKENIZER)?.ok_or_else(|| Error::file(name(TOKENIZER), "missing"))?;
    let inner = Tokenizer::parse_json(&name(TOKENIZER), &tokenizer_json)?;
    let chat = chat_config(
        &name(TOKENIZER_CONFIG),
        text(read, TOKENIZER_CONFIG)?.as_deref(),
        text(read, CHAT_TEMPLATE)?,
        text(read, GENERATION_CONFIG)?.as_deref(),
        &|id| inner.id_to_token(id),
    )?;
    // A template that does not render is the template file's fault, named as such.
    let template = ChatTemplate::new(&name(TOKENIZER_CONFIG), chat.clone())?;
    // A model of ours exported earlier keeps our role tokens.
    let (chat, template) = if chat.template == super::export::ROLES_TEMPLATE { (None, None) } else { (Some(chat), Some(template)) };
    let tokenizer = match template {
        Some(template) => Tokenizer::with_chat(&name(TOKENIZER), inner, template)?,
        None => Tokenizer::from_hf(inner)?,
    };
    check_vocab(&name(TOKENIZER), &tokenizer, &config)?;
    let mut weights = Weights::read(label, read)?;
    let model = config.load(&mut |tensor, shape| weights.tensor(tensor, shape), device)?;
    let run = RunConfig::pretrained(config.clone(), architecture, chat);
    Ok((run, TextModel { config, tokenizer, model }))
}

fn get<'a>(source: &str, json: &'a Value, key: &str) -> Result<&'a Value> {
    json.get(key).filter(|v| !v.is_null()).ok_or_else(|| Error::file(source, format!("field `{key}` is missing")))
}

fn usize_field(source: &str, json: &Value, key: &str) -> Result<usize> {
    get(source, json, key)?.as_u64().map(|v| v as usize).ok_or_else(|| Error::file(source, format!("field `{key}`: expected a whole number")))
}

/// The transformer's shape from `config.json`, refusing what this engine does not compute.
pub fn model_config(source: &str, text: &str) -> Result<(String, ModelConfig)> {
    let json: Value = serde_json::from_str(text).map_err(|e| Error::file(source, format!("not valid JSON: {e}")))?;
    let architecture = get(source, &json, "architectures")?.get(0).and_then(Value::as_str).unwrap_or_default().to_string();
    if !ARCHITECTURES.contains(&architecture.as_str()) {
        return Err(Error::file(source, format!("architecture {architecture:?} is not supported; supported: {}", ARCHITECTURES.join(", "))));
    }
    let qwen2 = architecture == "Qwen2ForCausalLM";
    let unsupported = |what: String| Err(Error::file(source, format!("{what} is not supported")));
    if let Some(act) = json.get("hidden_act").and_then(Value::as_str).filter(|a| *a != "silu") {
        return unsupported(format!("hidden_act {act:?}"));
    }
    let flag = |key: &str| json.get(key).and_then(Value::as_bool).unwrap_or(false);
    if flag("mlp_bias") || (!qwen2 && flag("attention_bias")) {
        return unsupported("attention_bias/mlp_bias on a Llama model".into());
    }
    if flag("use_sliding_window") {
        return unsupported("use_sliding_window".into());
    }
    // Older files say `rope_theta` and `rope_scaling`; transformers 5 writes `rope_parameters`.
    let rope = json.get("rope_parameters").filter(|v| v.is_object());
    for scaling in [json.get("rope_scaling"), rope.and_then(|r| r.get("rope_type"))].into_iter().flatten() {
        let kind = scaling.get("rope_type").or(scaling.get("type")).unwrap_or(scaling);
        if !scaling.is_null() && kind.as_str() != Some("default") {
            return unsupported(format!("rope scaling {kind}"));
        }
    }
    let rope_theta = rope.and_then(|r| r.get("rope_theta")).or(json.get("rope_theta")).and_then(Value::as_f64).unwrap_or(10000.0);
    let (d_model, n_heads) = (usize_field(source, &json, "hidden_size")?, usize_field(source, &json, "num_attention_heads")?);
    let n_kv_heads = json.get("num_key_value_heads").and_then(Value::as_u64).map_or(n_heads, |v| v as usize);
    if let Some(head_dim) = json.get("head_dim").and_then(Value::as_u64).filter(|&h| n_heads == 0 || h as usize != d_model / n_heads) {
        return unsupported(format!("head_dim {head_dim} other than hidden_size / num_attention_heads"));
    }
    let config = ModelConfig::new(
        usize_field(source, &json, "vocab_size")?,
        d_model,
        usize_field(source, &json, "num_hidden_layers")?,
        n_heads,
        n_kv_heads,
        usize_field(source, &json, "intermediate_size")?,
    )
    .with_max_seq_len(json.get("max_position_embeddings").and_then(Value::as_u64).map_or(2048, |v| v as usize))
    .with_rope_theta(rope_theta)
    .with_norm_eps(json.get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6))
    .with_tie_embeddings(flag("tie_word_embeddings"))
    .with_attention_bias(qwen2);
    config.validate().map_err(|e| Error::file(source, e))?;
    Ok((architecture, config))
}

/// A token as `tokenizer_config.json` names it: a string, or an object with `content`.
fn token(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The chat format: template, end-of-turn token, stop and pad tokens.
pub fn chat_config(
    source: &str,
    tokenizer_config: Option<&str>,
    template_file: Option<String>,
    generation_config: Option<&str>,
    token_of: &dyn Fn(u32) -> Option<String>,
) -> Result<ChatConfig> {
    let parse = |text: &str| serde_json::from_str::<Value>(text).map_err(|e| Error::file(source, format!("not valid JSON: {e}")));
    let tc = tokenizer_config.map(parse).transpose()?.unwrap_or(Value::Null);
    // A template is a string, or a list of named ones of which `default` is the chat's.
    let template = match tc.get("chat_template") {
        Some(Value::String(t)) => Some(t.clone()),
        Some(Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template").and_then(Value::as_str).map(str::to_string)),
        _ => None,
    }
    .or(template_file)
    .ok_or_else(|| Error::file(source, "no chat_template (nor chat_template.jinja): only chat models are supported"))?;
    let eos_token = token(tc.get("eos_token")).ok_or_else(|| Error::file(source, "no eos_token"))?;
    // generation_config.json's end ids besides the eos token, by their text.
    let generation = generation_config.map(parse).transpose()?.unwrap_or(Value::Null);
    let stop_ids: Vec<u64> = match generation.get("eos_token_id") {
        Some(Value::Array(ids)) => ids.iter().filter_map(Value::as_u64).collect(),
        Some(id) => id.as_u64().into_iter().collect(),
        None => Vec::new(),
    };
    let stop_tokens = stop_ids.iter().filter_map(|&id| u32::try_from(id).ok().and_then(token_of)).filter(|t| *t != eos_token).collect();
    Ok(ChatConfig {
        template,
        bos_token: token(tc.get("bos_token")),
        eos_token,
        stop_tokens,
        pad_token: token(tc.get("pad_token")),
        improver_system: IMPROVER_SYSTEM.to_string(),
    })
}

/// The weight files, and which one holds each tensor.
struct Weights {
    label: String,
    files: Vec<(String, Vec<u8>)>,
    index: HashMap<String, usize>,
}

impl Weights {
    fn read(label: &str, read: &mut Reader<'_>) -> Result<Self> {
        let names: Vec<String> = match read(WEIGHTS_INDEX)? {
            Some(bytes) => {
                let json: Value = serde_json::from_slice(&bytes).map_err(|e| Error::file(format!("{label}/{WEIGHTS_INDEX}"), e))?;
                let map = json.get("weight_map").and_then(Value::as_object).ok_or_else(|| Error::file(format!("{label}/{WEIGHTS_INDEX}"), "no weight_map"))?;
                let mut files: Vec<String> = map.values().filter_map(Value::as_str).map(str::to_string).collect();
                files.sort();
                files.dedup();
                files
            }
            None => vec![WEIGHTS.to_string()],
        };
        let mut files = Vec::with_capacity(names.len());
        let mut index = HashMap::new();
        for (i, name) in names.into_iter().enumerate() {
            let path = format!("{label}/{name}");
            let bytes = read(&name)?.ok_or_else(|| Error::file(&path, "missing"))?;
            let tensors = SafeTensors::deserialize(&bytes).map_err(|e| Error::file(&path, format!("not a readable safetensors file: {e}")))?;
            for tensor in tensors.names() {
                index.insert(tensor.to_string(), i);
            }
            files.push((path, bytes));
        }
        Ok(Self { label: label.to_string(), files, index })
    }

    /// One tensor as f32, its shape checked against `shape`.
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let &i = self.index.get(name).ok_or_else(|| Error::file(&self.label, format!("tensor {name} is missing from the weights")))?;
        let (path, bytes) = &self.files[i];
        let view = SafeTensors::deserialize(bytes).and_then(|t| t.tensor(name)).map_err(|e| Error::file(path, e))?;
        if view.shape() != shape {
            return Err(Error::file(path, format!("tensor {name} has shape {:?}, config.json implies {shape:?}", view.shape())));
        }
        let data = view.data();
        Ok(match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => return Err(Error::file(path, format!("tensor {name}: dtype {other:?} is not supported (F32, F16, BF16)"))),
        })
    }
}
