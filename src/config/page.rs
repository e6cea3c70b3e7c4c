//! The page's knobs: a flat view of [`SftConfig`] and [`SgpoConfig`] sized for a browser tab.
//! A knob both sides share takes its default from the engine's config; the page reads every
//! default from here (`Engine.defaults()`), never from literals of its own.

use serde::{Deserialize, Serialize};

use crate::device::DeviceChoice;

use super::{DEFAULT_EVAL_FRACTION, DataSource, DpoLoss, ImproverTargets, Method, OptimConfig, PairFilter, SftConfig, SgpoConfig};

/// Built-in training examples a page run draws.
const PAGE_TRAIN_EXAMPLES: usize = 4000;
/// Examples stage 1 turns into improver data in the page, by default.
const PAGE_IMPROVER_EXAMPLES: usize = 128;

/// Anything left out keeps its default. Saved with the page's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Which built-in task family to train on (`all`, or one of `tasks::FAMILIES`); ignored
    /// when a dataset is given.
    pub task: String,
    pub preset: String,
    pub method: Method,
    pub sft_steps: usize,
    pub sft_lr: f64,
    pub iterations: usize,
    pub prompts_per_iteration: usize,
    pub improver_steps: usize,
    /// Stage 1: examples whose drafts (one generation each) become improver data.
    pub improver_examples: usize,
    pub batch_size: usize,
    pub beta: f64,
    /// DPO learning rate.
    pub lr: f64,
    pub temperature: f32,
    /// Stage 1's targets (`edit:ALPHA`, `words:ALPHA`, `reference`, `reference-trained:ALPHA`, `sft`).
    pub improver_targets: ImproverTargets,
    /// Which of SGPO's changed drafts become pairs (`none`, `confidence:MARGIN`,
    /// `majority:K:SHARE`, `judge`).
    pub pair_filter: PairFilter,
    pub drafts_per_prompt: usize,
    pub improvement_passes: usize,
    pub max_new_tokens: usize,
    /// Held-out examples for the win rate.
    pub eval_examples: usize,
    /// Vocabulary of the tokenizer trained in the tab when none is given.
    pub vocab_size: usize,
    pub seed: u64,
    /// Where the run's tensors live, as the CLI's `--device`: `wgpu` is WebGPU, `cpu` burn's CPU
    /// backend (compiled to wasm in a browser), `auto` WebGPU unless its only adapter is a
    /// software rasteriser (SwiftShader), where the CPU backend is faster.
    pub device: DeviceChoice,
    /// LoRA rank for a model with weights (0: every weight trains); presets ignore it.
    pub lora_rank: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let (sft, sgpo) = (SftConfig::default(), SgpoConfig::default());
        Self {
            task: "all".into(),
            // A tab's scale, where samples already read as answers (held-out mean score 0.58
            // after SFT on generator v2: README, "In the browser").
            preset: "tiny".into(),
            sft_steps: 1000,
            sft_lr: 5e-3,
            iterations: 2,
            prompts_per_iteration: 32,
            improver_steps: 200,
            improver_examples: PAGE_IMPROVER_EXAMPLES,
            batch_size: 16,
            max_new_tokens: 16,
            eval_examples: 45,
            vocab_size: sft.vocab_size,
            // The engine's own defaults.
            method: sgpo.method,
            beta: sgpo.beta,
            lr: sgpo.dpo_optim.lr,
            temperature: sgpo.draft_temperature,
            improver_targets: sgpo.improver_targets,
            pair_filter: sgpo.pair_filter,
            drafts_per_prompt: sgpo.drafts_per_prompt,
            improvement_passes: sgpo.improvement_passes,
            seed: sft.seed,
            device: DeviceChoice::Auto,
            // LoRA by default for real models: a tab holds the frozen weights once and trains a
            // few megabytes, and its checkpoints hold only those.
            lora_rank: 8,
        }
    }
}

impl PipelineConfig {
    /// Where the examples come from: the uploaded file `file`, or the built-in tasks (one
    /// family, or `all`).
    pub fn data_source(&self, file: Option<&str>) -> DataSource {
        match file {
            Some(path) => DataSource::file(path, DEFAULT_EVAL_FRACTION),
            None if self.task == "all" => DataSource::builtin(PAGE_TRAIN_EXAMPLES, self.eval_examples),
            None => DataSource::builtin(PAGE_TRAIN_EXAMPLES, self.eval_examples).with_family(&self.task),
        }
    }

    pub fn sft(&self, data: DataSource) -> SftConfig {
        SftConfig {
            preset: self.preset.clone(),
            vocab_size: self.vocab_size,
            steps: self.sft_steps,
            batch_size: self.batch_size,
            seed: self.seed,
            data,
            optim: OptimConfig { lr: self.sft_lr, warmup_steps: 5.min(self.sft_steps / 2), ..OptimConfig::default() },
            ..SftConfig::default()
        }
    }

    /// The preference stage's settings, with the win rate measured on `eval_examples` prompts.
    pub fn sgpo(&self, eval_examples: usize) -> SgpoConfig {
        SgpoConfig {
            method: self.method,
            iterations: self.iterations,
            prompts_per_iteration: self.prompts_per_iteration,
            batch_size: self.batch_size,
            beta: self.beta,
            loss: DpoLoss::Sigmoid,
            draft_temperature: self.temperature,
            improver_targets: self.improver_targets,
            pair_filter: self.pair_filter,
            drafts_per_prompt: self.drafts_per_prompt,
            improvement_passes: self.improvement_passes,
            improver_steps: self.improver_steps,
            improver_examples: self.improver_examples,
            max_new_tokens: self.max_new_tokens,
            eval_examples,
            seed: self.seed,
            dpo_optim: OptimConfig::constant(self.lr),
            ..SgpoConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every page knob lands in the engine config field of the same meaning.
    #[test]
    fn page_knobs_map_onto_the_engine_configs() {
        let page = PipelineConfig {
            preset: "small".into(),
            method: Method::Spin,
            sft_steps: 11,
            sft_lr: 0.25,
            iterations: 3,
            prompts_per_iteration: 7,
            improver_steps: 5,
            improver_examples: 17,
            batch_size: 6,
            beta: 0.3,
            lr: 0.125,
            temperature: 0.7,
            improver_targets: ImproverTargets::Words(0.25),
            pair_filter: PairFilter::Confidence(0.5),
            drafts_per_prompt: 2,
            improvement_passes: 3,
            max_new_tokens: 9,
            vocab_size: 300,
            seed: 4,
            ..PipelineConfig::default()
        };
        let sft = page.sft(DataSource::builtin(10, 2));
        assert_eq!((sft.preset.as_str(), sft.steps, sft.batch_size, sft.seed, sft.vocab_size), ("small", 11, 6, 4, 300));
        assert_eq!((sft.optim.lr, sft.optim.warmup_steps), (0.25, 5));
        assert_eq!(sft.data, DataSource::builtin(10, 2));
        let sgpo = page.sgpo(13);
        assert_eq!((sgpo.method, sgpo.iterations, sgpo.prompts_per_iteration, sgpo.improver_steps, sgpo.improver_examples), (Method::Spin, 3, 7, 5, 17));
        assert_eq!((sgpo.batch_size, sgpo.beta, sgpo.dpo_optim.lr, sgpo.draft_temperature), (6, 0.3, 0.125, 0.7));
        assert_eq!((sgpo.max_new_tokens, sgpo.eval_examples, sgpo.seed), (9, 13, 4));
        assert_eq!(sgpo.dpo_optim, OptimConfig::constant(0.125));
        assert_eq!((sgpo.improver_targets, sgpo.pair_filter, sgpo.drafts_per_prompt, sgpo.improvement_passes), (ImproverTargets::Words(0.25), PairFilter::Confidence(0.5), 2, 3));
        // The page sends these as the CLI spells them; a wrong one is refused by name.
        let sent: PipelineConfig = serde_json::from_str(r#"{"pair_filter": "majority:3:0.67", "improver_targets": "words:0.5"}"#).unwrap();
        assert_eq!((sent.pair_filter, sent.improver_targets), (PairFilter::Majority { k: 3, share: 0.67 }, ImproverTargets::Words(0.5)));
        let bad = serde_json::from_str::<PipelineConfig>(r#"{"pair_filter": "best"}"#).unwrap_err().to_string();
        assert!(bad.contains("pair_filter \"best\"") && bad.contains("confidence:MARGIN"), "{bad}");
    }

    /// The knobs the page shares with the engine default to the engine's values.
    #[test]
    fn shared_knobs_default_to_the_engine_defaults() {
        let (page, sgpo) = (PipelineConfig::default(), SgpoConfig::default());
        assert_eq!((page.beta, page.lr, page.temperature, page.method), (sgpo.beta, sgpo.dpo_optim.lr, sgpo.draft_temperature, sgpo.method));
        assert_eq!((page.improver_targets, page.pair_filter), (sgpo.improver_targets, sgpo.pair_filter));
        assert_eq!((page.drafts_per_prompt, page.improvement_passes), (sgpo.drafts_per_prompt, sgpo.improvement_passes));
        assert_eq!((page.seed, page.vocab_size), (SftConfig::default().seed, SftConfig::default().vocab_size));
    }

    #[test]
    fn task_names_a_family() {
        let page = PipelineConfig { task: "sort".into(), ..PipelineConfig::default() };
        assert_eq!(page.data_source(None), DataSource::builtin(4000, 45).with_family("sort"));
        assert_eq!(PipelineConfig::default().data_source(None), DataSource::builtin(4000, 45));
        assert_eq!(page.data_source(Some("d.jsonl")), DataSource::file("d.jsonl", 0.1));
    }
}
