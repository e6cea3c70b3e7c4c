//! The data users have, read into one shape. JSONL only, one record per line, in any of:
//! Alpaca (`instruction`, optional `input`, `output`), chat (`messages` with `role`/`content`),
//! `prompt`/`completion`, TRL preference rows (`prompt`/`chosen`/`rejected`), and bare
//! `prompt` lines (prompts without answers). Every error names the file, the line and the field.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// An instruction and its reference answer. `task` names the built-in family, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub prompt: String,
    pub response: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

/// A preference row as TRL writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferencePair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Example(Example),
    Preference(PreferencePair),
    Prompt(String),
}

/// Everything read from one file.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub examples: Vec<Example>,
    pub preferences: Vec<PreferencePair>,
    pub prompts: Vec<String>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Line<'a> {
    file: &'a str,
    line: usize,
}

impl Line<'_> {
    fn err(&self, message: impl std::fmt::Display) -> Error {
        Error::data(self.file, self.line, message)
    }

    fn string(&self, obj: &Map<String, Value>, field: &str) -> Result<String> {
        match obj.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.err(format!(
                "field `{field}`: expected a string, found {}",
                type_name(other)
            ))),
            None => Err(self.err(format!("field `{field}` is missing"))),
        }
    }

    fn optional_string(&self, obj: &Map<String, Value>, field: &str) -> Result<String> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(_) => self.string(obj, field),
        }
    }

    fn non_empty(&self, field: &str, s: String) -> Result<String> {
        if s.trim().is_empty() {
            Err(self.err(format!("field `{field}` is empty")))
        } else {
            Ok(s)
        }
    }

    /// A chat transcript: everything before the last assistant turn is the prompt.
    fn messages(&self, value: &Value) -> Result<Example> {
        let Value::Array(turns) = value else {
            return Err(self.err(format!(
                "field `messages`: expected an array, found {}",
                type_name(value)
            )));
        };
        let mut parsed = Vec::with_capacity(turns.len());
        for (i, turn) in turns.iter().enumerate() {
            let Value::Object(obj) = turn else {
                return Err(self.err(format!(
                    "field `messages[{i}]`: expected an object, found {}",
                    type_name(turn)
                )));
            };
            let role = self
                .string(obj, "role")
                .map_err(|_| self.err(format!("field `messages[{i}].role`: expected a string")))?;
            let content = self.string(obj, "content").map_err(|_| {
                self.err(format!("field `messages[{i}].content`: expected a string"))
            })?;
            if !matches!(role.as_str(), "system" | "user" | "assistant") {
                return Err(self.err(format!(
                    "field `messages[{i}].role`: expected \"system\", \"user\" or \"assistant\", found {role:?}"
                )));
            }
            parsed.push((role, content));
        }
        let last = parsed
            .iter()
            .rposition(|(role, _)| role == "assistant")
            .ok_or_else(|| self.err("field `messages`: no \"assistant\" turn to learn from"))?;
        let prompt = if last == 1 && parsed[0].0 == "user" {
            parsed[0].1.clone()
        } else {
            parsed[..last]
                .iter()
                .map(|(role, content)| format!("{role}: {content}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        Ok(Example {
            prompt: self.non_empty("messages", prompt)?,
            response: parsed[last].1.clone(),
            task: None,
        })
    }

    fn record(&self, text: &str) -> Result<Record> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| self.err(format!("not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(self.err(format!(
                "expected a JSON object, found {}",
                type_name(&value)
            )));
        };
        let has = |k: &str| obj.contains_key(k);
        if has("messages") {
            return Ok(Record::Example(self.messages(&obj["messages"])?));
        }
        if has("instruction") || has("output") {
            let instruction = self.non_empty("instruction", self.string(&obj, "instruction")?)?;
            let input = self.optional_string(&obj, "input")?;
            let output = self.string(&obj, "output")?;
            let prompt = if input.trim().is_empty() {
                instruction
            } else {
                format!("{instruction}\n{input}")
            };
            return Ok(Record::Example(Example {
                prompt,
                response: output,
                task: None,
            }));
        }
        if has("prompt") {
            let prompt = self.non_empty("prompt", self.string(&obj, "prompt")?)?;
            if has("chosen") || has("rejected") {
                return Ok(Record::Preference(PreferencePair {
                    prompt,
                    chosen: self.string(&obj, "chosen")?,
                    rejected: self.string(&obj, "rejected")?,
                }));
            }
            if has("completion") {
                return Ok(Record::Example(Example {
                    prompt,
                    response: self.string(&obj, "completion")?,
                    task: None,
                }));
            }
            return Ok(Record::Prompt(prompt));
        }
        Err(self.err(
            "no known format: expected `instruction`+`output` (Alpaca), `messages` (chat), \
             `prompt`+`completion`, `prompt`+`chosen`+`rejected` (preferences) or `prompt` alone",
        ))
    }
}

/// Parse JSONL `text`; `file` names it in errors. Blank lines are skipped.
pub fn parse_jsonl(file: &str, text: &str) -> Result<Dataset> {
    let mut data = Dataset::default();
    // A UTF-8 byte-order mark, as some editors write, is not part of the first record.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line = Line { file, line: i + 1 };
        match line.record(raw)? {
            Record::Example(e) => data.examples.push(e),
            Record::Preference(p) => data.preferences.push(p),
            Record::Prompt(p) => data.prompts.push(p),
        }
    }
    if data.examples.is_empty() && data.preferences.is_empty() && data.prompts.is_empty() {
        return Err(Error::file(file, "contains no records (expected JSON objects, one per line)"));
    }
    Ok(data)
}

/// Parse a file's bytes: text that is not UTF-8 is refused by line.
pub fn parse_jsonl_bytes(file: &str, bytes: &[u8]) -> Result<Dataset> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_jsonl(file, text),
        Err(e) => {
            let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
            Err(Error::data(file, line, "not UTF-8 text (save the file as UTF-8)"))
        }
    }
}

/// Split examples into train and held-out parts, reproducibly. At least one example is held
/// out when there are two or more.
pub fn split_examples(
    mut examples: Vec<Example>,
    eval_fraction: f32,
    seed: u64,
) -> (Vec<Example>, Vec<Example>) {
    Rng::new(seed).fork(0x5b1e).shuffle(&mut examples);
    let n_eval = ((examples.len() as f32 * eval_fraction).round() as usize)
        .max(usize::from(examples.len() >= 2))
        .min(examples.len().saturating_sub(1));
    let eval = examples.split_off(examples.len() - n_eval);
    (examples, eval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_jsonl("d.jsonl", text).unwrap_err().to_string()
    }

    #[test]
    fn reads_every_format() {
        let text = r#"{"instruction": "add", "input": "1 + 2", "output": "3"}
{"instruction": "say hi", "output": "hi"}

{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
{"prompt": "p", "completion": "c"}
{"prompt": "p", "chosen": "good", "rejected": "bad"}
{"prompt": "only a prompt"}"#;
        let d = parse_jsonl("d.jsonl", text).unwrap();
        assert_eq!(d.examples.len(), 4);
        assert_eq!(d.examples[0].prompt, "add\n1 + 2");
        assert_eq!(d.examples[0].response, "3");
        assert_eq!(d.examples[1].prompt, "say hi");
        assert_eq!(d.examples[2].prompt, "q");
        assert_eq!(d.examples[2].response, "a");
        assert_eq!(d.examples[3].response, "c");
        assert_eq!(d.preferences[0].chosen, "good");
        assert_eq!(d.prompts, vec!["only a prompt".to_string()]);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        assert!(err("{\"instruction\": \"x\", \"output\": \"y\"}\n{oops").starts_with("d.jsonl:2: not valid JSON"));
        assert_eq!(err("[1]"), "d.jsonl:1: expected a JSON object, found an array");
        assert_eq!(
            err(r#"{"instruction": "x", "output": 3}"#),
            "d.jsonl:1: field `output`: expected a string, found a number"
        );
        assert_eq!(err(r#"{"output": "y"}"#), "d.jsonl:1: field `instruction` is missing");
        assert_eq!(err(r#"{"instruction": " ", "output": "y"}"#), "d.jsonl:1: field `instruction` is empty");
        assert_eq!(
            err(r#"{"messages": [{"role": "bot", "content": "x"}]}"#),
            "d.jsonl:1: field `messages[0].role`: expected \"system\", \"user\" or \"assistant\", found \"bot\""
        );
        assert_eq!(
            err(r#"{"messages": [{"role": "user"}]}"#),
            "d.jsonl:1: field `messages[0].content`: expected a string"
        );
        assert_eq!(
            err(r#"{"prompt": "p", "chosen": "c"}"#),
            "d.jsonl:1: field `rejected` is missing"
        );
        assert!(err(r#"{"text": "x"}"#).starts_with("d.jsonl:1: no known format"));
        assert!(err("\n\n").contains("contains no records"));
        // A byte-order mark is skipped; bytes that are not UTF-8 are named by line.
        assert_eq!(parse_jsonl("d.jsonl", "\u{feff}{\"prompt\": \"p\"}").unwrap().prompts, vec!["p".to_string()]);
        let e = parse_jsonl_bytes("d.jsonl", b"{\"prompt\": \"p\"}\n{\"prompt\": \"\xff\"}\n").unwrap_err().to_string();
        assert_eq!(e, "d.jsonl:2: not UTF-8 text (save the file as UTF-8)");
    }

    #[test]
    fn split_is_reproducible_and_disjoint() {
        let examples: Vec<Example> = (0..20)
            .map(|i| Example { prompt: format!("p{i}"), response: "r".into(), task: None })
            .collect();
        let (a, b) = split_examples(examples.clone(), 0.1, 1);
        let (c, d) = split_examples(examples, 0.1, 1);
        assert_eq!((a.len(), b.len()), (18, 2));
        assert_eq!((a.clone(), b.clone()), (c, d));
        assert!(b.iter().all(|e| !a.contains(e)));
    }
}
