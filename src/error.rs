//! The library's one error type: every message says what to fix and where.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A record in a user's data file is malformed.
    #[error("{file}:{line}: {message}")]
    Data {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("config: {0}")]
    Config(String),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error("device: {0}")]
    Device(String),
    #[error("tensor read-back failed: {0}")]
    Readback(String),
    /// A training step whose loss or gradient norm is NaN or infinite; it was not applied.
    #[error(
        "{stage} step {step}: the loss ({loss}) or the gradient norm ({grad_norm}) is not finite, so the step was not applied and nothing was saved over the last checkpoint; lower the learning rate (or check the data) and resume"
    )]
    NonFinite { stage: String, step: usize, loss: f32, grad_norm: f32 },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A step error renumbered to the run's own step counter, `offset` steps ahead of the stage's.
    pub fn offset_step(self, offset: usize) -> Self {
        match self {
            Error::NonFinite { stage, step, loss, grad_norm } => Error::NonFinite { stage, step: step + offset, loss, grad_norm },
            other => other,
        }
    }

    /// Refuse to apply a step whose loss or gradient norm is not finite.
    pub fn check_finite(stage: &str, step: usize, loss: f32, grad_norm: f32) -> Result<()> {
        if loss.is_finite() && grad_norm.is_finite() {
            return Ok(());
        }
        Err(Error::NonFinite { stage: stage.to_string(), step, loss, grad_norm })
    }

    pub fn data(file: &str, line: usize, message: impl fmt::Display) -> Self {
        Error::Data {
            file: file.to_string(),
            line,
            message: message.to_string(),
        }
    }

    pub fn file(path: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::File {
            path: path.to_string(),
            message: message.to_string(),
        }
    }

    pub fn checkpoint(path: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Checkpoint {
            path: path.to_string(),
            message: message.to_string(),
        }
    }
}
