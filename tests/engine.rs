//! Whole-engine behaviour on burn's CPU backend: training, masking, generation, resume.
#![cfg(not(target_arch = "wasm32"))] // native: wasm-pack builds every test target for wasm32

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};
use pollster::block_on;

use sgpo::checkpoint::Checkpoint;
use sgpo::config::{OptimConfig, SftConfig};
use sgpo::data::{Example, Tokenizer};
use sgpo::generate::{SamplingConfig, Stop, generate};
use sgpo::metrics::TrainStep;
use sgpo::rng::Rng;
use sgpo::readback::max_diff;
use sgpo::train::SftRun;

fn tiny_data() -> (Tokenizer, Vec<Example>) {
    let examples = sgpo::data::tasks::generate(400, 1);
    (Tokenizer::train_on(&examples, 200).unwrap(), examples)
}

fn tiny_config(steps: usize) -> SftConfig {
    SftConfig {
        preset: "tiny".into(),
        steps,
        batch_size: 8,
        seed: 7,
        checkpoint_every: 3,
        optim: OptimConfig { lr: 5e-3, warmup_steps: 3, ..OptimConfig::default() },
        ..SftConfig::default()
    }
}

/// `n` steps, their numbers read back as the run reads them (every few steps), then the rest.
fn train(run: &mut SftRun, n: usize) -> Vec<TrainStep> {
    let first = run.state.step;
    let mut log: Vec<TrainStep> = (0..n).flat_map(|_| block_on(run.step()).unwrap()).collect();
    block_on(run.flush(&mut |m| log.push(m))).unwrap();
    assert_eq!(log.iter().map(|m| m.step).collect::<Vec<_>>(), (first + 1..=first + n).collect::<Vec<_>>(), "every step once, in order");
    log
}

fn trained_tiny(steps: usize) -> (SftRun, Vec<TrainStep>, Vec<Example>) {
    let (tok, examples) = tiny_data();
    let mut run = SftRun::new(tiny_config(steps), tok, &examples, &Device::flex()).unwrap();
    let log = train(&mut run, steps);
    (run, log, examples)
}

#[test]
fn loss_decreases_on_a_tiny_run() {
    let (_, log, _) = trained_tiny(80);
    let mean = |xs: &[TrainStep]| xs.iter().map(|m| m.loss).sum::<f32>() / xs.len() as f32;
    let (first, last) = (mean(&log[..5]), mean(&log[75..]));
    assert!(last < 0.65 * first, "loss {first} -> {last}");
    assert!(log.iter().all(|m| m.grad_norm.is_finite() && m.tokens > 0));
}

/// Reading the steps' numbers back every 4 steps (or only at the end) records each step as
/// reading it before its update does: the same losses and norms, step by step, and the same
/// weights after (the update clips by the norm where the step left it, on the device).
#[test]
fn steps_read_back_together_record_what_steps_read_one_by_one_do() {
    let (tok, examples) = tiny_data();
    let device = Device::flex();
    let run_with = |read_every: usize| {
        // A low clip, so that the device-side clipping acts.
        let config = SftConfig { optim: OptimConfig { grad_clip: 0.3, ..tiny_config(10).optim }, ..tiny_config(10) };
        let mut run = SftRun::new(config, tok.clone(), &examples, &device).unwrap();
        run.set_read_every(read_every);
        let mut per_call = Vec::new();
        let log: Vec<TrainStep> = (0..10)
            .flat_map(|_| {
                let read = block_on(run.step()).unwrap();
                per_call.push(read.len());
                read
            })
            .collect();
        (run, log, per_call)
    };
    let (one, expected, reads) = run_with(1);
    assert_eq!(reads, vec![1; 10]);
    assert!(expected.iter().filter(|m| m.grad_norm > 0.3).count() > 5, "clipping acts on most steps");
    for read_every in [4, 100] {
        let (run, log, reads) = run_with(read_every);
        let expected_reads = if read_every == 4 { vec![0, 0, 0, 4, 0, 0, 0, 4, 0, 2] } else { [vec![0; 9], vec![10]].concat() };
        assert_eq!(reads, expected_reads, "read every {read_every}: reads at the due steps and the last");
        for (a, b) in expected.iter().zip(&log) {
            assert_eq!((a.step, a.tokens, a.lr), (b.step, b.tokens, b.lr));
            assert_eq!((a.loss, a.grad_norm), (b.loss, b.grad_norm), "read every {read_every}, step {}", a.step);
        }
        let w = |run: &SftRun| common::probe_logits(&run.model, &run.model_config);
        assert_eq!(w(&one), w(&run), "read every {read_every}: the same weights");
    }
}

/// A step that is not finite, read with the steps after it: the error names that step, the log
/// holds the steps before it, and the model stays finite (the update of every step whose report
/// was not finite changed nothing on the device).
#[test]
fn a_step_not_finite_among_unread_ones_is_named_and_spoils_nothing() {
    let (tok, examples) = tiny_data();
    let config = SftConfig { optim: OptimConfig { lr: 1e9, warmup_steps: 0, ..OptimConfig::default() }, ..tiny_config(40) };
    let mut run = SftRun::new(config.clone(), tok.clone(), &examples, &Device::flex()).unwrap();
    run.set_read_every(16);
    let mut log = Vec::new();
    let error = loop {
        match block_on(run.step()) {
            Ok(read) => log.extend(read),
            Err(e) => break e,
        }
    };
    let sgpo::Error::NonFinite { stage, step, .. } = error else { panic!("{error}") };
    assert_eq!(stage, "sft");
    assert!(step > 1 && run.state.step >= step, "step {step} of {} taken", run.state.step);
    assert_eq!(log.iter().map(|m| m.step).collect::<Vec<_>>(), (1..step).collect::<Vec<_>>(), "the steps before it, each once");
    assert!(log.iter().all(|m| m.loss.is_finite() && m.grad_norm.is_finite()));
    struct AllFinite(usize);
    impl ModuleVisitor for AllFinite {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 += param.val().into_data().iter::<f32>().filter(|x| !x.is_finite()).count();
        }
    }
    let mut not_finite = AllFinite(0);
    run.model.visit(&mut not_finite);
    assert_eq!(not_finite.0, 0, "weights not finite after the skipped updates");

    // The same steps read by a driver's flush (before a checkpoint): the steps before the bad
    // one are handed over, then the error, and nothing is left waiting.
    let mut run = SftRun::new(config.clone(), tok, &examples, &Device::flex()).unwrap();
    run.set_read_every(100);
    for _ in 0..step + 2 {
        assert!(block_on(run.step()).unwrap().is_empty(), "not read before the flush");
    }
    let mut flushed = Vec::new();
    let error = block_on(run.flush(&mut |m| flushed.push(m.step))).unwrap_err();
    assert!(matches!(error, sgpo::Error::NonFinite { step: s, .. } if s == step), "{error}");
    assert_eq!(flushed, (1..step).collect::<Vec<_>>());
    assert!(run.all_read());
}

#[test]
fn kv_cache_greedy_equals_recomputed_greedy_and_batching_changes_nothing() {
    let (run, _, examples) = trained_tiny(60);
    let model = run.model.valid();
    let tok = &run.tokenizer;
    let device = Device::flex();
    // Prompts of different lengths, so the batch is left-padded.
    let prompts: Vec<Vec<u32>> = examples[..6].iter().map(|e| tok.policy_prompt(&e.prompt).unwrap()).collect();
    assert!(prompts.iter().any(|p| p.len() != prompts[0].len()));
    let s = tok.special;
    // No id is u32::MAX: every row runs the full 12 steps, so every position is compared.
    let never = u32::MAX;
    let greedy = SamplingConfig::greedy(12);
    // Sampled answers differ from row to row; the cache must not change a single draw either.
    let sampled = SamplingConfig { temperature: 1.0, ..greedy.clone() };
    let run = |ps: &[Vec<u32>], cfg: &SamplingConfig, cache: bool| {
        block_on(generate(&model, ps, cfg, Stop { end: never, pad: s.pad, suppress: &[] }, &mut Rng::new(3), cache, &device)).unwrap()
    };
    for cfg in [&greedy, &sampled] {
        let cached = run(&prompts, cfg, true);
        assert_eq!(cached, run(&prompts, cfg, false), "temperature {}", cfg.temperature);
        assert!(cached.iter().all(|t| t.len() == 12));
    }
    let batched = run(&prompts, &greedy, true);
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(run(std::slice::from_ref(p), &greedy, true)[0], batched[i], "row {i} alone vs in a padded batch");
    }
    let draws = run(&prompts, &sampled, true);
    assert!(draws.iter().any(|t| t != &draws[0]), "sampled rows should differ: {draws:?}");
    assert_eq!(draws, run(&prompts, &sampled, true), "sampling is reproducible from the seed");
}

#[test]
fn shapes_and_causal_masking() {
    let (tok, examples) = tiny_data();
    let run = SftRun::new(tiny_config(1), tok, &examples, &Device::flex()).unwrap();
    let model = run.model.valid();
    let device = Device::flex();
    let vocab = run.tokenizer.vocab_size();
    let ids = |v: Vec<i32>| Tensor::<2, Int>::from_data(TensorData::new(v, [2, 5]), &device);
    let a = model.forward_causal(ids(vec![3, 4, 5, 6, 7, 8, 9, 10, 11, 12]));
    assert_eq!(a.dims(), [2, 5, vocab]);
    // Changing the last two tokens must not change the logits before them.
    let b = model.forward_causal(ids(vec![3, 4, 5, 20, 21, 8, 9, 10, 22, 23]));
    let head = |t: Tensor<3>| -> Vec<f32> { t.narrow(1, 0, 3).into_data().iter::<f32>().collect() };
    let tail = |t: Tensor<3>| -> Vec<f32> { t.narrow(1, 3, 2).into_data().iter::<f32>().collect() };
    let (ha, hb) = (head(a.clone()), head(b.clone()));
    assert!(ha.iter().zip(&hb).all(|(x, y)| (x - y).abs() < 1e-5));
    assert!(tail(a).iter().zip(tail(b)).any(|(x, y)| (x - y).abs() > 1e-4));
}

#[test]
fn resume_after_interruption_matches_an_uninterrupted_run() {
    let (tok, examples) = tiny_data();
    let device = Device::flex();
    let mut straight = SftRun::new(tiny_config(6), tok.clone(), &examples, &device).unwrap();
    let full_log = train(&mut straight, 6);

    let dir = common::TempDir::new();
    let mut first = SftRun::new(tiny_config(6), tok, &examples, &device).unwrap();
    let mut log = train(&mut first, 3);
    block_on(first.checkpoint()).unwrap().save(dir.path()).unwrap();
    drop(first); // the "killed" process
    let checkpoint = Checkpoint::load(dir.path()).unwrap();
    assert_eq!(checkpoint.state.step, 3);
    let mut resumed = SftRun::resume(&checkpoint, &examples, &device).unwrap();
    log.extend(train(&mut resumed, 3));
    assert!(resumed.is_done());

    for (a, b) in full_log.iter().zip(&log) {
        assert_eq!((a.step, a.tokens), (b.step, b.tokens));
        assert!((a.loss - b.loss).abs() < 1e-5, "step {}: {} vs {}", a.step, a.loss, b.loss);
        assert!((a.grad_norm - b.grad_norm).abs() < 1e-4);
        assert_eq!(a.lr, b.lr);
    }
    let w = |run: &SftRun| common::probe_logits(&run.model, &run.model_config);
    let d = max_diff(&w(&straight), &w(&resumed));
    assert!(d < 1e-5, "max logit difference {d}");
}

#[test]
fn checkpoints_replace_each_other_atomically() {
    let (tok, examples) = tiny_data();
    let dir = common::TempDir::new();
    let mut run = SftRun::new(tiny_config(4), tok, &examples, &Device::flex()).unwrap();
    train(&mut run, 2);
    block_on(run.checkpoint()).unwrap().save(dir.path()).unwrap();
    train(&mut run, 2);
    // A crash mid-save leaves a partial directory behind; the next save must ignore it.
    std::fs::create_dir_all(dir.path().join(".checkpoint-00000004.partial/junk")).unwrap();
    block_on(run.checkpoint()).unwrap().save(dir.path()).unwrap();
    let names = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("checkpoint-"))
            .collect();
        names.sort();
        names
    };
    // The new checkpoint, and the previous one kept in case the new one is bad.
    assert_eq!(names(), vec!["checkpoint-00000002".to_string(), "checkpoint-00000004".to_string()]);
    assert_eq!(Checkpoint::load(dir.path()).unwrap().state.step, 4);
    // The same step saved again goes to a new name: `latest` never names a directory in flux.
    block_on(run.checkpoint()).unwrap().save(dir.path()).unwrap();
    let latest = std::fs::read_to_string(dir.path().join("latest")).unwrap();
    assert_eq!(latest.trim(), "checkpoint-00000004-1");
    assert_eq!(names(), vec!["checkpoint-00000004".to_string(), "checkpoint-00000004-1".to_string()]);
    assert_eq!(Checkpoint::load(dir.path()).unwrap().state.step, 4);
    assert!(dir.path().join("config.json").exists());
    let missing = Checkpoint::load(&dir.path().join("nope")).unwrap_err().to_string();
    assert!(missing.contains("no checkpoint here"), "{missing}");
}
