//! SGPO end to end on a tiny model: the improver stage, one iteration of self-generated pairs,
//! and DPO moving the policy toward the improved answers.
#![cfg(not(target_arch = "wasm32"))] // native: wasm-pack builds every test target for wasm32

mod common;

use burn::tensor::Device;
use pollster::block_on;

use sgpo::checkpoint::Checkpoint;
use sgpo::config::{ImproverTargets, OptimConfig, PairFilter, SftConfig, SgpoConfig};
use sgpo::data::{Example, PreferencePair, RunData, Tokenizer};
use sgpo::metrics::Event;
use sgpo::generate::{Decoder, SamplingConfig};
use sgpo::rng::Rng;
use sgpo::readback::max_diff;
use sgpo::sgpo::improver::{improve, improvement_margins};
use sgpo::sgpo::pairs::{PromptItem, build_pairs};
use sgpo::sgpo::{Pair, SgpoRun, Stage};
use sgpo::train::{ScoredPair, SftRun, score_pairs};

fn margin(pairs: &[ScoredPair]) -> f32 {
    pairs.iter().map(|p| p.reference_chosen - p.reference_rejected).sum::<f32>() / pairs.len() as f32
}

#[test]
fn one_sgpo_iteration_builds_real_pairs_and_raises_their_margin() {
    let device = Device::flex();
    let (sft, train, eval) = tiny_sft(&device, 600, 80);
    let tok = sft.tokenizer.clone();
    let config = SgpoConfig {
        iterations: 1,
        improver_steps: 40,
        improver_examples: 200,
        prompts_per_iteration: 64,
        dpo_epochs: 3,
        batch_size: 8,
        max_new_tokens: 12,
        dpo_optim: OptimConfig::constant(1e-3),
        ..SgpoConfig::default()
    };
    let data = RunData { labeled: train, eval, ..RunData::default() };
    let mut run = SgpoRun::new(config, sft.text_model(), sft.config.clone(), data, &device).unwrap();
    let mut events = Vec::new();
    while run.stage != Stage::Pairs {
        block_on(run.advance(&mut |e| events.push(e))).unwrap();
    }
    assert!(events.iter().any(|e| matches!(e, Event::Train(t) if t.stage == "improver")));
    // Stage 1's summary: every target judged against its draft, most a step toward the answer.
    let stage1 = events.iter().find_map(|e| if let Event::Iteration(i) = e { Some(i.clone()) } else { None }).unwrap();
    let [better, tied, worse] = stage1.improver_targets_judged.expect("stage 1 judges its targets");
    assert_eq!((stage1.iteration, better + tied + worse), (0, 200));
    assert!(better > tied + worse, "{better} {tied} {worse}");
    let before = run.policy();
    while !run.is_done() {
        block_on(run.advance(&mut |e| events.push(e))).unwrap();
    }
    let summary = events
        .iter()
        .rev()
        .find_map(|e| if let Event::Iteration(i) = e { Some(i.clone()) } else { None })
        .unwrap();
    assert_eq!((summary.iteration, summary.improver_targets_judged), (1, None));

    let pairs = run.last_pairs.clone();
    assert!(!pairs.is_empty(), "no pairs: {summary:?}");
    assert_eq!(summary.pairs_built, pairs.len());
    assert!(pairs.iter().all(|p| p.chosen.split_whitespace().ne(p.rejected.split_whitespace())));
    assert_eq!(summary.pairs_built + summary.pairs_unchanged, summary.prompts);
    assert_eq!(summary.candidates, summary.prompts, "one draft per prompt");
    // Pair quality, recomputed from the kept pairs: the judge on chosen against rejected.
    let judge = |a: &str, p: &Pair| sgpo::data::judge::judge(a, p.reference.as_deref().unwrap());
    let count = |f: &dyn Fn(f32, f32) -> bool| pairs.iter().filter(|p| f(judge(&p.chosen, p), judge(&p.rejected, p))).count();
    assert_eq!(summary.pairs_judged, Some([count(&|c, r| c > r), count(&|c, r| c == r), count(&|c, r| c < r)]));
    assert_eq!(summary.pairs_empty_chosen, pairs.iter().filter(|p| p.chosen.trim().is_empty()).count());
    assert!(summary.improver_win_rate.is_some() && summary.policy_win_rate_vs_sft.is_some());
    let dpo: Vec<_> = events.iter().filter_map(|e| if let Event::Dpo(d) = e { Some(d) } else { None }).collect();
    assert!(!dpo.is_empty() && dpo.iter().all(|d| d.loss.is_finite()));
    assert!(events.iter().any(|e| matches!(e, Event::Sample(_))));
    for stage in ["generating", "improving"] {
        let last = events.iter().rev().find_map(|e| match e {
            Event::Progress(p) if p.stage == stage => Some(p.clone()),
            _ => None,
        });
        let last = last.unwrap_or_else(|| panic!("no {stage} progress"));
        assert_eq!((last.done, last.total, last.iteration), (summary.prompts, summary.prompts, 1));
    }

    // The policy's log-prob margin of chosen over rejected, before and after DPO on the pairs.
    let max_len = run.model_config().max_seq_len;
    let trl: Vec<PreferencePair> = pairs.iter().map(Pair::to_trl).collect();
    let margin_before = margin(&block_on(score_pairs(&before, &tok, &trl, false, max_len, &device)).unwrap());
    let margin_after = margin(&block_on(score_pairs(&run.policy(), &tok, &trl, false, max_len, &device)).unwrap());
    assert!(margin_after > margin_before + 0.5, "margin {margin_before} -> {margin_after}");
}

/// Each label-free filter keeps what it promises, from the same drafts and improvements: a
/// margin no pair reaches keeps none, one every pair passes keeps all, and what `confidence:0`
/// keeps has a margin of at least 0; `majority` keeps only rewrites most samples agree on; the
/// judge (a diagnostic) keeps only pairs it rates better.
#[test]
fn pair_filters_keep_what_they_promise() {
    let device = Device::flex();
    let (sft, train, eval) = tiny_sft(&device, 600, 300);
    let tok = sft.tokenizer.clone();
    let config = SgpoConfig { iterations: 1, improver_steps: 30, improver_examples: 150, max_new_tokens: 12, ..SgpoConfig::default() };
    let data = RunData { labeled: train.clone(), eval, ..RunData::default() };
    let mut run = SgpoRun::new(config.clone(), sft.text_model(), sft.config.clone(), data, &device).unwrap();
    while run.stage != Stage::Pairs {
        block_on(run.advance(&mut |_| {})).unwrap();
    }
    let policy = run.policy();
    let decoder = Decoder::new(&policy, &tok, &device);
    let items: Vec<PromptItem> =
        train.iter().take(48).map(|e| PromptItem { prompt: e.prompt.clone(), reference: Some(e.response.clone()) }).collect();
    let max_len = run.model_config().max_seq_len;
    let pairs = |filter: &str| {
        let cfg = SgpoConfig { pair_filter: filter.parse().unwrap(), ..config.clone() };
        block_on(build_pairs(&decoder, &items, &[], &cfg, max_len, 1, &mut Rng::new(5), &mut |_| {})).unwrap()
    };
    let all = pairs("none");
    assert!(all.pairs.len() >= 5 && all.filtered == 0, "{} pairs", all.pairs.len());
    let lenient = pairs("confidence:-1000");
    assert_eq!((lenient.pairs, lenient.filtered), (all.pairs.clone(), 0));
    let strict = pairs("confidence:1000");
    assert_eq!((strict.pairs.len(), strict.filtered), (0, all.pairs.len()));
    let zero = pairs("confidence:0");
    assert_eq!(zero.pairs.len() + zero.filtered, all.pairs.len());
    let field = |f: fn(&Pair) -> &String| zero.pairs.iter().map(|p| f(p).clone()).collect::<Vec<_>>();
    let margins = block_on(improvement_margins(&decoder, &field(|p| &p.prompt), &field(|p| &p.rejected), &field(|p| &p.chosen), max_len)).unwrap();
    assert!(margins.iter().all(|&m| m >= 0.0), "{margins:?}");
    let majority = pairs("majority:3:1");
    assert_eq!(majority.pairs.len() + majority.filtered + majority.unchanged, items.len());
    let judged = pairs("judge");
    assert!(judged.judged.is_none_or(|[_, tied, worse]| tied + worse == 0));
    assert_eq!(judged.judged.map_or(0, |[better, ..]| better), judged.pairs.len());
    assert_eq!(judged.pairs.len() + judged.filtered, all.pairs.len());
    assert_eq!(PairFilter::Judge, "judge".parse().unwrap());
    // More drafts: two samples per prompt and the greedy answer where no sample equals it.
    let cfg = SgpoConfig { drafts_per_prompt: 2, greedy_draft: true, ..config.clone() };
    let more = block_on(build_pairs(&decoder, &items, &[], &cfg, max_len, 1, &mut Rng::new(5), &mut |_| {})).unwrap();
    assert!(more.candidates > 2 * items.len() && more.candidates <= 3 * items.len(), "{}", more.candidates);
    assert_eq!(more.pairs.len() + more.unchanged + more.filtered, more.candidates);
    let greedy = block_on(decoder.greedy_answers(&items.iter().map(|i| i.prompt.clone()).collect::<Vec<_>>(), 12)).unwrap();
    let share = |set: &sgpo::sgpo::PairSet| {
        let n = set.pairs.iter().filter(|p| greedy.iter().zip(&items).any(|(g, i)| i.prompt == p.prompt && sgpo::data::judge::exact_match(g, &p.chosen))).count();
        n as f32 / set.pairs.len() as f32
    };
    assert_eq!(all.chosen_is_greedy, Some(share(&all)));
    // Two improvement passes: the chosen answer is the improver's rewrite of its own rewrite.
    let cfg = SgpoConfig { improvement_passes: 2, ..config.clone() };
    let two = block_on(build_pairs(&decoder, &items, &[], &cfg, max_len, 1, &mut Rng::new(5), &mut |_| {})).unwrap();
    let prompts: Vec<String> = items.iter().map(|i| i.prompt.clone()).collect();
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tok.policy_prompt(p).unwrap()).collect();
    let mut rng = Rng::new(5);
    let drafts = block_on(decoder.complete(&ids, &SamplingConfig::sampled(12, config.draft_temperature), &mut rng, &mut |_, _| {})).unwrap();
    // build_pairs decodes the greedy answers next, with the same generator.
    block_on(decoder.complete(&ids, &SamplingConfig::greedy(12), &mut rng, &mut |_, _| {})).unwrap();
    let greedy_rewrite = |answers: &[String], rng: &mut Rng| block_on(improve(&decoder, &prompts, answers, &SamplingConfig::greedy(12), rng, &mut |_, _| {})).unwrap();
    let first = greedy_rewrite(&drafts, &mut rng);
    let second = greedy_rewrite(&first, &mut rng);
    let expected: Vec<(String, String)> =
        second.into_iter().zip(drafts).filter(|(s, d)| !sgpo::data::judge::exact_match(s, d)).collect();
    assert_eq!(two.pairs.iter().map(|p| (p.chosen.clone(), p.rejected.clone())).collect::<Vec<_>>(), expected);
    assert_ne!(two.pairs, all.pairs, "a second pass changes some answers");
    let refused = SgpoConfig { improvement_passes: 2, pair_filter: "majority:3:0.5".parse().unwrap(), ..config.clone() };
    assert!(refused.validate().unwrap_err().to_string().contains("improvement_passes = 2 with pair_filter = majority"));
    let too_many = SgpoConfig { improvement_passes: 9, ..config.clone() };
    assert!(too_many.validate().unwrap_err().to_string().contains("improvement_passes = 9 is out of range (allowed: 1 to 8)"));
}

/// A tiny model after `steps` of SFT on `n_train` built-in examples, and the data.
fn tiny_sft(device: &Device, n_train: usize, steps: usize) -> (SftRun, Vec<Example>, Vec<Example>) {
    let (train, eval) = sgpo::data::tasks::builtin_split(n_train, n_train / 25, 1);
    let tok = Tokenizer::train_on(&train, 200).unwrap();
    let config = SftConfig {
        preset: "tiny".into(),
        steps,
        batch_size: 16,
        optim: OptimConfig { lr: 5e-3, warmup_steps: 3, ..OptimConfig::default() },
        ..SftConfig::default()
    };
    let mut sft = SftRun::new(config, tok, &train, device).unwrap();
    while !sft.is_done() {
        block_on(sft.step()).unwrap();
    }
    (sft, train, eval)
}

/// Interrupted twice (mid stage 1, mid DPO) and resumed from disk, a run takes the same steps
/// with the same losses and ends with the same weights as one that never stopped.
#[test]
fn sgpo_resumes_mid_stage_exactly() {
    resumes_exactly(ImproverTargets::Edit(0.5), &[
        |r| r.stage == Stage::Improver && r.step() == 3,
        // Stage 1's 6 steps, then 3 DPO steps: one counter over both.
        |r| r.stage == Stage::Dpo && r.iteration == 1 && r.step() == 6 + 3,
    ]);
}

/// `reference-trained`: stage 1 trains the reference-conditioned improver (6 steps), which
/// then writes the targets of its second phase (6 more); interrupted in each phase and in DPO,
/// the run still ends exactly as one that never stopped.
#[test]
fn reference_trained_stage1_runs_two_phases_and_resumes_in_either() {
    let events = resumes_exactly(ImproverTargets::ReferenceTrained(0.5), &[
        |r| r.stage == Stage::Improver && r.step() == 3,
        |r| r.stage == Stage::Improver && r.step() == 6 + 2,
        |r| r.stage == Stage::Dpo && r.iteration == 1 && r.step() == 12 + 1,
    ]);
    let improver_steps = events.iter().filter(|e| matches!(e, Event::Train(t) if t.stage == "improver")).count();
    assert_eq!(improver_steps, 12, "two phases of improver_steps each");
    let stage1 = events.iter().find_map(|e| if let Event::Iteration(i) = e { Some(i.clone()) } else { None }).unwrap();
    let [better, tied, worse] = stage1.improver_targets_judged.expect("the second phase judges the targets it was given");
    assert_eq!((stage1.iteration, stage1.step, better + tied + worse), (0, 12, 24));
}

/// Runs a small preference run straight and again with a checkpoint, save, reopen and restore
/// wherever a `stops` predicate first holds; asserts both take the same steps with the same
/// losses and end with the same weights. The uninterrupted run's events come back.
fn resumes_exactly(improver_targets: ImproverTargets, stops: &[fn(&SgpoRun) -> bool]) -> Vec<Event> {
    let device = Device::flex();
    let (sft, train, eval) = tiny_sft(&device, 300, 30);
    let config = SgpoConfig {
        iterations: 2,
        improver_targets,
        improver_steps: 6,
        improver_examples: 24,
        prompts_per_iteration: 16,
        dpo_epochs: 2,
        batch_size: 4,
        max_new_tokens: 8,
        dpo_optim: OptimConfig::constant(1e-3),
        ..SgpoConfig::default()
    };
    let data = RunData { labeled: train, eval, ..RunData::default() };
    let fresh = || SgpoRun::new(config.clone(), sft.text_model(), sft.config.clone(), data.clone(), &device).unwrap();

    let mut straight = fresh();
    let mut all = Vec::new();
    while !straight.is_done() {
        block_on(straight.advance(&mut |e| all.push(e))).unwrap();
    }

    let dir = common::TempDir::new();
    let mut run = fresh();
    let mut resumed = Vec::new();
    for stop in stops {
        while !stop(&run) {
            block_on(run.advance(&mut |e| resumed.push(e))).unwrap();
        }
        block_on(run.flush(&mut |e| resumed.push(e))).unwrap();
        block_on(run.checkpoint("{}".into())).unwrap().save(dir.path()).unwrap();
        run = fresh();
        run.restore(&Checkpoint::load(dir.path()).unwrap()).unwrap();
    }
    while !run.is_done() {
        block_on(run.advance(&mut |e| resumed.push(e))).unwrap();
    }

    let (a, b) = (common::losses(&all), common::losses(&resumed));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().any(|x| x.0 == "improver") && a.iter().any(|x| x.0 == "dpo"));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.0, x.1), (&y.0, y.1));
        assert!((x.2 - y.2).abs() < 1e-5, "{x:?} vs {y:?}");
    }
    let logits = |r: &SgpoRun| common::probe_logits(&r.policy(), r.model_config());
    let d = max_diff(&logits(&straight), &logits(&run));
    assert!(d < 1e-5, "the resumed run's logits differ from the uninterrupted run's by {d}");
    // The held-out evaluations agree too: a resumed run decodes its baseline again.
    let summaries = |events: &[Event]| -> Vec<_> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Iteration(i) => Some((i.iteration, i.step, i.pairs_built, i.generated_tokens, i.improver_targets_judged, i.policy_win_rate_vs_sft, i.mean_score)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(summaries(&all).len(), 3, "stage 1 and two iterations");
    assert_eq!(summaries(&all), summaries(&resumed));
    all
}
