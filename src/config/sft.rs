//! Supervised fine-tuning's settings and the optimiser's, shared by every trainer.

use serde::{Deserialize, Serialize};

use super::DataSource;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub lr: f64,
    pub warmup_steps: usize,
    /// The cosine schedule ends at `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub weight_decay: f32,
    /// Global gradient-norm clip; 0 disables it.
    pub grad_clip: f32,
    pub beta1: f32,
    pub beta2: f32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self { lr: 2e-3, warmup_steps: 30, min_lr_ratio: 0.1, weight_decay: 0.01, grad_clip: 1.0, beta1: 0.9, beta2: 0.95 }
    }
}

impl OptimConfig {
    /// A constant learning rate without weight decay, as DPO uses.
    pub fn constant(lr: f64) -> Self {
        Self { lr, warmup_steps: 0, min_lr_ratio: 1.0, weight_decay: 0.0, ..Self::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    pub preset: String,
    /// Size of the BPE trained when no tokenizer is given.
    pub vocab_size: usize,
    pub steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub optim: OptimConfig,
    pub seed: u64,
    pub checkpoint_every: usize,
    pub data: DataSource,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            preset: "small".into(),
            vocab_size: 512,
            steps: 700,
            batch_size: 24,
            grad_accum: 1,
            optim: OptimConfig::default(),
            seed: 42,
            checkpoint_every: 100,
            data: DataSource::builtin(20000, 270),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_unknown_fields() {
        let e = serde_json::from_str::<SftConfig>(r#"{"stepz": 3}"#).unwrap_err();
        assert!(e.to_string().contains("stepz"));
    }

    /// Runs saved before `family` and `generator` existed still read (as the first generator's
    /// tasks), and new built-in runs write no `family`.
    #[test]
    fn data_source_reads_and_writes_the_saved_form() {
        let old: DataSource = serde_json::from_str(r#"{"kind": "builtin", "n_train": 5, "n_eval": 2}"#).unwrap();
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"kind":"builtin","n_train":5,"n_eval":2,"generator":1}"#);
        let new = serde_json::to_string(&DataSource::builtin(5, 2)).unwrap();
        assert!(!new.contains("family") && new.contains(&format!(r#""generator":{}"#, crate::data::tasks::GENERATOR_VERSION)), "{new}");
    }
}
