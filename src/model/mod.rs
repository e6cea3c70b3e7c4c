//! The model: a Llama-family transformer, its config and presets, and its weights in and out.

pub(crate) mod attention;
mod construction;
pub mod export;
pub mod gguf;
pub mod hf;
mod lora;
mod quants;
mod text_model;
mod transformer;
mod weights;

pub use attention::{KvCache, MASKED, causal_bias, padded_bias};
pub use text_model::TextModel;
pub use construction::WeightSource;
pub use transformer::{Block, Model, NamedTensor};
pub use weights::{adapter_bytes, load_adapters, load_model, model_bytes};
