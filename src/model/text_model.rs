//! A model as a run hands it on: its shape, its tokenizer and its weights, travelling together.

use super::Model;
use crate::config::ModelConfig;
use crate::data::Tokenizer;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct TextModel {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub model: Model,
}

/// Refuse a tokenizer with more tokens than the model has embedding rows; `source` names the
/// tokenizer in the message.
pub fn check_vocab(source: &str, tokenizer: &Tokenizer, config: &ModelConfig) -> Result<()> {
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(Error::file(source, format!("{} tokens, more than the model's vocab_size {}", tokenizer.vocab_size(), config.vocab_size)));
    }
    Ok(())
}
