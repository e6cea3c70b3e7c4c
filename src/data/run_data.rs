//! A run's data, assembled once from its source, whatever drives the run (CLI, page, tests).

use super::{Dataset, Example, PreferencePair, split_examples, tasks};
use crate::config::DataSource;
use crate::error::{Error, Result};

/// Everything a run draws on.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    /// Prompts with reference answers: SFT, stage 1, SPIN, and the judge.
    pub labeled: Vec<Example>,
    /// Prompts without answers (SGPO only).
    pub unlabeled: Vec<String>,
    /// Fixed pairs (DPO only).
    pub pairs: Vec<PreferencePair>,
    /// Held-out examples.
    pub eval: Vec<Example>,
}

impl RunData {
    /// The data `source` names. A file source needs `file`, its parsed contents: rows with
    /// answers are split into train and held-out parts, bare prompts and preference rows kept.
    pub fn assemble(source: &DataSource, file: Option<Dataset>, seed: u64) -> Result<Self> {
        match source {
            DataSource::Builtin { n_train, n_eval, family: None, phrasing, .. } => {
                let (labeled, eval) = tasks::builtin_split_phrased(*n_train, *n_eval, seed, *phrasing);
                Ok(Self { labeled, eval, ..Self::default() })
            }
            DataSource::Builtin { n_train, n_eval, family: Some(family), phrasing, .. } => {
                let families = tasks::FAMILIES;
                if !families.contains(&family.as_str()) {
                    return Err(Error::Config(format!("task: unknown built-in task {family:?}; use all or one of {}", families.join(", "))));
                }
                // The families take turns, so one family is every k-th example of a k-times larger set.
                let k = families.len();
                let (mut labeled, mut eval) = tasks::builtin_split_phrased(n_train * k, n_eval * k, seed, *phrasing);
                let only = |v: &mut Vec<Example>| v.retain(|e| e.task.as_deref() == Some(family.as_str()));
                only(&mut labeled);
                only(&mut eval);
                Ok(Self { labeled, eval, ..Self::default() })
            }
            DataSource::File { path, eval_fraction, .. } => {
                let file = file.ok_or_else(|| Error::file(path, "not read: a file source needs its contents"))?;
                let (labeled, eval) = split_examples(file.examples, *eval_fraction, seed);
                Ok(Self { labeled, eval, unlabeled: file.prompts, pairs: file.preferences })
            }
        }
    }

    /// Add every row's prompt in `extra` (answers ignored) to the unlabeled pool.
    pub fn add_prompts(&mut self, extra: Dataset) {
        self.unlabeled.extend(extra.prompts);
        self.unlabeled.extend(extra.examples.into_iter().map(|e| e.prompt));
        self.unlabeled.extend(extra.preferences.into_iter().map(|p| p.prompt));
    }

    /// Refuse data with nothing to learn from, naming where it came from.
    pub fn require_labeled(&self, source: &DataSource) -> Result<()> {
        match source {
            DataSource::File { path, .. } if self.labeled.is_empty() => Err(Error::file(
                path,
                "has no examples with reference answers (instruction/output, messages, or prompt/completion) to train on",
            )),
            _ if self.labeled.is_empty() => Err(Error::Config("no training examples".into())),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::parse_jsonl;

    #[test]
    fn a_file_splits_its_answers_and_keeps_prompts_and_pairs() {
        let mut text = String::new();
        for i in 0..20 {
            text.push_str(&format!("{{\"prompt\": \"p{i}\", \"completion\": \"c{i}\"}}\n"));
        }
        text.push_str("{\"prompt\": \"bare\"}\n{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\"}\n");
        let source = DataSource::file("d.jsonl", 0.25);
        let data = RunData::assemble(&source, Some(parse_jsonl("d.jsonl", &text).unwrap()), 3).unwrap();
        assert_eq!((data.labeled.len(), data.eval.len(), data.unlabeled.len(), data.pairs.len()), (15, 5, 1, 1));
        assert!(data.eval.iter().all(|e| !data.labeled.contains(e)));
        assert!(RunData::assemble(&source, None, 3).is_err());
        let only_prompts = RunData::assemble(&source, Some(parse_jsonl("d.jsonl", "{\"prompt\": \"x\"}").unwrap()), 3).unwrap();
        assert!(only_prompts.require_labeled(&source).unwrap_err().to_string().starts_with("d.jsonl: has no examples"));
    }

    #[test]
    fn a_builtin_family_keeps_only_that_family() {
        let source = DataSource::builtin(10, 2).with_family("add");
        let data = RunData::assemble(&source, None, 1).unwrap();
        assert_eq!(data.labeled.len(), 10);
        assert!(!data.eval.is_empty());
        assert!(data.labeled.iter().chain(&data.eval).all(|e| e.task.as_deref() == Some("add")));
        let poetry = DataSource::builtin(10, 2).with_family("poetry");
        let e = RunData::assemble(&poetry, None, 1).unwrap_err().to_string();
        assert!(e.contains("unknown built-in task \"poetry\"") && e.contains("sort"), "{e}");
    }
}
