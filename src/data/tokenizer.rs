//! Hugging Face `tokenizers` behind SGPO's two roles. For models we initialise, our own role
//! tokens (SGPO.md): policy `<|user|> x <|assistant|>` -> `y <|end|>`, improver
//! `<|user|> x <|draft|> y <|improved|>` -> `y' <|end|>`. For a pretrained chat model, its
//! own chat template: the user turn for the policy, and for the improver a system message
//! stating the task with the request and the draft as the user turn.

use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, Tokenizer as HfTokenizer, TokenizerBuilder,
};

use super::chat_template::{ChatTemplate, Message};
use crate::config::{ChatConfig, improver_request};
use crate::error::{Error, Result};

pub const USER: &str = "<|user|>";
pub const ASSISTANT: &str = "<|assistant|>";
pub const DRAFT: &str = "<|draft|>";
pub const IMPROVED: &str = "<|improved|>";
pub const END: &str = "<|end|>";
pub const PAD: &str = "<|pad|>";
pub const SPECIAL_TOKENS: [&str; 6] = [PAD, END, USER, ASSISTANT, DRAFT, IMPROVED];

/// The ids every format has: padding, and the token a response ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub pad: u32,
    pub end: u32,
}

/// How prompts are laid out.
#[derive(Debug, Clone)]
enum Format {
    /// Our role tokens.
    Roles { user: u32, assistant: u32, draft: u32, improved: u32 },
    /// A pretrained model's chat template.
    Chat(ChatTemplate),
}

#[derive(Clone)]
pub struct Tokenizer {
    inner: HfTokenizer,
    pub special: SpecialIds,
    format: Format,
    /// Tokens generation never draws (see [`Self::unproducible`]).
    unproducible: std::sync::Arc<[u32]>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("special", &self.special)
            .finish()
    }
}

fn tk_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Train a byte-level BPE on `texts` with the role tokens reserved first.
    pub fn train<'a>(texts: impl Iterator<Item = &'a str>, vocab_size: usize) -> Result<Self> {
        let specials: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .map(|t| AddedToken::from(*t, true))
            .collect();
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let byte_level = ByteLevel::new(false, true, true);
        let mut builder: TokenizerBuilder<
            ModelWrapper,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        > = TokenizerBuilder::new();
        builder = builder
            .with_model(BPE::default().into())
            .with_pre_tokenizer(Some(byte_level.into()))
            .with_decoder(Some(byte_level.into()));
        let mut tokenizer = builder.build().map_err(tk_err)?;
        let texts: Vec<&str> = texts.collect();
        tokenizer
            .train(&mut trainer, texts.into_iter())
            .map_err(tk_err)?;
        Self::from_hf(HfTokenizer::from(tokenizer))
    }

    /// Train on the prompts and answers of `examples`.
    pub fn train_on(examples: &[crate::data::Example], vocab_size: usize) -> Result<Self> {
        Self::train(examples.iter().flat_map(|e| [e.prompt.as_str(), e.response.as_str()]), vocab_size)
    }

    /// Wrap any tokenizer, adding the role tokens it lacks.
    pub fn from_hf(mut inner: HfTokenizer) -> Result<Self> {
        let missing: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .filter(|t| inner.token_to_id(t).is_none())
            .map(|t| AddedToken::from(*t, true))
            .collect();
        if !missing.is_empty() {
            inner.add_special_tokens(&missing);
        }
        let id = |t: &str| inner.token_to_id(t).ok_or_else(|| tk_err(format!("no id for {t}")));
        let special = SpecialIds { pad: id(PAD)?, end: id(END)? };
        let format = Format::Roles { user: id(USER)?, assistant: id(ASSISTANT)?, draft: id(DRAFT)?, improved: id(IMPROVED)? };
        let unproducible = unproducible_tokens(&inner).into();
        Ok(Self { inner, special, format, unproducible })
    }

    /// A pretrained model's tokenizer as it is (no tokens added), prompted through its chat
    /// template (compiled by the caller, which knows which file it came from); `source`
    /// names the tokenizer in errors.
    pub fn with_chat(source: &str, inner: HfTokenizer, template: ChatTemplate) -> Result<Self> {
        let id = |t: &str| inner.token_to_id(t).ok_or_else(|| Error::file(source, format!("the tokenizer has no token {t:?}")));
        let end = id(&template.config.eos_token)?;
        let pad = match &template.config.pad_token {
            Some(t) => id(t)?,
            None => end,
        };
        Ok(Self { inner, special: SpecialIds { pad, end }, format: Format::Chat(template), unproducible: Vec::new().into() })
    }

    /// Parse a `tokenizer.json`: with a chat template, a pretrained model's (see
    /// [`Self::with_chat`]); without, one with our role tokens. `source` names it in errors.
    pub fn from_json_with(source: &str, json: &str, chat: Option<ChatTemplate>) -> Result<Self> {
        let inner = Self::parse_json(source, json)?;
        match chat {
            Some(template) => Self::with_chat(source, inner, template),
            None => Self::from_hf(inner),
        }
    }

    /// A `tokenizer.json` as Hugging Face's tokenizer, nothing added; `source` names it in errors.
    pub fn parse_json(source: &str, json: &str) -> Result<HfTokenizer> {
        json.parse().map_err(|e| Error::file(source, format!("not a valid tokenizer.json: {e}")))
    }

    /// Parse a `tokenizer.json` with our role tokens; `source` names it in errors.
    pub fn from_json(source: &str, json: &str) -> Result<Self> {
        Self::from_json_with(source, json, None)
    }

    /// The chat format, for a pretrained model's tokenizer.
    pub fn chat(&self) -> Option<&ChatConfig> {
        match &self.format {
            Format::Chat(t) => Some(&t.config),
            Format::Roles { .. } => None,
        }
    }

    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(tk_err)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(tk_err)?.get_ids().to_vec())
    }

    /// One token's text as the vocabulary writes it (role and special tokens included).
    pub fn decode_token(&self, id: u32) -> String {
        self.inner.id_to_token(id).unwrap_or_default()
    }

    /// Tokens generation never draws: for a tokenizer with our role tokens, those whose bytes
    /// are not whole UTF-8 characters, or are control characters other than tab and newline
    /// (a byte-level BPE keeps all 256 bytes so any text encodes, but merges only what its data
    /// had: a lone lead byte drawn by a half-trained model is a U+FFFD in every sample and in
    /// every pair built from it, a stray \x01 a box). Empty for a pretrained model's
    /// tokenizer, whose merges split characters on purpose.
    pub fn unproducible(&self) -> &[u32] {
        &self.unproducible
    }

    /// Decode without the role tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tk_err)
    }

    /// Policy role: `<|user|> prompt <|assistant|>`, or the chat template's user turn.
    pub fn policy_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        match &self.format {
            Format::Roles { user, assistant, .. } => {
                let mut ids = vec![*user];
                ids.extend(self.encode(prompt)?);
                ids.push(*assistant);
                Ok(ids)
            }
            Format::Chat(t) => self.encode(&t.render(&[Message { role: "user", content: prompt }], true)?),
        }
    }

    /// Improver role: `<|user|> prompt <|draft|> draft <|improved|>`, or the chat template
    /// with the improver's system message and the request and draft as the user turn.
    pub fn improver_prompt(&self, prompt: &str, draft: &str) -> Result<Vec<u32>> {
        match &self.format {
            Format::Roles { user, draft: draft_id, improved, .. } => {
                let mut ids = vec![*user];
                ids.extend(self.encode(prompt)?);
                ids.push(*draft_id);
                ids.extend(self.encode(draft)?);
                ids.push(*improved);
                Ok(ids)
            }
            Format::Chat(t) => {
                let request = improver_request(prompt, draft);
                let messages = [
                    Message { role: "system", content: &t.config.improver_system },
                    Message { role: "user", content: &request },
                ];
                self.encode(&t.render(&messages, true)?)
            }
        }
    }

    /// A response as the model should write it: the text, then `<|end|>`.
    pub fn response(&self, response: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(response)?;
        ids.push(self.special.end);
        Ok(ids)
    }
}

/// The ids of `inner`'s byte-level tokens that decode to no whole character, or to a control
/// character.
fn unproducible_tokens(inner: &HfTokenizer) -> Vec<u32> {
    if !matches!(inner.get_decoder(), Some(DecoderWrapper::ByteLevel(_))) {
        return Vec::new();
    }
    let size = inner.get_vocab_size(true) as u32;
    (0..size)
        .filter(|&id| {
            let token = inner.id_to_token(id).unwrap_or_default();
            // U+FFFD is what the decoder makes of bytes that are not UTF-8, unless the token is
            // that character itself (its three bytes, as byte-level characters).
            inner.decode(&[id], false).is_ok_and(|text| (text.contains('\u{fffd}') && token != "ï¿½") || text.chars().any(is_stray_control))
        })
        .collect()
}

fn is_stray_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\n' | '\t' | '\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_role_tokens() {
        let tok = Tokenizer::train_on(&crate::data::tasks::generate(300, 1), 300).unwrap();
        assert!(tok.vocab_size() <= 300 + SPECIAL_TOKENS.len());
        for text in ["sort the numbers: 3 1 2", "Ünïcödé and  spaces\n", "CAT DOG 42"] {
            let ids = tok.encode(text).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), text);
        }
        let p = tok.improver_prompt("q", "d").unwrap();
        let id = |t: &str| tok.inner.token_to_id(t).unwrap();
        assert_eq!(p[0], id(USER));
        assert_eq!(*p.last().unwrap(), id(IMPROVED));
        assert!(p.contains(&id(DRAFT)));
        // Role tokens are single ids and vanish on decode.
        let r = tok.response("1 2").unwrap();
        assert_eq!(*r.last().unwrap(), tok.special.end);
        assert_eq!(tok.decode(&r).unwrap(), "1 2");
        // Saved and reloaded, the tokenizer encodes the same.
        let again = Tokenizer::from_json("t.json", &tok.to_json().unwrap()).unwrap();
        assert_eq!(again.encode("reverse the words: cat dog").unwrap(), tok.encode("reverse the words: cat dog").unwrap());
        assert_eq!(again.special, tok.special);
    }

    /// Trained on ASCII text, the tokens never drawn are the 128 high bytes and the 30 control
    /// bytes other than tab, newline and carriage return: everything else decodes to printable
    /// text.
    #[test]
    fn byte_tokens_that_are_not_whole_characters_are_never_drawn() {
        let tok = Tokenizer::train_on(&crate::data::tasks::generate(300, 1), 300).unwrap();
        let banned: std::collections::BTreeSet<u32> = tok.unproducible().iter().copied().collect();
        assert_eq!(banned.len(), 128 + 30);
        let byte = |b: u8| tok.encode(std::str::from_utf8(&[b]).unwrap_or("")).unwrap();
        assert!(banned.contains(&tok.encode("é").unwrap()[0]), "the lead byte of é");
        assert!(!banned.contains(&byte(b'a')[0]));
        for id in 0..tok.vocab_size() as u32 {
            let text = tok.inner.decode(&[id], false).unwrap();
            assert_eq!(banned.contains(&id), text.contains('\u{fffd}') || text.chars().any(is_stray_control), "token {id} {text:?}");
        }
        // Saved and reloaded, the same; a pretrained model's chat tokenizer bans nothing.
        let again = Tokenizer::from_json("t.json", &tok.to_json().unwrap()).unwrap();
        assert_eq!(again.unproducible(), tok.unproducible());
    }

    #[test]
    fn bad_tokenizer_json_names_the_file() {
        let e = Tokenizer::from_json("my/tokenizer.json", "{not json").unwrap_err();
        assert!(e.to_string().starts_with("my/tokenizer.json: not a valid tokenizer.json"));
    }
}
