//! Training: the objectives, the optimiser with its schedule and clipping, the SFT loop, and
//! the DPO learner with reference scoring. Knows models and batches, not where pairs come from.

pub mod adamw;
pub mod dpo;
pub mod objective;
pub mod optim;
pub mod sft;

pub use dpo::{PreferenceTrainer, ScoredPair, score_pairs, sequence_scores};
pub use optim::{StepRead, autodiff, read_step};
pub use sft::SftRun;
