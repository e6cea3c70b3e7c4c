//! Range checks: every setting is checked before a run starts, by the CLI and the page alike,
//! and a refusal names the setting, the value and the allowed range.

use super::{DataSource, LoraConfig, Method, OptimConfig, PairFilter, PipelineConfig, SftConfig, SgpoConfig};
use crate::error::{Error, Result};

/// The smallest BPE vocabulary that learns anything: 256 byte tokens, our 6 role tokens, and
/// at least one merge.
pub const MIN_VOCAB: usize = 263;

/// Each pass is a full generation over every draft; more than a few is a setting gone wrong.
const MAX_IMPROVEMENT_PASSES: usize = 8;

fn refuse(name: &str, value: impl std::fmt::Display, allowed: &str) -> Result<()> {
    Err(Error::Config(format!("{name} = {value} is out of range (allowed: {allowed})")))
}

pub fn at_least(name: &str, value: usize, min: usize) -> Result<()> {
    if value < min { refuse(name, value, &format!("{min} or more")) } else { Ok(()) }
}

fn positive(name: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 { Ok(()) } else { refuse(name, value, "a finite number above 0") }
}

fn non_negative(name: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 { Ok(()) } else { refuse(name, value, "a finite number, 0 or more") }
}

/// `lo <= value < hi` (or `<= hi` when `hi_inclusive`).
fn between(name: &str, value: f64, lo: f64, hi: f64, hi_inclusive: bool) -> Result<()> {
    let ok = value.is_finite() && value >= lo && (value < hi || hi_inclusive && value == hi);
    if ok { Ok(()) } else { refuse(name, value, &format!("{lo} to {hi}{}", if hi_inclusive { "" } else { ", exclusive" })) }
}

impl OptimConfig {
    /// `prefix` is where the optimiser sits in the config (`optim`, `dpo_optim`, ...).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let name = |field: &str| format!("{prefix}.{field}");
        positive(&name("lr"), self.lr)?;
        between(&name("min_lr_ratio"), self.min_lr_ratio, 0.0, 1.0, true)?;
        non_negative(&name("weight_decay"), self.weight_decay as f64)?;
        non_negative(&name("grad_clip"), self.grad_clip as f64)?;
        between(&name("beta1"), self.beta1 as f64, 0.0, 1.0, false)?;
        between(&name("beta2"), self.beta2 as f64, 0.0, 1.0, false)
    }
}

impl LoraConfig {
    /// `max_rank`: the narrowest adapted projection's width.
    pub fn validate(&self, max_rank: usize) -> Result<()> {
        if self.rank == 0 || self.rank > max_rank {
            return refuse("lora.rank", self.rank, &format!("1 to {max_rank}"));
        }
        positive("lora.alpha", self.alpha)?;
        if self.targets.is_empty() {
            return Err(Error::Config("lora.targets is empty (allowed: any of q, k, v, o, gate, up, down)".into()));
        }
        Ok(())
    }
}

impl SftConfig {
    pub fn validate(&self) -> Result<()> {
        at_least("steps", self.steps, 1)?;
        at_least("batch_size", self.batch_size, 1)?;
        at_least("grad_accum", self.grad_accum, 1)?;
        at_least("checkpoint_every", self.checkpoint_every, 1)?;
        if let DataSource::File { eval_fraction, .. } = &self.data {
            between("eval_fraction", *eval_fraction as f64, 0.0, 1.0, false)?;
        }
        self.optim.validate("optim")
    }
}

impl SgpoConfig {
    pub fn validate(&self) -> Result<()> {
        at_least("iterations", self.iterations, 1)?;
        at_least("prompts_per_iteration", self.prompts_per_iteration, 1)?;
        at_least("improver_examples", self.improver_examples, 1)?;
        at_least("dpo_epochs", self.dpo_epochs, 1)?;
        at_least("batch_size", self.batch_size, 1)?;
        at_least("max_new_tokens", self.max_new_tokens, 1)?;
        at_least("drafts_per_prompt", self.drafts_per_prompt, 1)?;
        if !(1..=MAX_IMPROVEMENT_PASSES).contains(&self.improvement_passes) {
            return refuse("improvement_passes", self.improvement_passes, &format!("1 to {MAX_IMPROVEMENT_PASSES}"));
        }
        if self.improvement_passes > 1 && self.method != Method::Sgpo {
            return Err(Error::Config(format!(
                "improvement_passes = {} with method {}: only SGPO improves its drafts; leave it at 1",
                self.improvement_passes,
                self.method.name()
            )));
        }
        if self.improvement_passes > 1 && matches!(self.pair_filter, PairFilter::Majority { .. }) {
            return Err(Error::Config(format!(
                "improvement_passes = {} with pair_filter = majority: majority votes on one pass of samples; use one pass, or another filter",
                self.improvement_passes
            )));
        }
        positive("beta", self.beta)?;
        between("label_smoothing", self.label_smoothing, 0.0, 0.5, false)?;
        non_negative("improver_sft_weight", self.improver_sft_weight)?;
        non_negative("draft_temperature", self.draft_temperature as f64)?;
        self.improver_optim.validate("improver_optim")?;
        self.dpo_optim.validate("dpo_optim")
    }
}

impl PipelineConfig {
    /// The page's knobs, before anything runs (the engine configs they fill are checked again
    /// when their runs start).
    pub fn validate(&self) -> Result<()> {
        at_least("vocab_size", self.vocab_size, MIN_VOCAB)?;
        at_least("sft_steps", self.sft_steps, 1)?;
        at_least("improver_steps", self.improver_steps, 1)?;
        at_least("eval_examples", self.eval_examples, 1)?;
        positive("sft_lr", self.sft_lr)?;
        self.sft(DataSource::builtin(1, 1)).validate()?;
        self.sgpo(self.eval_examples).validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_refusals_name_the_range() {
        SftConfig::default().validate().unwrap();
        SgpoConfig::default().validate().unwrap();
        let e = SftConfig { steps: 0, ..SftConfig::default() }.validate().unwrap_err().to_string();
        assert_eq!(e, "config: steps = 0 is out of range (allowed: 1 or more)");
        let mut sgpo = SgpoConfig { beta: 0.0, ..SgpoConfig::default() };
        assert!(sgpo.validate().unwrap_err().to_string().contains("beta = 0 is out of range (allowed: a finite number above 0)"));
        sgpo.beta = 0.1;
        sgpo.dpo_optim.lr = f64::NAN;
        assert!(sgpo.validate().unwrap_err().to_string().contains("dpo_optim.lr = NaN"));
        sgpo.dpo_optim.lr = 1e-5;
        sgpo.label_smoothing = 0.5;
        assert!(sgpo.validate().unwrap_err().to_string().contains("label_smoothing = 0.5 is out of range (allowed: 0 to 0.5, exclusive)"));
    }

    /// The page's form is checked by the same rules, by the page's own knob names.
    #[test]
    fn page_knobs_are_checked_by_name() {
        PipelineConfig::default().validate().unwrap();
        let refused = |page: PipelineConfig| page.validate().unwrap_err().to_string();
        assert!(refused(PipelineConfig { vocab_size: 256, ..Default::default() }).contains("vocab_size = 256 is out of range (allowed: 263 or more)"));
        assert!(refused(PipelineConfig { sft_steps: 0, ..Default::default() }).contains("sft_steps = 0"));
        assert!(refused(PipelineConfig { lr: -1.0, ..Default::default() }).contains("dpo_optim.lr = -1"));
        assert!(refused(PipelineConfig { temperature: f32::NAN, ..Default::default() }).contains("draft_temperature = NaN"));
        assert!(refused(PipelineConfig { prompts_per_iteration: 0, ..Default::default() }).contains("prompts_per_iteration = 0"));
        assert!(refused(PipelineConfig { improver_examples: 0, ..Default::default() }).contains("improver_examples = 0 is out of range (allowed: 1 or more)"));
    }
}
