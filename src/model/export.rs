//! Models out, as a Hugging Face directory `transformers` loads: `config.json`,
//! `model.safetensors` (F32, Hugging Face's names and layout), the tokenizer, its chat template
//! and `generation_config.json`. Models we initialised get a template that writes our role
//! tokens, so their prompts stay what they were trained on.

use std::collections::HashMap;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;

use super::{NamedTensor, TextModel, hf};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::readback;

/// Our role format as a chat template: the user turn, then the assistant's answer ending in
/// `<|end|>` (the generation prompt is `<|assistant|>`). A directory carrying exactly this
/// template is opened back with our role tokens, the improver's `<|draft|>` included.
pub const ROLES_TEMPLATE: &str = "{% for message in messages %}{% if message['role'] == 'user' %}<|user|>{{ message['content'] }}{% elif message['role'] == 'assistant' %}<|assistant|>{{ message['content'] }}<|end|>{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

/// The files of a Hugging Face model directory, by name.
pub async fn hf_files(model: &TextModel) -> Result<Vec<(String, Vec<u8>)>> {
    let c = &model.config;
    let tok = &model.tokenizer;
    let architecture = if c.attention_bias { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" };
    let model_type = if c.attention_bias { "qwen2" } else { "llama" };
    let chat = tok.chat();
    let name_of = |id: u32| tok.decode_token(id);
    let eos = chat.map_or_else(|| name_of(tok.special.end), |c| c.eos_token.clone());
    let pad = chat.and_then(|c| c.pad_token.clone()).unwrap_or_else(|| name_of(tok.special.pad));
    let config = json!({
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "intermediate_size": c.d_ff,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "max_position_embeddings": c.max_seq_len,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": c.tie_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "eos_token_id": tok.special.end,
        "pad_token_id": tok.special.pad,
    });
    let tokenizer_config = json!({
        "chat_template": chat.map_or(ROLES_TEMPLATE, |c| c.template.as_str()),
        "bos_token": chat.and_then(|c| c.bos_token.clone()),
        "eos_token": eos,
        "pad_token": pad,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    let generation = json!({ "eos_token_id": tok.special.end, "pad_token_id": tok.special.pad });
    let pretty = |v: serde_json::Value| serde_json::to_vec_pretty(&v).expect("json serialises");
    Ok(vec![
        (hf::CONFIG.into(), pretty(config)),
        (hf::WEIGHTS.into(), safetensors_bytes(model.model.named_tensors()).await?),
        (hf::TOKENIZER.into(), tok.to_json()?.into_bytes()),
        (hf::TOKENIZER_CONFIG.into(), pretty(tokenizer_config)),
        (hf::GENERATION_CONFIG.into(), pretty(generation)),
    ])
}

/// The base model's directory name inside an adapter export.
pub const ADAPTER_BASE: &str = "base";

/// A LoRA model as PEFT saves it: `adapter_config.json` and `adapter_model.safetensors`, with
/// the frozen base as a Hugging Face directory in `base/` (`base_model_name_or_path` is
/// `base_path`, where that directory will be). `None` for a model without adapters.
pub async fn peft_files(model: &TextModel, base_path: &str) -> Result<Option<Vec<(String, Vec<u8>)>>> {
    let Some(lora) = &model.config.lora else { return Ok(None) };
    let adapter_config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_path,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": 0.0,
        "target_modules": lora.targets.iter().map(|t| t.module()).collect::<Vec<_>>(),
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "use_rslora": false,
    });
    let base = TextModel { config: ModelConfig { lora: None, ..model.config.clone() }, model: model.model.without_adapters(), tokenizer: model.tokenizer.clone() };
    let mut files = vec![
        ("adapter_config.json".to_string(), serde_json::to_vec_pretty(&adapter_config).expect("json serialises")),
        ("adapter_model.safetensors".to_string(), safetensors_bytes(model.model.adapter_tensors()).await?),
    ];
    for (name, bytes) in hf_files(&base).await? {
        files.push((format!("{ADAPTER_BASE}/{name}"), bytes));
    }
    Ok(Some(files))
}

pub(crate) async fn safetensors_bytes(named: Vec<NamedTensor>) -> Result<Vec<u8>> {
    safetensors_with(named, HashMap::from([("format".to_string(), "pt".to_string())])).await
}

/// `named` as an F32 safetensors file, read back asynchronously; `info` is its metadata.
pub(crate) async fn safetensors_with(named: Vec<NamedTensor>, info: HashMap<String, String>) -> Result<Vec<u8>> {
    let mut tensors = Vec::new();
    for t in named {
        let values = readback::floats(t.values).await?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((t.name, t.shape, bytes));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| Ok((name.as_str(), TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(|e| Error::Config(format!("{name}: {e}")))?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, Some(info)).map_err(|e| Error::Config(format!("cannot write safetensors: {e}")))
}
