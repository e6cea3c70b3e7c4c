//! The data side: users' JSONL files, the built-in tasks and their judge, the tokenizer with
//! SGPO's two role templates, token batches, and one assembly of a run's data.

pub mod batch;
pub mod chat_template;
pub mod jsonl;
pub mod judge;
mod run_data;
pub mod tasks;
pub mod tokenizer;

pub use batch::{Batch, TokenSeq, policy_seqs};
pub use jsonl::{Dataset, Example, PreferencePair, parse_jsonl, parse_jsonl_bytes, split_examples};
pub use run_data::RunData;
pub use tokenizer::Tokenizer;
