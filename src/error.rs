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
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
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
