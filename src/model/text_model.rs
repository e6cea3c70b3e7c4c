//! A model as a run hands it on: its shape, its tokenizer and its weights, travelling together.

use super::Model;
use crate::config::ModelConfig;
use crate::data::Tokenizer;

#[derive(Debug, Clone)]
pub struct TextModel {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub model: Model,
}
