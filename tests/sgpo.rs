//! SGPO end to end on a tiny model: the improver stage, one iteration of self-generated pairs,
//! and DPO moving the policy toward the improved answers.

use burn::module::Module;
use burn::tensor::Device;
use pollster::block_on;

use sgpo::metrics::Event;
use sgpo::sgpo::{PreferenceData, SgpoConfig, SgpoRun, score_pairs};
use sgpo::tokenizer::Tokenizer;
use sgpo::train::{OptimConfig, SftConfig, SftRun};

fn margin(pairs: &[sgpo::sgpo::ScoredPair]) -> f32 {
    pairs.iter().map(|p| p.reference_chosen - p.reference_rejected).sum::<f32>() / pairs.len() as f32
}

#[test]
fn one_sgpo_iteration_builds_real_pairs_and_raises_their_margin() {
    let device = Device::flex();
    let (train, eval) = sgpo::tasks::builtin_split(600, 27, 1);
    let texts: Vec<&str> = train.iter().flat_map(|e| [e.prompt.as_str(), e.response.as_str()]).collect();
    let tok = Tokenizer::train(texts.into_iter(), 200).unwrap();
    let sft_config = SftConfig {
        preset: "tiny".into(),
        steps: 80,
        batch_size: 16,
        optim: OptimConfig { lr: 5e-3, warmup_steps: 5, ..OptimConfig::default() },
        ..SftConfig::default()
    };
    let mut sft = SftRun::new(sft_config.clone(), tok.clone(), &train, &device).unwrap();
    while !sft.is_done() {
        block_on(sft.step()).unwrap();
    }
    let config = SgpoConfig {
        iterations: 1,
        improver_steps: 40,
        improver_examples: 200,
        prompts_per_iteration: 64,
        dpo_epochs: 3,
        batch_size: 8,
        max_new_tokens: 12,
        dpo_optim: OptimConfig { lr: 1e-3, warmup_steps: 0, min_lr_ratio: 1.0, weight_decay: 0.0, ..OptimConfig::default() },
        ..SgpoConfig::default()
    };
    let data = PreferenceData { labeled: train, eval, ..PreferenceData::default() };
    let model = sft.model.valid();
    let mut run = SgpoRun::new(config, sft.model_config.clone(), sft_config, tok.clone(), model, data, &device).unwrap();
    let mut events = Vec::new();
    block_on(run.train_improver(&mut |e| events.push(e))).unwrap();
    assert!(events.iter().any(|e| matches!(e, Event::Train(t) if t.stage == "improver")));
    let before = run.policy();
    let summary = block_on(run.iteration(&mut |e| events.push(e))).unwrap();

    let pairs = run.last_pairs.clone();
    assert!(!pairs.is_empty(), "no pairs: {summary:?}");
    assert_eq!(summary.pairs_built, pairs.len());
    assert!(pairs.iter().all(|p| p.chosen.split_whitespace().ne(p.rejected.split_whitespace())));
    assert_eq!(summary.pairs_built + summary.pairs_unchanged, summary.prompts);
    assert!(summary.improver_win_rate.is_some() && summary.policy_win_rate_vs_sft.is_some());
    let dpo: Vec<_> = events.iter().filter_map(|e| if let Event::Dpo(d) = e { Some(d) } else { None }).collect();
    assert!(!dpo.is_empty() && dpo.iter().all(|d| d.loss.is_finite()));
    assert!(events.iter().any(|e| matches!(e, Event::Sample(_))));

    // The policy's log-prob margin of chosen over rejected, before and after DPO on the pairs.
    let max_len = run.model_config.max_seq_len;
    let margin_before = margin(&block_on(score_pairs(&before, &tok, &pairs, false, max_len, &device)).unwrap());
    let margin_after = margin(&block_on(score_pairs(&run.policy(), &tok, &pairs, false, max_len, &device)).unwrap());
    assert!(margin_after > margin_before + 0.5, "margin {margin_before} -> {margin_after}");
}
