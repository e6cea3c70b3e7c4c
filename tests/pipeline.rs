//! The run the browser drives (SFT, then SGPO), interrupted and restored from snapshots the
//! way a page reload does it: through the checkpoint's named files.
#![cfg(not(target_arch = "wasm32"))] // native: wasm-pack builds every test target for wasm32

mod common;

use burn::tensor::Device;
use common::resume::{self, config, losses, reload, run_to_end};
use pollster::block_on;

use sgpo::metrics::Event;
use sgpo::config::{Method, PipelineConfig};
use sgpo::pipeline::{Inputs, ModelFiles, NamedText, Pipeline};
use sgpo::sgpo::Stage;

#[test]
fn a_run_restored_from_snapshots_matches_an_uninterrupted_one() {
    let (expected, resumed) = block_on(resume::straight_and_resumed(&Device::flex()));
    assert_eq!(resumed, expected);
}

#[test]
fn a_snapshot_without_optimiser_state_is_refused_by_name() {
    // Fresh AdamW moments would take far larger steps than the run was taking: not a resume.
    let device = Device::flex();
    let inputs = Inputs::default();
    let mut p = Pipeline::new(config(), &inputs, &device, None).unwrap();
    let mid_sft = |p: &Pipeline| p.position().phase == "sft" && p.position().step == 2;
    let mid_improver = |p: &Pipeline| p.position().stage == Stage::Improver && p.position().step == 1;
    for (phase, due) in [("sft", &mid_sft as &dyn Fn(&Pipeline) -> bool), ("improver", &mid_improver)] {
        while !due(&p) {
            assert!(!p.is_done());
            block_on(p.step(&mut |_| {})).unwrap();
        }
        block_on(p.flush(&mut |_| {})).unwrap();
        let mut snapshot = reload(block_on(p.snapshot()).unwrap());
        assert!(snapshot.checkpoint.optimizer.as_ref().is_some_and(|b| !b.is_empty()), "{phase}: the optimiser state is saved");
        snapshot.checkpoint.optimizer = None;
        let error = Pipeline::resume(config(), &inputs, &snapshot, &device).err().expect("refused").to_string();
        assert!(error.contains("optimizer.safetensors") && error.contains("missing"), "{phase}: {error}");
    }
}

#[test]
fn one_builtin_task_family_can_be_chosen() {
    let device = Device::flex();
    let mut p = Pipeline::new(PipelineConfig { task: "sort".into(), ..config() }, &Inputs::default(), &device, None).unwrap();
    assert!(p.example_prompt().unwrap().starts_with("sort the numbers"), "{:?}", p.example_prompt());
    let mut prompts = Vec::new();
    while !p.is_done() {
        block_on(p.step(&mut |e| {
            if let Event::Sample(s) = e {
                prompts.push(s.prompt);
            }
        }))
        .unwrap();
    }
    assert!(!prompts.is_empty() && prompts.iter().all(|p| p.starts_with("sort the numbers")), "{prompts:?}");
}

#[test]
fn a_checkpoint_as_init_skips_sft() {
    let device = Device::flex();
    let mut p = Pipeline::new(config(), &Inputs::default(), &device, None).unwrap();
    block_on(p.step(&mut |_| {})).unwrap();
    block_on(p.flush(&mut |_| {})).unwrap();
    let checkpoint = reload(block_on(p.snapshot()).unwrap()).checkpoint;
    let inputs = Inputs { init: Some(("upload.tar".into(), checkpoint)), ..Inputs::default() };
    let p = Pipeline::new(config(), &inputs, &device, None).unwrap();
    assert_eq!(p.position().phase, "preference");
    assert_eq!(p.position().stage, Stage::Start);
}

#[test]
fn user_data_errors_name_the_file_and_line() {
    let device = Device::flex();
    let bad = Inputs { data: Some(NamedText { name: "mine.jsonl".into(), text: "{\"instruction\": \"hi\", \"output\": \"yo\"}\n{oops\n".into() }), ..Inputs::default() };
    let e = Pipeline::new(config(), &bad, &device, None).err().expect("bad JSON is refused").to_string();
    assert!(e.contains("mine.jsonl:2"), "{e}");
    let prompts_only = Inputs { data: Some(NamedText { name: "p.jsonl".into(), text: "{\"prompt\": \"a\"}\n".into() }), ..Inputs::default() };
    let e = Pipeline::new(config(), &prompts_only, &device, None).err().expect("nothing to fine-tune on").to_string();
    assert!(e.contains("p.jsonl") && e.contains("answers"), "{e}");
    // DPO needs pairs: refused before any SFT step, not after.
    let dpo = PipelineConfig { method: Method::Dpo, ..config() };
    let e = Pipeline::new(dpo, &Inputs::default(), &device, None).err().expect("no pairs for DPO").to_string();
    assert!(e.contains("dpo needs preference pairs"), "{e}");
    let e = Pipeline::new(PipelineConfig { task: "poetry".into(), ..config() }, &Inputs::default(), &device, None).err().expect("unknown task").to_string();
    assert!(e.contains("poetry") && e.contains("sort"), "{e}");
    let tok = Inputs { tokenizer: Some(NamedText { name: "tokenizer.json".into(), text: "{}".into() }), ..Inputs::default() };
    let e = Pipeline::new(config(), &tok, &device, None).err().expect("not a tokenizer").to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}

/// A GGUF model picked in the page: the preference stage starts from it with LoRA, its
/// snapshots hold the adapters alone (a fraction of the model), and a run restored from them
/// and the same file (the page's cached copy) ends with the losses of an uninterrupted run.
#[test]
fn a_model_file_runs_sgpo_with_lora_and_resumes_from_adapter_snapshots() {
    let device = Device::flex();
    let name = "llama-tiny.Q8_0.gguf";
    let bytes = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap();
    let inputs = Inputs { model: Some(ModelFiles { name: name.into(), files: [(name.to_string(), bytes)].into() }), ..Inputs::default() };
    let config = PipelineConfig { lora_rank: 4, ..config() };
    let mut straight = Vec::new();
    let p = Pipeline::new(config.clone(), &inputs, &device, None).unwrap();
    // The fixture has a chat template: the page offers a prompt worded for chat.
    assert!(p.example_prompt().unwrap().contains("Reply with only"), "{:?}", p.example_prompt());
    let p = block_on(run_to_end(p, &mut straight));
    let expected = losses(&straight);
    assert!(!expected.iter().any(|(s, _, _)| s == "sft"), "a model with weights skips SFT");
    assert!(expected.iter().any(|(s, _, _)| s == "improver") && expected.iter().any(|(s, _, _)| s == "dpo"), "{expected:?}");
    let snapshot = block_on(p.snapshot()).unwrap();
    let full = block_on(sgpo::model::model_bytes(&p.policy())).unwrap();
    assert!(snapshot.checkpoint.model.len() * 4 < full.len(), "adapters {} bytes vs the model {}", snapshot.checkpoint.model.len(), full.len());
    assert!(snapshot.sft_model.is_none());
    let e = snapshot.checkpoint.open("stored", &device).unwrap_err().to_string();
    assert!(e.contains("stored/model.bpk: holds only LoRA adapters"), "{e}");

    let mut events = Vec::new();
    let mut p = Pipeline::new(config.clone(), &inputs, &device, None).unwrap();
    let mut reloaded = 0;
    while !p.is_done() {
        block_on(p.step(&mut |e| events.push(e))).unwrap();
        let pos = p.position();
        if (reloaded == 0 && pos.stage == Stage::Improver && pos.step == 2) || (reloaded == 1 && pos.stage == Stage::Dpo) {
            block_on(p.flush(&mut |e| events.push(e))).unwrap();
            let snapshot = reload(block_on(p.snapshot()).unwrap());
            p = Pipeline::resume(config.clone(), &inputs, &snapshot, &device).unwrap();
            assert_eq!(p.position(), pos);
            reloaded += 1;
        }
    }
    assert_eq!(reloaded, 2);
    assert_eq!(losses(&events), expected);
}
