//! Every setting a run is made of, in one vocabulary: the configs saved as `config.json`, one
//! default per knob (the CLI and the page both read these), and the names the CLI parses.

mod chat;
mod check;
mod lora;
mod model;
mod page;
mod sft;
mod sgpo;

pub use chat::{ChatConfig, IMPROVER_SYSTEM, improver_request};
pub use check::{MIN_VOCAB, at_least};
pub use lora::{LoraConfig, LoraTarget};
pub use model::{ModelConfig, PRESETS};
pub use page::PipelineConfig;
pub use sft::{OptimConfig, SftConfig};
pub use sgpo::{DpoLoss, ImproverTargets, Method, PairFilter, SgpoConfig};

use serde::{Deserialize, Serialize};

use crate::data::tasks;
use crate::error::{Error, Result};

/// Where a run's examples come from. Saved with the run, so `eval` finds the same held-out part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// The built-in judged tasks: `n_train` and `n_eval` examples of every family, or of
    /// `family` alone.
    Builtin {
        n_train: usize,
        n_eval: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        family: Option<String>,
        /// How the prompts are worded (`chat` for pretrained instruct models).
        #[serde(default, skip_serializing_if = "Phrasing::is_terse")]
        phrasing: Phrasing,
        /// `tasks::GENERATOR_VERSION` when the run started (1 for runs saved before it was
        /// recorded): another version makes other examples from the same seed.
        #[serde(default = "first_generator")]
        generator: u32,
    },
    /// A JSONL file: rows with answers split into train and held-out parts, bare prompts and
    /// preference rows kept beside them.
    File {
        path: String,
        eval_fraction: f32,
        /// The file's CRC-32 when the run started, to notice a file edited since.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        crc32: Option<String>,
    },
}

impl DataSource {
    /// The built-in tasks, every family.
    pub fn builtin(n_train: usize, n_eval: usize) -> Self {
        Self::Builtin { n_train, n_eval, family: None, phrasing: Phrasing::Terse, generator: tasks::GENERATOR_VERSION }
    }

    /// The built-in tasks of one family only.
    pub fn with_family(mut self, only: &str) -> Self {
        if let Self::Builtin { family, .. } = &mut self {
            *family = Some(only.to_string());
        }
        self
    }

    /// How its built-in prompts are worded (a file's are as written: terse, as far as the
    /// wording of built-in tasks goes).
    pub fn phrasing(&self) -> Phrasing {
        match self {
            Self::Builtin { phrasing, .. } => *phrasing,
            Self::File { .. } => Phrasing::Terse,
        }
    }

    /// The same source, its built-in prompts worded as `phrasing` says (files are as written).
    pub fn phrased(mut self, wording: Phrasing) -> Self {
        if let Self::Builtin { phrasing, .. } = &mut self {
            *phrasing = wording;
        }
        self
    }

    /// A data file, its contents not recorded.
    pub fn file(path: impl Into<String>, eval_fraction: f32) -> Self {
        Self::File { path: path.into(), eval_fraction, crc32: None }
    }
}

/// How the built-in prompts are worded: `terse` for models trained here from scratch
/// (`sort the numbers: 4 1 3`), `chat` for pretrained instruct models (a sentence that says
/// what to do and how to reply). Both wordings draw the same problems from the same seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phrasing {
    #[default]
    Terse,
    Chat,
}

impl Phrasing {
    pub fn is_terse(&self) -> bool {
        *self == Self::Terse
    }

    /// How a model that came with weights is asked the built-in tasks: in words when it has a
    /// chat template, tersely otherwise (ours, exported and read back, have none).
    pub fn for_model(has_chat_template: bool) -> Self {
        if has_chat_template { Self::Chat } else { Self::Terse }
    }
}

fn first_generator() -> u32 {
    1
}

/// The share of a data file held out for evaluation unless a run says otherwise.
pub const DEFAULT_EVAL_FRACTION: f32 = 0.1;

/// Where a preference run's inputs came from; saved in its config so `--resume` and `eval`
/// find them again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceSource {
    /// The SFT run the policy starts from (`browser` for a run made in the page).
    pub init: String,
    pub data: Option<String>,
    pub prompts: Option<String>,
}

/// Everything saved as `config.json` next to the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(deserialize_with = "model_config_with_defaults")]
    pub model: ModelConfig,
    pub sft: SftConfig,
    /// Present in preference runs (`sgpo train`, the page's preference stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sgpo: Option<SgpoConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PreferenceSource>,
    /// The chat format of a pretrained model (absent: our own role tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatConfig>,
}

/// A saved model config, where fields added since it was written take their defaults (burn's
/// `Config` derive requires every field).
fn model_config_with_defaults<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<ModelConfig, D::Error> {
    let mut value = serde_json::Value::deserialize(deserializer)?;
    if let Some(fields) = value.as_object_mut() {
        fields.entry("attention_bias").or_insert(serde_json::Value::Bool(false));
    }
    serde_json::from_value(value).map_err(serde::de::Error::custom)
}

impl RunConfig {
    /// A model that came with its weights (a Hugging Face directory, a GGUF file), `preset`
    /// naming where it came from. With a chat template, its built-in tasks are worded for chat.
    pub fn pretrained(model: ModelConfig, preset: String, chat: Option<ChatConfig>) -> Self {
        let defaults = SftConfig::default();
        let sft = SftConfig { preset, data: defaults.data.clone().phrased(Phrasing::for_model(chat.is_some())), ..defaults };
        Self { model, sft, sgpo: None, source: None, chat }
    }

    pub fn from_json(source: &str, json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::file(source, format!("not a valid run config: {e}")))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("configs serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A terse built-in source is written without a wording (as before wordings existed); a
    /// chat one says so; every one records its generator's version.
    #[test]
    fn wording_is_recorded_only_when_it_is_chat() {
        let terse = serde_json::to_string(&DataSource::builtin(5, 2)).unwrap();
        assert_eq!(terse, format!(r#"{{"kind":"builtin","n_train":5,"n_eval":2,"generator":{}}}"#, tasks::GENERATOR_VERSION));
        let chat = DataSource::builtin(5, 2).with_family("add").phrased(Phrasing::Chat);
        let text = serde_json::to_string(&chat).unwrap();
        assert!(text.contains(r#""phrasing":"chat""#), "{text}");
        assert_eq!(serde_json::from_str::<DataSource>(&text).unwrap(), chat);
        assert_eq!(DataSource::file("d.jsonl", 0.1).phrased(Phrasing::Chat), DataSource::file("d.jsonl", 0.1));
    }

    /// A run saved before `attention_bias` existed still opens, as a model without biases.
    #[test]
    fn runs_saved_by_earlier_versions_read() {
        let mut saved = serde_json::to_value(RunConfig {
            model: ModelConfig::tiny(300),
            sft: SftConfig::default(),
            sgpo: None,
            source: None,
            chat: None,
        })
        .unwrap();
        saved["model"].as_object_mut().unwrap().remove("attention_bias");
        let run = RunConfig::from_json("config.json", &saved.to_string()).unwrap();
        assert!(!run.model.attention_bias);
        assert_eq!(run.model.vocab_size, 300);
    }
}
