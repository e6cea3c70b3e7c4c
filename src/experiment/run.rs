//! The experiment's run loop: SFT per setting and SFT seed (from the store when it has the
//! model), then every missing (row, seed) from that model, each scored against it.

use burn::module::Module;
use burn::tensor::Device;

use super::{Compute, ExperimentPlan, Outcome, STAGE1_ROW, Variant};
use crate::config::{ModelConfig, SftConfig};
use crate::data::{Example, RunData, Tokenizer, policy_seqs};
use crate::error::{Error, Result};
use crate::eval::{Comparison, answers, evaluate};
use crate::generate::Decoder;
use crate::metrics::{Event, IterationSummary};
use crate::model::{Model, TextModel, load_model, model_bytes};
use crate::sgpo::{SgpoRun, Stage};
use crate::train::SftRun;

/// Where trained SFT models wait between experiments, so that runs differing only in their
/// preference settings (as tuning on validation does) train each SFT model once.
pub trait SftStore {
    /// The model's bytes (`model_bytes`) and the step it was taken at, if stored under `key`.
    fn load(&mut self, key: &str) -> Option<(Vec<u8>, usize)>;
    fn save(&mut self, key: &str, model: &[u8], step: usize) -> Result<()>;
}

/// What an experiment reports while it runs.
#[derive(Debug, Clone)]
pub enum ExperimentEvent {
    /// SFT of a setting, `step` of at most `total`.
    Sft { setting: &'static str, sft_seed: u64, step: usize, total: usize },
    /// SFT's validation score at `step` (with a plateau rule).
    SftEval { setting: &'static str, sft_seed: u64, step: usize, mean_score: f32, best_step: usize },
    /// A preference iteration of one row and seed finished.
    Iteration { setting: &'static str, row: &'static str, sft_seed: u64, seed: u64, summary: IterationSummary },
    /// A row's run finished (drivers save these: a rerun skips what `done` holds).
    Finished(Outcome),
}

/// SFT from `sft_seed`, to a plateau of the validation score when the plan has one: returns the
/// model (the best seen) and the step it was taken at.
async fn train_sft(
    plan: &ExperimentPlan,
    setting: &'static str,
    sft_seed: u64,
    tok: &Tokenizer,
    labeled: &[Example],
    validation: &[Example],
    device: &Device,
    on_event: &mut dyn FnMut(ExperimentEvent),
) -> Result<(TextModel, usize)> {
    let config = SftConfig { seed: plan.sft.seed + sft_seed, ..plan.sft.clone() };
    let mut run = SftRun::new(config, tok.clone(), labeled, device)?;
    let mut best: Option<(f32, usize, Model)> = None;
    let mut since_best = 0;
    while !run.is_done() {
        run.step().await?;
        let step = run.state.step;
        on_event(ExperimentEvent::Sft { setting, sft_seed, step, total: plan.sft.steps });
        let Some(plateau) = plan.plateau else { continue };
        if step % plateau.every != 0 && !run.is_done() {
            continue;
        }
        let model = run.model.valid();
        let (summary, _) = evaluate(&Decoder::new(&model, tok, device), validation, plan.sgpo.max_new_tokens, step).await?;
        if best.as_ref().is_none_or(|(score, _, _)| summary.mean_score > *score) {
            best = Some((summary.mean_score, step, model));
            since_best = 0;
        } else {
            since_best += 1;
        }
        let best_step = best.as_ref().map_or(step, |b| b.1);
        on_event(ExperimentEvent::SftEval { setting, sft_seed, step, mean_score: summary.mean_score, best_step });
        if since_best >= plateau.patience {
            break;
        }
    }
    // Steps a plateau stopped before they were read: a failure among them is still an error.
    run.flush(&mut |_| {}).await?;
    let last = run.text_model();
    Ok(match best {
        Some((_, step, model)) => (TextModel { model, ..last }, step),
        None => (last, run.state.step),
    })
}

/// Run every (setting, SFT seed, row, seed) that `done` lacks; returns the outcomes in the
/// order they finished, each also sent as [`ExperimentEvent::Finished`]. SFT models come from
/// `store` when it has them, and go there when trained.
pub async fn run(
    plan: &ExperimentPlan,
    done: &[Outcome],
    store: &mut dyn SftStore,
    device: &Device,
    on_event: &mut dyn FnMut(ExperimentEvent),
) -> Result<Vec<Outcome>> {
    let splits = plan.splits()?;
    let held_out = splits.held_out(plan.split);
    let max_new = plan.sgpo.max_new_tokens;
    let sft_more = plan.sft_more();
    let once = |row: &str| row == "sft" || row == sft_more;
    let rows = plan.rows();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for &setting in &plan.settings {
        let (labeled, unlabeled): (Vec<Example>, Vec<String>) = if setting == "all-labeled" {
            (splits.train.clone(), Vec::new())
        } else {
            let rest = &splits.train[plan.few_labeled..(plan.few_labeled + plan.unlabeled).min(splits.train.len())];
            (splits.train[..plan.few_labeled].to_vec(), rest.iter().map(|e| e.prompt.clone()).collect())
        };
        // The tokenizer sees every text of the setting, labels or not; one per setting.
        let texts = labeled.iter().flat_map(|e| [e.prompt.as_str(), e.response.as_str()]).chain(unlabeled.iter().map(|p| p.as_str()));
        let tok = Tokenizer::train(texts, plan.sft.vocab_size)?;
        for sft_seed in 0..plan.sft_seeds {
            let have = |o: &[Outcome], row: &str, seed: u64| {
                o.iter().any(|x| x.setting == setting && x.method == row && x.sft_seed == sft_seed && x.seed == seed && x.split == plan.split)
            };
            let missing = |row: &str, seed: u64| !(once(row) && seed > 0) && !have(done, row, seed);
            if !rows.iter().any(|row| (0..plan.seeds).any(|seed| missing(row, seed))) {
                continue;
            }
            let key = plan.sft_key(setting, sft_seed);
            let (sft, sft_steps) = match store.load(&key) {
                Some((bytes, step)) => {
                    let config = ModelConfig::preset(&plan.sft.preset, tok.vocab_size())?;
                    let model = load_model(&config, &bytes, device, &key)?;
                    (TextModel { config, tokenizer: tok.clone(), model }, step)
                }
                None => {
                    let (sft, step) = train_sft(plan, setting, sft_seed, &tok, &labeled, &splits.validation, device, on_event).await?;
                    store.save(&key, &model_bytes(&sft.model).await?, step)?;
                    (sft, step)
                }
            };
            let baseline = answers(&sft.model, &sft.tokenizer, held_out, max_new, device).await?;
            let mut finish = |row: &str, seed: u64, comparison: Comparison, compute: Compute, on_event: &mut dyn FnMut(ExperimentEvent)| {
                let o = Outcome {
                    setting: setting.into(),
                    method: row.into(),
                    sft_seed,
                    seed,
                    split: plan.split,
                    win_rate: comparison.win_rate(),
                    mean_score: comparison.mean_score(),
                    comparison,
                    compute,
                    sft_key: key.clone(),
                    preference_key: plan.preference_key(),
                };
                on_event(ExperimentEvent::Finished(o.clone()));
                outcomes.push(o);
            };
            let score = |model: &Model| {
                let model = model.clone();
                let (sft, baseline) = (&sft, &baseline);
                async move {
                    let mine = answers(&model, &sft.tokenizer, held_out, max_new, device).await?;
                    Ok::<_, Error>(Comparison::of(held_out, &mine, baseline))
                }
            };
            if missing("sft", 0) {
                finish("sft", 0, Comparison::of(held_out, &baseline, &baseline), Compute { optimizer_steps: sft_steps, ..Compute::default() }, on_event);
            }
            if missing(&sft_more, 0) {
                // Policy examples only, with stage 1's optimiser and step count.
                let more = SftConfig { steps: plan.sgpo.stage1_steps(), optim: plan.sgpo.improver_optim.clone(), seed: plan.sft.seed + sft_seed, ..plan.sft.clone() };
                let seqs = policy_seqs(&sft.tokenizer, &labeled, sft.config.max_seq_len)?;
                let start = TextModel { model: sft.model.clone().fork(&crate::train::autodiff(device)).train(), ..sft.clone() };
                let mut run = SftRun::from_model("sft", more, start, seqs, device)?;
                while !run.is_done() {
                    run.step().await?;
                }
                let comparison = score(&run.model.valid()).await?;
                finish(&sft_more, 0, comparison, Compute { optimizer_steps: run.state.step, ..Compute::default() }, on_event);
            }
            for seed in 0..plan.seeds {
                for &variant in &plan.variants {
                    if !missing(variant.name(), seed) {
                        continue;
                    }
                    let config = variant.config(&plan.sgpo, seed);
                    let data = RunData { labeled: labeled.clone(), unlabeled: unlabeled.clone(), pairs: Vec::new(), eval: splits.validation.clone() };
                    let mut run = SgpoRun::new(config, sft.clone(), plan.sft.clone(), data, device)?;
                    let mut pairs = 0;
                    let mut stage1_pending = variant == Variant::Sgpo && missing(STAGE1_ROW, seed);
                    while !run.is_done() {
                        let mut summaries = Vec::new();
                        run.advance(&mut |e| if let Event::Iteration(i) = e { summaries.push(i) }).await?;
                        for summary in summaries {
                            pairs += summary.pairs_built;
                            on_event(ExperimentEvent::Iteration { setting, row: variant.name(), sft_seed, seed, summary });
                        }
                        let after_stage1 = run.stage == Stage::Pairs && run.iteration == 0 && run.step() > 0;
                        if stage1_pending && after_stage1 {
                            stage1_pending = false;
                            let compute = Compute { optimizer_steps: run.step(), pairs: 0, generated_tokens: run.generated_tokens() };
                            finish(STAGE1_ROW, seed, score(&run.policy()).await?, compute, on_event);
                        }
                    }
                    let compute = Compute { optimizer_steps: run.step(), pairs, generated_tokens: run.generated_tokens() };
                    finish(variant.name(), seed, score(&run.policy()).await?, compute, on_event);
                }
            }
        }
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DataSource, SftConfig, SgpoConfig};
    use crate::experiment::{Plateau, SETTINGS, Split, report};

    #[derive(Default)]
    struct Memory(std::collections::HashMap<String, (Vec<u8>, usize)>);

    impl SftStore for Memory {
        fn load(&mut self, key: &str) -> Option<(Vec<u8>, usize)> {
            self.0.get(key).cloned()
        }
        fn save(&mut self, key: &str, model: &[u8], step: usize) -> Result<()> {
            self.0.insert(key.into(), (model.to_vec(), step));
            Ok(())
        }
    }

    /// The whole table at toy size: every row of both settings once, SFT against itself a
    /// tie, and a rerun that already has every outcome runs nothing.
    #[test]
    fn experiment_fills_every_row_and_resumes_from_its_outcomes() {
        let device = Device::flex();
        let plan = ExperimentPlan {
            sft_seeds: 1,
            seeds: 1,
            few_labeled: 40,
            unlabeled: 60,
            held_out: 18,
            sft: SftConfig { preset: "tiny".into(), steps: 6, batch_size: 8, vocab_size: 120, data: DataSource::builtin(180, 18), ..SftConfig::default() },
            plateau: Some(Plateau { every: 2, patience: 1 }),
            sgpo: SgpoConfig {
                iterations: 1,
                improver_steps: 2,
                improver_examples: 12,
                prompts_per_iteration: 8,
                batch_size: 4,
                max_new_tokens: 6,
                eval_examples: 9,
                ..SgpoConfig::default()
            },
            variants: Variant::ALL.to_vec(),
            settings: SETTINGS.to_vec(),
            split: Split::Validation,
        };
        let mut events = Vec::new();
        let mut store = Memory::default();
        let outcomes = pollster::block_on(run(&plan, &[], &mut store, &device, &mut |e| events.push(e))).unwrap();
        let rows = plan.rows();
        assert_eq!(rows.len(), 8, "{rows:?}");
        for setting in SETTINGS {
            for row in &rows {
                assert_eq!(outcomes.iter().filter(|o| o.setting == setting && o.method == *row).count(), 1, "{setting} {row}");
            }
        }
        let held_out = plan.splits().unwrap().validation.len();
        assert!(outcomes.iter().all(|o| o.comparison.wins.len() == held_out && o.comparison.scores.len() == held_out));
        let sft = outcomes.iter().find(|o| o.method == "sft").unwrap();
        assert_eq!(sft.win_rate, 0.5);
        // SFT stopped at an evaluation (every 2 steps, at most 6).
        assert!([2, 4, 6].contains(&sft.compute.optimizer_steps), "{:?}", sft.compute);
        let row = |name: &str| outcomes.iter().find(|o| o.setting == "all-labeled" && o.method == name).unwrap().compute;
        // Stage 1 (2 steps) is inside SGPO's count, absent without it; SPIN generates drafts only.
        assert_eq!(row("stage1").optimizer_steps, 2);
        assert!(row("sgpo").optimizer_steps > 2 && row("sgpo").pairs > 0 && row("sgpo").generated_tokens > row("stage1").generated_tokens);
        assert_eq!(row("sgpo-no-stage1").optimizer_steps, row("sgpo-no-stage1").pairs.div_ceil(4));
        assert_eq!(row("spin-after-stage1").optimizer_steps, 2 + row("spin-after-stage1").pairs.div_ceil(4));
        // Same seed, same drafts and improvements: the filter only removes pairs, and what it
        // keeps the judge rates better.
        assert!(row("judge-filter").pairs <= row("sgpo").pairs);
        let judged = events.iter().filter_map(|e| match e {
            ExperimentEvent::Iteration { row: "judge-filter", summary, .. } => summary.pairs_judged,
            _ => None,
        });
        assert!(judged.into_iter().all(|[_, tied, worse]| tied + worse == 0));
        let finished = events.iter().filter(|e| matches!(e, ExperimentEvent::Finished(_))).count();
        assert_eq!(finished, outcomes.len());
        assert!(events.iter().any(|e| matches!(e, ExperimentEvent::Iteration { row: "sgpo", .. })));
        assert!(events.iter().any(|e| matches!(e, ExperimentEvent::SftEval { step: 2, .. })));
        let md = report(&plan, &outcomes).unwrap();
        assert!(md.contains("### few-labeled") && md.contains("| sft+2 | 1 |") && md.contains("| judge-filter |"), "{md}");
        let header = md.lines().next().unwrap();
        assert!(header.contains("improver_steps = 2") && header.contains("iterations = 1") && !header.contains("seed"), "{header}");
        // The seeds stated are the runs' own, not what the last command asked for.
        let asked_more = report(&ExperimentPlan { seeds: 5, ..plan.clone() }, &outcomes).unwrap();
        assert!(asked_more.contains("1 SFT seeds x 1 seeds at most"), "{asked_more}");
        let again = pollster::block_on(run(&plan, &outcomes, &mut store, &device, &mut |_| {})).unwrap();
        assert!(again.is_empty());
        // A second experiment that differs in its preference settings reuses the stored SFT
        // models: no SFT step, the same SFT scores.
        assert_eq!(store.0.len(), 2);
        let other = ExperimentPlan { sgpo: SgpoConfig { beta: 0.2, ..plan.sgpo.clone() }, variants: vec![Variant::Spin], ..plan.clone() };
        let mut events = Vec::new();
        let rerun = pollster::block_on(run(&other, &[], &mut store, &device, &mut |e| events.push(e))).unwrap();
        assert!(!events.iter().any(|e| matches!(e, ExperimentEvent::Sft { .. })));
        let sft_scores = |o: &[Outcome]| o.iter().filter(|o| o.method == "sft").map(|o| o.comparison.clone()).collect::<Vec<_>>();
        assert_eq!(sft_scores(&rerun), sft_scores(&outcomes));
        // Each outcome names what made it, so results of other settings are told apart.
        assert!(outcomes.iter().all(|o| plan.made(o)) && rerun.iter().all(|o| other.made(o)));
        assert!(!outcomes.iter().any(|o| other.made(o)));
        assert_ne!(other.sft_key("all-labeled", 0), ExperimentPlan { held_out: 20, ..plan.clone() }.sft_key("all-labeled", 0));
    }
}
