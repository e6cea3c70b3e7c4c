//! A page run (SFT, then SGPO) interrupted three times and restored from snapshots through the
//! checkpoint's named files, as a reload of the page does, against the same run uninterrupted.
//! Shared by `tests/pipeline.rs` (CPU backend) and `tests/web.rs` (WebGPU in Chromium).
#![allow(dead_code)]

use burn::tensor::Device;
use sgpo::checkpoint::Checkpoint;
use sgpo::config::PipelineConfig;
use sgpo::metrics::Event;
use sgpo::pipeline::{Inputs, Pipeline, Snapshot};
use sgpo::sgpo::Stage;

/// Every optimiser step's (stage, step, loss), in order: what two runs must agree on.
pub fn losses(events: &[Event]) -> Vec<(String, usize, f32)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Train(t) => Some((t.stage.clone(), t.step, t.loss)),
            Event::Dpo(d) => Some(("dpo".into(), d.step, d.loss)),
            _ => None,
        })
        .collect()
}

/// A page run small enough for a software WebGPU adapter, with every stage in it.
pub fn config() -> PipelineConfig {
    PipelineConfig {
        sft_steps: 4,
        iterations: 1,
        prompts_per_iteration: 8,
        improver_steps: 3,
        // Stage 1 drafts one answer per improver example: 8, not the page's 128 (on a
        // software WebGPU adapter those drafts were most of the test's time).
        improver_examples: 8,
        batch_size: 4,
        max_new_tokens: 6,
        eval_examples: 6,
        vocab_size: 300,
        ..PipelineConfig::default()
    }
}

/// Through the files a browser stores, and back.
pub fn reload(snapshot: Snapshot) -> Snapshot {
    let files = snapshot.checkpoint.files();
    let checkpoint = Checkpoint::from_files("stored", |name| Ok(files.iter().find(|(n, _)| *n == name).map(|(_, b)| b.clone()))).unwrap();
    Snapshot { checkpoint, sft_model: snapshot.sft_model }
}

pub async fn run_to_end(mut p: Pipeline, events: &mut Vec<Event>) -> Pipeline {
    while !p.is_done() {
        p.step(&mut |e| events.push(e)).await.unwrap();
    }
    p
}

/// The losses of the run uninterrupted, and of the same run stopped mid-SFT, mid-improver and
/// in the DPO stage and resumed each time from its snapshot.
pub async fn straight_and_resumed(device: &Device) -> (Vec<(String, usize, f32)>, Vec<(String, usize, f32)>) {
    let inputs = Inputs::default();
    let mut straight = Vec::new();
    run_to_end(Pipeline::new(config(), &inputs, device, None).unwrap(), &mut straight).await;
    let expected = losses(&straight);
    for stage in ["sft", "improver", "dpo"] {
        assert!(expected.iter().any(|(s, _, _)| s == stage), "no {stage} step in {expected:?}");
    }

    let mut events = Vec::new();
    let mut p = Pipeline::new(config(), &inputs, device, None).unwrap();
    let mut reloads = 0;
    while !p.is_done() {
        p.step(&mut |e| events.push(e)).await.unwrap();
        let pos = p.position();
        let due = match reloads {
            0 => pos.phase == "sft" && pos.step == 2,
            1 => pos.stage == Stage::Improver && pos.step == 1,
            2 => pos.stage == Stage::Dpo,
            _ => false,
        };
        if due {
            p.flush(&mut |e| events.push(e)).await.unwrap();
            let snapshot = reload(p.snapshot().await.unwrap());
            assert!(snapshot.checkpoint.optimizer.is_some(), "the snapshot holds AdamW's moments");
            drop(p);
            p = Pipeline::resume(config(), &inputs, &snapshot, device).unwrap();
            assert_eq!(p.position(), pos, "resumed where it stopped");
            reloads += 1;
        }
    }
    assert_eq!(reloads, 3, "interrupted {reloads} times");
    assert!(!p.last_pairs().is_empty());
    (expected, losses(&events))
}
