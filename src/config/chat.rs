//! How a model that came with a chat template is prompted in SGPO's two roles.

use serde::{Deserialize, Serialize};

/// The improver role's instruction, as the system message of the model's own template.
pub const IMPROVER_SYSTEM: &str = "You improve answers. You are given a request and a draft answer to it. \
Write an improved answer: fix what is wrong or missing in the draft and keep what is right. \
Reply with the improved answer only.";

/// A pretrained chat model's prompt format (read from its `tokenizer_config.json` and
/// `generation_config.json`); saved with runs that start from such a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// The model's Jinja chat template (`messages`, `add_generation_prompt`, `bos_token`,
    /// `eos_token`), rendered as `transformers`' `apply_chat_template` renders it.
    pub template: String,
    #[serde(default)]
    pub bos_token: Option<String>,
    /// The token an assistant turn ends with: responses are trained to end with it.
    pub eos_token: String,
    /// Further tokens that end generation (`generation_config.json`'s `eos_token_id`).
    #[serde(default)]
    pub stop_tokens: Vec<String>,
    /// The padding token; `eos_token` without one.
    #[serde(default)]
    pub pad_token: Option<String>,
    /// The improver role's system message.
    #[serde(default = "improver_system")]
    pub improver_system: String,
}

fn improver_system() -> String {
    IMPROVER_SYSTEM.to_string()
}

/// The user turn the improver sees: the request and the draft.
pub fn improver_request(prompt: &str, draft: &str) -> String {
    format!("Request:\n{prompt}\n\nDraft answer:\n{draft}")
}
