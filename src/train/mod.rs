//! Training: the objectives, the optimiser with its schedule and clipping, the SFT loop, the
//! DPO learner with reference scoring, and their steps' numbers read back a few at a time. Knows models and batches, not where pairs come from.

pub mod adamw;
pub mod dpo;
pub mod objective;
pub mod optim;
pub mod reports;
pub mod sft;

pub use dpo::{PreferenceTrainer, ScoredPair, score_pairs, sequence_scores};
pub use optim::{autodiff, step_report};
pub use reports::{READ_EVERY, Reported, StepReports, StepValues};
pub use sft::SftRun;
