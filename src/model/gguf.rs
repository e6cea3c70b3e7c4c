//! GGUF files (llama.cpp's format; architectures `llama` and `qwen2`): the metadata, every
//! tensor dequantised to f32 on load (`quants.rs`), llama's
//! rotary-interleaved Q/K rows put back in Hugging Face's order, and the tokenizer and chat
//! template rebuilt from `tokenizer.ggml.*`.

use std::collections::HashMap;

use burn::tensor::Device;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer as HfTokenizer};

use super::TextModel;
use super::text_model::check_vocab;
use super::quants::{block, dequantize, type_name};
use crate::config::{ChatConfig, IMPROVER_SYSTEM, ModelConfig, RunConfig};
use crate::data::Tokenizer;
use crate::data::chat_template::ChatTemplate;
use crate::error::{Error, Result};

/// A metadata value.
#[derive(Debug, Clone)]
enum Meta {
    Int(i64),
    Float(f64),
    Bool,
    Str(String),
    Array(Vec<Meta>),
}

impl Meta {
    fn int(&self) -> Option<i64> {
        match self {
            Meta::Int(v) => Some(*v),
            _ => None,
        }
    }
    fn float(&self) -> Option<f64> {
        match self {
            Meta::Float(v) => Some(*v),
            Meta::Int(v) => Some(*v as f64),
            _ => None,
        }
    }
    fn str(&self) -> Option<&str> {
        match self {
            Meta::Str(s) => Some(s),
            _ => None,
        }
    }
}

struct TensorInfo {
    /// `ne`: the innermost (fastest) dimension first.
    dims: Vec<usize>,
    kind: u32,
    offset: usize,
}

/// A parsed file: metadata, tensor table, and where the data starts.
struct Gguf<'a> {
    label: String,
    bytes: &'a [u8],
    meta: HashMap<String, Meta>,
    tensors: HashMap<String, TensorInfo>,
    data_start: usize,
}

struct Cursor<'a> {
    label: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Error::file(self.label, format!("truncated: needs {n} more bytes at offset {}", self.at)));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn len(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).ok().filter(|&n| n <= self.bytes.len()).ok_or_else(|| Error::file(self.label, format!("a length of {n} at offset {}: corrupt", self.at)))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.len()?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|e| Error::file(self.label, e))
    }
    fn value(&mut self, kind: u32) -> Result<Meta> {
        let b = |c: &mut Self, n: usize| -> Result<Vec<u8>> { Ok(c.take(n)?.to_vec()) };
        Ok(match kind {
            0 => Meta::Int(b(self, 1)?[0] as i64),
            1 => Meta::Int(b(self, 1)?[0] as i8 as i64),
            2 => Meta::Int(u16::from_le_bytes(b(self, 2)?.try_into().expect("2")) as i64),
            3 => Meta::Int(i16::from_le_bytes(b(self, 2)?.try_into().expect("2")) as i64),
            4 => Meta::Int(self.u32()? as i64),
            5 => Meta::Int(self.u32()? as i32 as i64),
            6 => Meta::Float(f32::from_bits(self.u32()?) as f64),
            7 => {
                b(self, 1)?;
                Meta::Bool
            }
            8 => Meta::Str(self.string()?),
            9 => {
                let (inner, n) = (self.u32()?, self.len()?);
                Meta::Array((0..n).map(|_| self.value(inner)).collect::<Result<_>>()?)
            }
            10 => Meta::Int(self.u64()? as i64),
            11 => Meta::Int(self.u64()? as i64),
            12 => Meta::Float(f64::from_bits(self.u64()?)),
            other => return Err(Error::file(self.label, format!("unknown metadata type {other}"))),
        })
    }
}

impl<'a> Gguf<'a> {
    fn parse(label: &str, bytes: &'a [u8]) -> Result<Self> {
        let mut c = Cursor { label, bytes, at: 0 };
        if c.take(4).map_err(|_| Error::file(label, "not a GGUF file (too short)"))? != b"GGUF" {
            return Err(Error::file(label, "not a GGUF file (no GGUF magic)"));
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(Error::file(label, format!("GGUF version {version} is not supported (2, 3)")));
        }
        let (n_tensors, n_meta) = (c.len()?, c.len()?);
        let mut meta = HashMap::new();
        for _ in 0..n_meta {
            let key = c.string()?;
            let kind = c.u32()?;
            meta.insert(key, c.value(kind)?);
        }
        let mut tensors = HashMap::new();
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()? as usize;
            let dims = (0..n_dims).map(|_| c.len()).collect::<Result<Vec<_>>>()?;
            let kind = c.u32()?;
            let offset = c.len()?;
            tensors.insert(name, TensorInfo { dims, kind, offset });
        }
        let align = meta.get("general.alignment").and_then(Meta::int).unwrap_or(32).max(1) as usize;
        let data_start = c.at.div_ceil(align) * align;
        Ok(Self { label: label.to_string(), bytes, meta, tensors, data_start })
    }

    fn meta(&self, key: &str) -> Result<&Meta> {
        self.meta.get(key).ok_or_else(|| Error::file(&self.label, format!("metadata {key} is missing")))
    }

    fn count(&self, key: &str) -> Result<usize> {
        self.meta(key)?.int().map(|v| v as usize).ok_or_else(|| Error::file(&self.label, format!("metadata {key}: expected a number")))
    }

    /// A tensor as f32 in Hugging Face's shape (`dims` reversed), checked against `shape`.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.tensors.get(name).ok_or_else(|| Error::file(&self.label, format!("tensor {name} is missing")))?;
        let hf_shape: Vec<usize> = t.dims.iter().rev().copied().collect();
        if hf_shape != shape {
            return Err(Error::file(&self.label, format!("tensor {name} has shape {hf_shape:?}, the metadata implies {shape:?}")));
        }
        let (per_block, block_bytes) = block(t.kind)
            .ok_or_else(|| Error::file(&self.label, format!("tensor {name}: {} is not supported ({})", type_name(t.kind), super::quants::SUPPORTED)))?;
        let n: usize = shape.iter().product();
        if n % per_block != 0 {
            return Err(Error::file(&self.label, format!("tensor {name}: {n} values are not whole blocks of {per_block}")));
        }
        let start = self.data_start + t.offset;
        let end = start + n / per_block * block_bytes;
        let data = self.bytes.get(start..end).ok_or_else(|| Error::file(&self.label, format!("truncated: tensor {name} ends past the end of the file")))?;
        let mut out = Vec::with_capacity(n);
        dequantize(t.kind, data, &mut out);
        Ok(out)
    }
}

/// GGUF's tensor names for Hugging Face's.
fn gguf_name(hf: &str) -> String {
    let map = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = map.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let parts = [
        ("input_layernorm", "attn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("post_attention_layernorm", "ffn_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ];
    let rest = hf.strip_prefix("model.layers.").unwrap_or(hf);
    let (layer, rest) = rest.split_once('.').unwrap_or(("", rest));
    let (part, suffix) = rest.rsplit_once('.').unwrap_or((rest, ""));
    let part = parts.iter().find(|(h, _)| *h == part).map_or(part, |(_, g)| g);
    format!("blk.{layer}.{part}.{suffix}")
}

/// llama.cpp stores llama's Q and K rows with each head's two rotary halves interleaved;
/// Hugging Face keeps them as halves. Undo it for `heads` heads of `rows / heads` rows.
fn unpermute(values: Vec<f32>, heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let per_head = rows / heads;
    let half = per_head / 2;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                // GGUF row (h, i, j) is HF row (h, j, i).
                let from = (h * per_head + i * 2 + j) * cols;
                let to = (h * per_head + j * half + i) * cols;
                out[to..to + cols].copy_from_slice(&values[from..from + cols]);
            }
        }
    }
    out
}

/// Open a GGUF file's bytes; `label` (its path) names it in errors.
pub fn open(label: &str, bytes: &[u8], device: &Device) -> Result<(RunConfig, TextModel)> {
    let g = Gguf::parse(label, bytes)?;
    let arch = g.meta("general.architecture")?.str().unwrap_or_default().to_string();
    if arch != "llama" && arch != "qwen2" {
        return Err(Error::file(label, format!("architecture {arch:?} is not supported (llama, qwen2)")));
    }
    let key = |k: &str| format!("{arch}.{k}");
    if let Some(kind) = g.meta.get(&key("rope.scaling.type")).and_then(Meta::str).filter(|k| *k != "none") {
        return Err(Error::file(label, format!("rope scaling {kind:?} is not supported")));
    }
    let tokenizer = tokenizer(&g)?;
    let embed = g.tensors.get("token_embd.weight").ok_or_else(|| Error::file(label, "tensor token_embd.weight is missing"))?;
    let vocab_size = embed.dims.get(1).copied().unwrap_or(0);
    let heads = g.count(&key("attention.head_count"))?;
    let config = ModelConfig::new(
        vocab_size,
        g.count(&key("embedding_length"))?,
        g.count(&key("block_count"))?,
        heads,
        g.meta.get(&key("attention.head_count_kv")).and_then(Meta::int).map_or(heads, |v| v as usize),
        g.count(&key("feed_forward_length"))?,
    )
    .with_max_seq_len(g.count(&key("context_length")).unwrap_or(2048))
    .with_rope_theta(g.meta.get(&key("rope.freq_base")).and_then(Meta::float).unwrap_or(10000.0))
    .with_norm_eps(g.meta.get(&key("attention.layer_norm_rms_epsilon")).and_then(Meta::float).unwrap_or(1e-5))
    .with_tie_embeddings(!g.tensors.contains_key("output.weight"))
    .with_attention_bias(arch == "qwen2");
    config.validate().map_err(|e| Error::file(label, e))?;
    check_vocab(label, &tokenizer, &config)?;
    let (heads, kv_heads, d) = (config.n_heads, config.n_kv_heads, config.d_model);
    let model = config.load(
        &mut |name, shape| {
            let values = g.tensor(&gguf_name(name), shape)?;
            Ok(match (arch.as_str(), name.rsplit('.').nth(1)) {
                ("llama", Some("q_proj")) if name.ends_with("weight") => unpermute(values, heads, shape[0], d),
                ("llama", Some("k_proj")) if name.ends_with("weight") => unpermute(values, kv_heads, shape[0], d),
                _ => values,
            })
        },
        device,
    )?;
    let run = RunConfig::pretrained(config.clone(), format!("gguf:{arch}"), tokenizer.chat().cloned());
    Ok((run, TextModel { config, tokenizer, model }))
}

/// Qwen2's pre-tokenizer split, as its `tokenizer.json` writes it.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The byte-level BPE the metadata describes, with its chat template.
fn tokenizer(g: &Gguf<'_>) -> Result<Tokenizer> {
    let label = &g.label;
    let model = g.meta("tokenizer.ggml.model")?.str().unwrap_or_default();
    if model != "gpt2" {
        return Err(Error::file(label, format!("tokenizer model {model:?} is not supported (gpt2: byte-level BPE)")));
    }
    let strings = |key: &str| -> Result<Vec<String>> {
        match g.meta(key)? {
            Meta::Array(items) => Ok(items.iter().map(|v| v.str().unwrap_or_default().to_string()).collect()),
            _ => Err(Error::file(label, format!("metadata {key}: expected an array"))),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
        .into_iter()
        .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect();
    let types: Vec<i64> = match g.meta.get("tokenizer.ggml.token_type") {
        Some(Meta::Array(items)) => items.iter().map(|v| v.int().unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| Error::file(label, format!("tokenizer: {e}")))?;
    let byte_level = ByteLevel::new(false, true, true);
    let pre = g.meta.get("tokenizer.ggml.pre").and_then(Meta::str).unwrap_or("default");
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        "default" | "gpt-2" | "gpt2" => byte_level.into(),
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        "qwen2" => {
            let split = Split::new(SplitPattern::Regex(QWEN2_SPLIT.into()), SplitDelimiterBehavior::Isolated, false).map_err(|e| Error::file(label, e))?;
            Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into()
        }
        other => return Err(Error::file(label, format!("pre-tokenizer {other:?} is not supported (gpt-2, smollm, qwen2)"))),
    };
    let mut inner = HfTokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    // Control (3) and user-defined (4) tokens are matched whole, before the BPE.
    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| **t == 3 || **t == 4)
        .map(|(s, t)| AddedToken::from(s.clone(), *t == 3))
        .collect();
    inner.add_special_tokens(&added);
    let token = |key: &str| g.meta.get(key).and_then(Meta::int).and_then(|i| tokens.get(i as usize)).cloned();
    let template = g.meta("tokenizer.chat_template")?.str().unwrap_or_default().to_string();
    let eos_token = token("tokenizer.ggml.eos_token_id").ok_or_else(|| Error::file(label, "metadata tokenizer.ggml.eos_token_id is missing"))?;
    let chat = ChatConfig {
        template,
        bos_token: token("tokenizer.ggml.bos_token_id"),
        eos_token,
        stop_tokens: Vec::new(),
        pad_token: token("tokenizer.ggml.padding_token_id"),
        improver_system: IMPROVER_SYSTEM.to_string(),
    };
    let template = ChatTemplate::new(&format!("{label}: tokenizer.chat_template"), chat)?;
    Tokenizer::with_chat(label, inner, template)
}
