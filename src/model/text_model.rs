//! A model as a run hands it on: its shape, its tokenizer and its weights, travelling together.

use super::Model;
use crate::config::{LoraConfig, ModelConfig};
use crate::data::Tokenizer;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct TextModel {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub model: Model,
}

impl TextModel {
    /// This model as a run starts training it: adapters it already has merged into its weights,
    /// then fresh ones when `lora` is given (only they train; B = 0, so the model computes what
    /// it did), recorded in its config so its checkpoints reopen with them.
    pub fn for_training(self, lora: Option<LoraConfig>, seed: u64) -> Result<Self> {
        let config = ModelConfig { lora, ..self.config };
        config.validate()?;
        let model = match &config.lora {
            Some(lora) => self.model.with_lora(lora, seed),
            None => self.model.merged(),
        };
        Ok(Self { config, model, ..self })
    }
}

/// Refuse a tokenizer with more tokens than the model has embedding rows; `source` names the
/// tokenizer in the message.
pub fn check_vocab(source: &str, tokenizer: &Tokenizer, config: &ModelConfig) -> Result<()> {
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(Error::file(source, format!("{} tokens, more than the model's vocab_size {}", tokenizer.vocab_size(), config.vocab_size)));
    }
    Ok(())
}
