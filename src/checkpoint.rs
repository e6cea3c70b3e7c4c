//! A checkpoint is everything a run needs to continue exactly: config, tokenizer, weights,
//! optimiser state and the loop's position. On disk each one is a directory written under a
//! temporary name and renamed into place, and the `latest` file naming it is replaced by a
//! rename too, so a run killed at any instant leaves the previous checkpoint intact.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Where the training loop stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    pub step: usize,
    pub epoch: usize,
    /// Next example within the epoch's shuffled order.
    pub cursor: usize,
    pub rng: Rng,
}

#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The run's configuration, as JSON (the caller's type).
    pub config: String,
    pub tokenizer: String,
    pub model: Vec<u8>,
    pub optimizer: Vec<u8>,
    pub state: LoopState,
    /// A preference run's position beyond the loop state (its stage, pairs, ...), as JSON.
    pub progress: Option<String>,
}

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
pub const STATE_FILE: &str = "state.json";
pub const PROGRESS_FILE: &str = "run_state.json";
pub const LATEST_FILE: &str = "latest";

impl Checkpoint {
    /// The checkpoint as named files: what a run's `checkpoint-N/` directory holds, and what
    /// the browser stores and offers for download (so either side reads the other's).
    pub fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        let state = serde_json::to_string_pretty(&self.state).expect("state serialises");
        let mut files = vec![
            (CONFIG_FILE, self.config.clone().into_bytes()),
            (TOKENIZER_FILE, self.tokenizer.clone().into_bytes()),
            (MODEL_FILE, self.model.clone()),
            (OPTIMIZER_FILE, self.optimizer.clone()),
            (STATE_FILE, state.into_bytes()),
        ];
        if let Some(progress) = &self.progress {
            files.push((PROGRESS_FILE, progress.clone().into_bytes()));
        }
        files
    }

    /// Reassemble from named files; `read` gives a file's bytes, or `None` when it is absent.
    /// `dir` names the checkpoint in errors.
    pub fn from_files(dir: &str, mut read: impl FnMut(&str) -> Result<Option<Vec<u8>>>) -> Result<Self> {
        let mut need = |file: &str| -> Result<Vec<u8>> {
            read(file)?.ok_or_else(|| Error::checkpoint(format!("{dir}/{file}"), "missing from the checkpoint"))
        };
        let text = |file: &str, bytes: Vec<u8>| -> Result<String> {
            String::from_utf8(bytes).map_err(|e| Error::checkpoint(format!("{dir}/{file}"), e))
        };
        let state = text(STATE_FILE, need(STATE_FILE)?)?;
        let state: LoopState = serde_json::from_str(&state).map_err(|e| Error::checkpoint(format!("{dir}/{STATE_FILE}"), e))?;
        let config = text(CONFIG_FILE, need(CONFIG_FILE)?)?;
        let tokenizer = text(TOKENIZER_FILE, need(TOKENIZER_FILE)?)?;
        let model = need(MODEL_FILE)?;
        // A checkpoint written in a browser may carry no optimiser state (see `optimizer_bytes`).
        let optimizer = read(OPTIMIZER_FILE)?.unwrap_or_default();
        let progress = read(PROGRESS_FILE)?.map(|b| text(PROGRESS_FILE, b)).transpose()?;
        Ok(Self { config, tokenizer, model, optimizer, state, progress })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod disk {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::path::{Path, PathBuf};

    fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
        let mut f = fs::File::create(path).map_err(|e| Error::file(path.display(), e))?;
        f.write_all(bytes).map_err(|e| Error::file(path.display(), e))?;
        f.sync_all().map_err(|e| Error::file(path.display(), e))
    }

    /// Replace `path` with `bytes` atomically (write a sibling, then rename over).
    pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = path.with_extension("tmp");
        write_synced(&tmp, bytes)?;
        fs::rename(&tmp, path).map_err(|e| Error::file(path.display(), e))
    }

    impl Checkpoint {
        /// Write into `run_dir/checkpoint-STEP` and point `run_dir/latest` at it; older
        /// checkpoints are removed once the new one is in place.
        pub fn save(&self, run_dir: &Path) -> Result<PathBuf> {
            fs::create_dir_all(run_dir).map_err(|e| Error::file(run_dir.display(), e))?;
            // The same step can be saved twice (a stage's end and the run's end share one): the
            // second gets a new name, so `latest` never names a directory being replaced.
            let mut name = format!("checkpoint-{:08}", self.state.step);
            for k in 1.. {
                if !run_dir.join(&name).exists() {
                    break;
                }
                name = format!("checkpoint-{:08}-{k}", self.state.step);
            }
            let tmp = run_dir.join(format!(".{name}.partial"));
            let dir = run_dir.join(&name);
            if tmp.exists() {
                fs::remove_dir_all(&tmp).map_err(|e| Error::file(tmp.display(), e))?;
            }
            fs::create_dir_all(&tmp).map_err(|e| Error::file(tmp.display(), e))?;
            for (file, bytes) in self.files() {
                write_synced(&tmp.join(file), &bytes)?;
            }
            fs::rename(&tmp, &dir).map_err(|e| Error::file(dir.display(), e))?;
            write_atomic(&run_dir.join(LATEST_FILE), name.as_bytes())?;
            // The config also sits at the top of the run, where people look for it.
            write_atomic(&run_dir.join(CONFIG_FILE), self.config.as_bytes())?;
            for entry in fs::read_dir(run_dir).map_err(|e| Error::file(run_dir.display(), e))?.flatten() {
                let n = entry.file_name().to_string_lossy().to_string();
                if n.starts_with("checkpoint-") && n != name {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
            Ok(dir)
        }

        /// The checkpoint `run_dir/latest` points at.
        pub fn load(run_dir: &Path) -> Result<Self> {
            let latest = run_dir.join(LATEST_FILE);
            let name = fs::read_to_string(&latest).map_err(|e| {
                Error::checkpoint(
                    run_dir.display(),
                    format!("no checkpoint here ({}: {e}); is this a run directory written by `sgpo sft`?", latest.display()),
                )
            })?;
            let dir = run_dir.join(name.trim());
            Self::from_files(&dir.display().to_string(), |file| {
                let p = dir.join(file);
                p.exists().then(|| fs::read(&p).map_err(|e| Error::checkpoint(p.display(), e))).transpose()
            })
        }

        pub fn exists(run_dir: &Path) -> bool {
            run_dir.join(LATEST_FILE).exists()
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use disk::write_atomic;
