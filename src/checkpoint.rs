//! A checkpoint is everything a run needs to continue exactly: config, tokenizer, weights,
//! optimiser state and the loop's position, as the named files of a `checkpoint-N/` directory
//! (written to disk by `native.rs`, to IndexedDB by the page).

use std::collections::BTreeMap;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::data::Tokenizer;
use crate::data::chat_template::ChatTemplate;
use crate::error::{Error, Result};
use crate::model::{TextModel, load_model};
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
    /// AdamW's state (`adamw.rs`); absent in checkpoints that cannot be resumed exactly.
    pub optimizer: Option<Vec<u8>>,
    pub state: LoopState,
    /// A preference run's position beyond the loop state (its stage, pairs, ...), as JSON.
    pub progress: Option<String>,
    /// Lines each event log of the run held when this was written (`logs.json`; a resumed run
    /// cuts its logs back to these). Empty where the driver keeps no logs beside the run.
    pub logged: BTreeMap<String, usize>,
}

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
pub const PROGRESS_FILE: &str = "run_state.json";
pub const LOGGED_FILE: &str = "logs.json";
/// Each other file's CRC-32, checked when the checkpoint is read back.
pub const CHECKSUMS_FILE: &str = "checksums.json";
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
            (STATE_FILE, state.into_bytes()),
        ];
        if let Some(optimizer) = &self.optimizer {
            files.push((OPTIMIZER_FILE, optimizer.clone()));
        }
        if let Some(progress) = &self.progress {
            files.push((PROGRESS_FILE, progress.clone().into_bytes()));
        }
        if !self.logged.is_empty() {
            files.push((LOGGED_FILE, serde_json::to_vec_pretty(&self.logged).expect("counts serialise")));
        }
        let sums: BTreeMap<&str, String> = files.iter().map(|(name, bytes)| (*name, crc32_hex(bytes))).collect();
        files.push((CHECKSUMS_FILE, serde_json::to_vec_pretty(&sums).expect("checksums serialise")));
        files
    }

    /// Reassemble from named files; `read` gives a file's bytes, or `None` when it is absent.
    /// `dir` names the checkpoint in errors.
    pub fn from_files(dir: &str, mut raw: impl FnMut(&str) -> Result<Option<Vec<u8>>>) -> Result<Self> {
        // Checkpoints written before checksums existed have none to check.
        let sums: BTreeMap<String, String> = match raw(CHECKSUMS_FILE)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::checkpoint(format!("{dir}/{CHECKSUMS_FILE}"), e))?,
            None => BTreeMap::new(),
        };
        let mut read = |file: &str| -> Result<Option<Vec<u8>>> {
            let bytes = raw(file)?;
            if let (Some(b), Some(expected)) = (&bytes, sums.get(file)) {
                let found = crc32_hex(b);
                if &found != expected {
                    return Err(Error::checkpoint(
                        format!("{dir}/{file}"),
                        format!("damaged: its CRC-32 is {found} but the checkpoint recorded {expected} (the run's previous checkpoint-N may still be whole)"),
                    ));
                }
            }
            Ok(bytes)
        };
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
        let optimizer = read(OPTIMIZER_FILE)?;
        let progress = read(PROGRESS_FILE)?.map(|b| text(PROGRESS_FILE, b)).transpose()?;
        let logged = match read(LOGGED_FILE)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::checkpoint(format!("{dir}/{LOGGED_FILE}"), e))?,
            None => BTreeMap::new(),
        };
        Ok(Self { config, tokenizer, model, optimizer, state, progress, logged })
    }
}

/// A CRC-32 as the checkpoint and run configs record it: eight hex digits.
pub fn crc32_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

impl Checkpoint {
    /// The run's config and the model this checkpoint holds, on `device`. `label` names the
    /// checkpoint in errors (empty: the file names alone).
    pub fn open(&self, label: &str, device: &Device) -> Result<(RunConfig, TextModel)> {
        let name = |file: &str| if label.is_empty() { file.to_string() } else { format!("{label}/{file}") };
        let run = RunConfig::from_json(&name(CONFIG_FILE), &self.config)?;
        // A run's chat template is saved in its config.json, so that file is named if it fails.
        let template = run.chat.clone().map(|chat| ChatTemplate::new(&name(CONFIG_FILE), chat)).transpose()?;
        let tokenizer = Tokenizer::from_json_with(&name(TOKENIZER_FILE), &self.tokenizer, template)?;
        let model = load_model(&run.model, &self.model, device, &name(MODEL_FILE))?;
        let config = run.model.clone();
        Ok((run, TextModel { config, tokenizer, model }))
    }
}
