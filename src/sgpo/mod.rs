//! SGPO: Self-Generated Preference Optimization based on a self-improver (arXiv 2507.20181),
//! with its baselines SPIN and DPO on the same engine. One model, two roles: as the policy it
//! answers, as the improver it rewrites its own answer into a slightly better one.
//!
//! The algorithm, line by line, and the function that does each line:
//!
//! ```text
//! given  π_sft (SFT model), labeled examples (x, y_sft), prompts x, iterations T
//! stage 1: improver training                                  SgpoRun::start_improver
//!   for each sampled (x, y_sft):  y_p ~ π(policy, x)           improver::improver_data
//!     y_t = a step from y_p toward y_sft  (edit:α | reference | sft)   improver::partial_edit
//!   π* = fine-tune π on (x, y_p -> y_t) mixed with (x -> y_sft)  SgpoRun::improver_step (SftRun)
//! stage 2: for t = 1..T                                        SgpoRun::start_iteration
//!   prompts x drawn (labeled and unlabeled)                    SgpoRun::draw_prompts
//!   y_r ~ π_t(policy, x)        the draft, sampled             pairs::build_pairs
//!   y_c = π_t(improver, x, y_r) the improvement, greedy        improver::improve
//!   drop pairs with y_c == y_r; count them                     pairs::build_pairs
//!   π_ref = π_t frozen; log π_ref(y_c|x), log π_ref(y_r|x) once    train::score_pairs
//!   DPO steps on (x, y_c ≻ y_r) for `dpo_epochs` passes        SgpoRun::dpo_step (PreferenceTrainer)
//!   [optional: stage 1 again with π_{t+1}]                     SgpoRun::advance (refresh_improver)
//! ```
//!
//! SPIN takes y_c = y_sft and DPO fixed pairs with π_ref = π_sft; nothing else differs.
//! `run.rs` holds the state machine that does one unit of this per `advance`, `state.rs` its
//! checkpoint.

pub mod improver;
pub mod pairs;
mod run;
mod state;

pub use pairs::{Pair, PairSet, trl_jsonl};
pub use run::{DpoProgress, SgpoRun, Stage, check_inputs};
