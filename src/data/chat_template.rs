//! A pretrained model's chat template, rendered as `transformers`' `apply_chat_template`
//! renders it: Jinja with `trim_blocks` and `lstrip_blocks`, Python's string methods, and
//! `raise_exception`.

use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Serde, Value};
use minijinja::{Environment, ErrorKind, context};
use serde::Serialize;

use crate::config::ChatConfig;
use crate::error::{Error, Result};

/// One turn of a conversation.
#[derive(Debug, Clone, Serialize)]
pub struct Message<'a> {
    pub role: &'a str,
    pub content: &'a str,
}

/// A compiled template with the tokens it may name.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    pub config: ChatConfig,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("eos_token", &self.config.eos_token).finish()
    }
}

impl ChatTemplate {
    /// Compile `config.template`; `source` names it in errors.
    pub fn new(source: &str, config: ChatConfig) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build();
        env.set_syntax(syntax.map_err(|e| Error::Tokenizer(e.to_string()))?);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned("chat", config.template.clone())
            .map_err(|e| Error::file(source, format!("chat template does not compile: {e}")))?;
        let template = Self { env: Arc::new(env), config };
        // A template that cannot render a plain exchange is refused now, not mid-run.
        template.render(&[Message { role: "user", content: "hi" }], true).map_err(|e| Error::file(source, e))?;
        Ok(template)
    }

    /// The conversation as the model reads it; with `add_generation_prompt`, up to where the
    /// assistant's answer starts.
    pub fn render(&self, messages: &[Message<'_>], add_generation_prompt: bool) -> Result<String> {
        let c = &self.config;
        self.env
            .get_template("chat")
            .and_then(|t| {
                t.render(context! {
                    messages => Value::from(Serde(messages)),
                    add_generation_prompt => add_generation_prompt,
                    bos_token => c.bos_token.clone().unwrap_or_default(),
                    eos_token => c.eos_token.clone(),
                    pad_token => c.pad_token.clone(),
                })
            })
            .map_err(|e| Error::Tokenizer(format!("the chat template does not render: {e}")))
    }
}
