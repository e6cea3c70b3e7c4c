//! The command line as a user meets it: a short run end to end, and every bad-input kind.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn sgpo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sgpo")).args(args).output().expect("sgpo runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn tiny_sft_then_eval_generate_and_resume() {
    let dir = common::TempDir::new();
    let run = dir.path().join("run").display().to_string();
    let o = sgpo(&["sft", "--out", &run, "--preset", "tiny", "--steps", "6", "--checkpoint-every", "3", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().filter(|l| l["event"] == "train").count(), 6);
    for key in ["loss", "lr", "grad_norm", "tokens/s"] {
        assert!(lines[0][key].is_number(), "{key} in {}", lines[0]);
    }
    assert_eq!(lines.last().unwrap()["event"], "eval");

    let o = sgpo(&["eval", "--model", &run, "--json", "--limit", "18", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let score = summary["mean_score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score));
    assert!(summary["exact_match"].is_number());
    assert!(summary["per_task"].as_array().unwrap().len() >= 8);

    let o = sgpo(&["generate", "--model", &run, "--prompt", "add: 1 + 2", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("add: 1 + 2\n=> "));

    // Starting over an existing run would lose it: refused unless resuming.
    let o = sgpo(&["sft", "--out", &run, "--preset", "tiny", "--device", "cpu"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already holds a run; pass --resume"), "{}", stderr(&o));
    // Resuming a finished run does no more steps and keeps the log as it was.
    let o = sgpo(&["sft", "--out", &run, "--resume", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming"));
    let again = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    assert_eq!(again.lines().filter(|l| l.contains("\"train\"")).count(), 6);
}

#[test]
fn user_alpaca_file_trains_and_evaluates() {
    let dir = common::TempDir::new();
    let mut text = String::new();
    for e in sgpo::tasks::generate(60, 3) {
        text.push_str(&serde_json::json!({"instruction": e.prompt, "input": "", "output": e.response}).to_string());
        text.push('\n');
    }
    let data = write(dir.path(), "alpaca.jsonl", &text);
    let run = dir.path().join("run").display().to_string();
    let o = sgpo(&["sft", "--out", &run, "--data", &data, "--preset", "tiny", "--steps", "3", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("54 train / 6 held-out"), "{}", stderr(&o));
    let o = sgpo(&["eval", "--model", &run, "--data", &data, "--json", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["n"], 6);
}

#[test]
fn bad_input_is_named_precisely() {
    let dir = common::TempDir::new();
    let run = dir.path().join("run").display().to_string();
    let cases = [
        ("{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"a\", \"output\": 5}\n", ":2: field `output`: expected a string, found a number"),
        ("{\"instruction\": \"a\", \"output\": \"b\"}\nnot json\n", ":2: not valid JSON"),
        ("{\"prompt\": \"p\", \"chosen\": \"c\"}\n", ":1: field `rejected` is missing"),
        ("{\"text\": \"x\"}\n", ":1: no known format"),
        ("{\"prompt\": \"only prompts\"}\n", "has no examples with reference answers"),
    ];
    for (i, (content, expected)) in cases.iter().enumerate() {
        let data = write(dir.path(), &format!("bad{i}.jsonl"), content);
        let o = sgpo(&["sft", "--out", &run, "--data", &data, "--preset", "tiny", "--steps", "1", "--device", "cpu"]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(err.contains(&data) && err.contains(expected), "case {i}: {err}");
    }
    let o = sgpo(&["sft", "--out", &run, "--preset", "giant", "--steps", "1", "--device", "cpu"]);
    assert!(stderr(&o).contains("unknown model preset \"giant\""), "{}", stderr(&o));
    let o = sgpo(&["sft", "--out", &run, "--data", "/no/such/file.jsonl", "--device", "cpu"]);
    assert!(stderr(&o).contains("/no/such/file.jsonl"), "{}", stderr(&o));
    let o = sgpo(&["eval", "--model", dir.path().to_str().unwrap(), "--device", "cpu"]);
    assert!(stderr(&o).contains("no checkpoint here"), "{}", stderr(&o));
    let tok = write(dir.path(), "tokenizer.json", "{\"broken\": ");
    let o = sgpo(&["sft", "--out", &run, "--tokenizer", &tok, "--device", "cpu"]);
    assert!(stderr(&o).contains(&format!("{tok}: not a valid tokenizer.json")), "{}", stderr(&o));
    let cfg = write(dir.path(), "sft.json", "{\"stepz\": 3}");
    let o = sgpo(&["sft", "--out", &run, "--config", &cfg, "--device", "cpu"]);
    assert!(stderr(&o).contains(&cfg) && stderr(&o).contains("stepz"), "{}", stderr(&o));
    let o = sgpo(&["sft", "--out", &run, "--device", "gpu"]);
    assert!(!o.status.success());
}

#[test]
fn preference_methods_run_from_an_sft_run() {
    let dir = common::TempDir::new();
    let run = dir.path().join("sft").display().to_string();
    let o = sgpo(&["sft", "--out", &run, "--preset", "tiny", "--steps", "20", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let small = write(
        dir.path(),
        "small.json",
        r#"{"iterations": 1, "improver_steps": 4, "improver_examples": 32, "prompts_per_iteration": 24, "eval_examples": 9, "max_new_tokens": 8}"#,
    );
    let pairs = "{\"prompt\": \"add: 1 + 2\", \"chosen\": \"3\", \"rejected\": \"4\"}\n{\"prompt\": \"last word: cat dog\", \"chosen\": \"dog\", \"rejected\": \"cat\"}\n";
    let pairs = write(dir.path(), "pairs.jsonl", pairs);
    let prompts = write(dir.path(), "prompts.jsonl", "{\"prompt\": \"sort the numbers: 3 1 2\"}\n{\"prompt\": \"add: 4 + 4\"}\n");
    for (method, extra) in [("sgpo", vec!["--prompts", prompts.as_str()]), ("spin", vec![]), ("dpo", vec!["--data", pairs.as_str()])] {
        let out = dir.path().join(method).display().to_string();
        let mut args = vec!["train", "--method", method, "--init", &run, "--out", &out, "--config", &small, "--device", "cpu"];
        args.extend(extra);
        let o = sgpo(&args);
        assert!(o.status.success(), "{method}: {}", stderr(&o));
        let metrics = std::fs::read_to_string(dir.path().join(method).join("metrics.jsonl")).unwrap();
        let events: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let iteration = events.iter().rev().find(|e| e["event"] == "iteration").expect("an iteration event");
        assert_eq!(iteration["iteration"], 1, "{method}");
        let exported = std::fs::read_to_string(dir.path().join(method).join("pairs-iter1.jsonl")).unwrap();
        for line in exported.lines() {
            let p: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(p["prompt"].is_string() && p["chosen"].is_string() && p["rejected"].is_string());
        }
        if method == "dpo" {
            assert_eq!(exported.lines().count(), 2);
            let dpo = events.iter().find(|e| e["event"] == "dpo").expect("a dpo step");
            for key in ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected", "grad_norm", "lr", "loss"] {
                assert!(dpo[key].is_number(), "{key} in {dpo}");
            }
        }
        if method == "sgpo" {
            assert!(events.iter().any(|e| e["event"] == "train" && e["stage"] == "improver"));
            assert!(std::fs::read_to_string(dir.path().join("sgpo/samples.jsonl")).unwrap().contains("\"draft\""));
        }
        // Evaluating a preference run works like an SFT run.
        let o = sgpo(&["eval", "--model", &out, "--json", "--limit", "9", "--device", "cpu"]);
        assert!(o.status.success(), "{method} eval: {}", stderr(&o));
    }
    // DPO without pairs is refused with a reason.
    let out = dir.path().join("nodpo").display().to_string();
    let o = sgpo(&["train", "--method", "dpo", "--init", &run, "--out", &out, "--config", &small, "--device", "cpu"]);
    assert!(stderr(&o).contains("method dpo needs preference pairs"), "{}", stderr(&o));
}
