//! The command line as a user meets it: a short run end to end, and every bad-input kind.
#![cfg(not(target_arch = "wasm32"))] // native: wasm-pack builds every test target for wasm32

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
    // 80 steps at a high rate: enough for some answers to score above zero (about a second).
    let o = sgpo(&["sft", "--out", &run, "--preset", "tiny", "--steps", "80", "--lr", "0.01", "--checkpoint-every", "40", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().filter(|l| l["event"] == "train").count(), 80);
    for key in ["loss", "lr", "grad_norm", "tokens/s"] {
        assert!(lines[0][key].is_number(), "{key} in {}", lines[0]);
    }
    assert_eq!(lines.last().unwrap()["event"], "eval");

    let o = sgpo(&["eval", "--model", &run, "--json", "--limit", "18", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The overall scores are the per-task ones weighted by their counts, over the 18 asked for.
    let per_task = summary["per_task"].as_array().unwrap();
    assert!(per_task.len() >= 8);
    let n: u64 = per_task.iter().map(|t| t["n"].as_u64().unwrap()).sum();
    assert_eq!((n, summary["n"].as_u64().unwrap()), (18, 18));
    for key in ["mean_score", "exact_match"] {
        let weighted: f64 = per_task.iter().map(|t| t["n"].as_f64().unwrap() * t[key].as_f64().unwrap()).sum::<f64>() / 18.0;
        assert!((weighted - summary[key].as_f64().unwrap()).abs() < 1e-5, "{key}: {summary}");
    }
    // Trained beats the same model at its initial weights, which answers nothing right.
    let o = sgpo(&["eval", "--model", &run, "--untrained", "--json", "--limit", "18", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let untrained: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(summary["mean_score"].as_f64().unwrap() > untrained["mean_score"].as_f64().unwrap() + 0.05, "{summary} vs {untrained}");

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
    assert_eq!(again.lines().filter(|l| l.contains("\"train\"")).count(), 80);
}

#[test]
fn user_alpaca_file_trains_and_evaluates() {
    let dir = common::TempDir::new();
    let mut text = String::new();
    for e in sgpo::data::tasks::generate(60, 3) {
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
    assert!(stderr(&o).contains("unknown device \"gpu\"; use auto, wgpu or cpu"), "{}", stderr(&o));
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
        // Every pair the iteration built is exported, and it built some.
        assert_eq!(exported.lines().count() as u64, iteration["pairs_built"].as_u64().unwrap(), "{method}");
        assert!(!exported.is_empty(), "{method}: no pairs");
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

/// The numbers that must agree between two runs: everything but timings.
fn comparable(line: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    v.as_object_mut().unwrap().remove("tokens/s");
    v
}

fn same_lines(a: &str, b: &str, what: &str) {
    let (a, b): (Vec<_>, Vec<_>) = (a.lines().map(comparable).collect(), b.lines().map(comparable).collect());
    assert_eq!(a.len(), b.len(), "{what}: {} lines vs {}", a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        for (key, xv) in x.as_object().unwrap() {
            let yv = &y[key];
            match (xv.as_f64(), yv.as_f64()) {
                (Some(p), Some(q)) => assert!((p - q).abs() <= 1e-5 * p.abs().max(1.0), "{what}:{}: {key} {p} vs {q}", i + 1),
                _ => assert_eq!(xv, yv, "{what}:{}: {key}", i + 1),
            }
        }
    }
}

/// A preference run killed mid-stage-1 and again mid-DPO (after samples it had logged since
/// its last checkpoint), resumed each time, leaves the same metrics.jsonl and samples.jsonl,
/// line for line, as a run that never stopped.
#[test]
fn train_resume_after_kills_logs_every_event_once() {
    let dir = common::TempDir::new();
    let init = dir.path().join("sft").display().to_string();
    let o = sgpo(&["sft", "--out", &init, "--preset", "tiny", "--steps", "20", "--checkpoint-every", "3", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config = write(
        dir.path(),
        "small.json",
        r#"{"iterations": 2, "improver_steps": 7, "improver_examples": 24, "prompts_per_iteration": 16, "batch_size": 4, "eval_examples": 9, "max_new_tokens": 8}"#,
    );
    let train = |out: &str, extra: &[&str]| {
        let mut args = vec!["train", "--init", &init, "--out", out, "--config", &config, "--device", "cpu"];
        args.extend(extra);
        sgpo(&args)
    };
    let straight = dir.path().join("straight").display().to_string();
    let o = train(&straight, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Units: 1 starts stage 1, 2..=8 are its 7 steps; checkpoints every 3 steps. Halting after
    // unit 6 (step 5) loses steps 4 and 5 from the checkpoint's view; they are logged already.
    let killed = dir.path().join("killed").display().to_string();
    let o = train(&killed, &["--halt-after", "6"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // Resumed at step 3: stage 1's last 4 steps (4 units), iteration 1's pairs and samples
    // (1 unit), 2 DPO steps (steps 8, 9: a checkpoint at 9), one more (step 10): halt.
    let o = train(&killed, &["--resume", "--halt-after", "8"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = train(&killed, &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));

    for file in ["metrics.jsonl", "samples.jsonl", "pairs-iter1.jsonl", "pairs-iter2.jsonl"] {
        let read = |run: &str| std::fs::read_to_string(Path::new(run).join(file)).unwrap();
        let (a, b) = (read(&straight), read(&killed));
        assert!(!a.is_empty(), "{file} is empty");
        same_lines(&a, &b, file);
    }
    // One step counter over stage 1 and DPO: steps never repeat.
    let metrics = std::fs::read_to_string(Path::new(&straight).join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics.lines().map(comparable).filter(|e| e["event"] == "train" || e["event"] == "dpo").map(|e| e["step"].as_u64().unwrap()).collect();
    assert!(steps.windows(2).all(|w| w[1] == w[0] + 1) && steps[0] == 1, "{steps:?}");
}

#[test]
fn bench_reports_every_measurement_as_json() {
    let o = sgpo(&["bench", "--preset", "tiny", "--batch-size", "2", "--seq-len", "64", "--steps", "1", "--new-tokens", "4", "--decode-batch", "1,3", "--json", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((report["preset"].as_str(), report["batch_size"].as_u64(), report["seq_len"].as_u64()), (Some("tiny"), Some(2), Some(64)));
    assert!(report["parameters"].as_u64().unwrap() > 10_000);
    assert_eq!((report["lora"].as_str(), report["trainable_parameters"].as_u64()), (Some("none"), report["parameters"].as_u64()));
    for step in ["sft", "dpo"] {
        assert!(report[step]["step_s"].as_f64().unwrap() > 0.0, "{step}");
        // 2 rows of 64 tokens per SFT step, 2 pairs (4 rows) per DPO step.
        let tokens = report[step]["tokens_per_s"].as_f64().unwrap() * report[step]["step_s"].as_f64().unwrap();
        let expected = if step == "sft" { 2.0 * 64.0 } else { 4.0 * 64.0 };
        assert!((tokens / expected - 1.0).abs() < 0.05, "{step}: {tokens} tokens per step");
    }
    assert!(report["prefill_tokens_per_s"].as_f64().unwrap() > 0.0);
    let generation = report["generation"].as_array().unwrap();
    let kinds: Vec<(u64, bool)> = generation.iter().map(|g| (g["batch_size"].as_u64().unwrap(), g["cache"].as_bool().unwrap())).collect();
    assert_eq!(kinds, vec![(1, true), (1, false), (3, true), (3, false)]);
    assert!(generation.iter().all(|g| g["tokens_per_s"].as_f64().unwrap() > 0.0));
    // Decoding alone, with the cache only (what the GPU script measures most).
    let o = sgpo(&["bench", "--preset", "tiny", "--no-training", "--cache-only", "--new-tokens", "4", "--decode-batch", "2", "--json", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["sft"].is_null() && report["dpo"].is_null(), "{report}");
    let kinds: Vec<(u64, bool)> = report["generation"].as_array().unwrap().iter().map(|g| (g["batch_size"].as_u64().unwrap(), g["cache"].as_bool().unwrap())).collect();
    assert_eq!(kinds, vec![(2, true)]);
    // The GPU script's first check: wgpu's logits against the CPU backend's (lavapipe here).
    let o = sgpo(&["bench", "--preset", "tiny", "--check", "--json", "--device", "wgpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let check: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let scale = check["scale"].as_f64().unwrap();
    for part in ["forward_max_diff", "decode_max_diff"] {
        let d = check[part].as_f64().unwrap();
        assert!((0.0..1e-4 * scale).contains(&d), "{part}: {check}");
    }
    assert_eq!(check["passed"].as_bool(), Some(true), "{check}");
    let o = sgpo(&["bench", "--preset", "tiny", "--batch-size", "2", "--seq-len", "32", "--steps", "1", "--no-generation", "--json", "--device", "cpu", "--lora-rank", "2"]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("--lora-rank needs --model"), "{e}");
}

/// A step with a non-finite loss or gradient stops the run, names the step, and applies and
/// saves nothing: the log has no `null`, and the last checkpoint still loads.
#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = common::TempDir::new();
    let run = dir.path().join("run").display().to_string();
    let o = sgpo(&["sft", "--out", &run, "--preset", "tiny", "--steps", "20", "--lr", "1e9", "--checkpoint-every", "1", "--device", "cpu"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("sft step ") && err.contains("is not finite, so the step was not applied"), "{err}");
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    assert!(!metrics.contains("null") && !metrics.is_empty(), "{metrics}");
    let o = sgpo(&["eval", "--model", &run, "--json", "--limit", "9", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Read back 8 steps at a time and no checkpoint due: the log still holds each step before
    // the bad one, once, and the error names the first bad one.
    let run = dir.path().join("deferred").display().to_string();
    let o = sgpo(&["sft", "--out", &run, "--preset", "tiny", "--steps", "20", "--lr", "1e9", "--read-every", "8", "--device", "cpu"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    let bad: usize = err.split("sft step ").nth(1).and_then(|rest| rest.split(':').next()).and_then(|n| n.parse().ok()).expect(&err);
    let metrics = std::fs::read_to_string(dir.path().join("deferred/metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..bad as u64).collect::<Vec<_>>(), "{err}");
}

/// What a crash or a full disk leaves in the log (a `null`, a line cut off) after the last
/// checkpoint does not block a resume: the log is cut back to the checkpoint's lines and
/// every later step is logged again, once.
#[test]
fn resume_survives_a_torn_log_and_logs_each_step_once() {
    let dir = common::TempDir::new();
    let run = dir.path().join("run").display().to_string();
    let o = sgpo(&["sft", "--out", &run, "--preset", "tiny", "--steps", "6", "--checkpoint-every", "3", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let straight = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    // As if killed after step 5: `latest` names step 3's checkpoint (the previous one is
    // kept), and the log ends in a line with a null and a torn one.
    std::fs::write(dir.path().join("run/latest"), "checkpoint-00000003").unwrap();
    let lines: Vec<&str> = straight.lines().collect();
    let torn = format!("{}\n{}\n{{\"event\":\"train\",\"stage\":\"sft\",\"step\":6,\"loss\":null}}\n{{\"event\":\"train\",\"st", lines[..3].join("\n"), lines[3..5].join("\n"));
    std::fs::write(dir.path().join("run/metrics.jsonl"), torn).unwrap();
    let o = sgpo(&["sft", "--out", &run, "--resume", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let steps = |log: &str| -> Vec<u64> { log.lines().map(comparable).filter(|e| e["event"] == "train").map(|e| e["step"].as_u64().unwrap()).collect() };
    assert_eq!(steps(&resumed), vec![1, 2, 3, 4, 5, 6]);
    same_lines(&straight, &resumed, "metrics.jsonl");
}

/// Two processes on one run directory: the second is refused while the first runs; a lock
/// left by a killed process is taken over.
#[test]
fn a_run_directory_has_one_writer() {
    let dir = common::TempDir::new();
    let run = dir.path().join("run").display().to_string();
    let mut first = Command::new(env!("CARGO_BIN_EXE_sgpo"))
        .args(["sft", "--out", &run, "--preset", "tiny", "--steps", "100000", "--checkpoint-every", "20", "--device", "cpu"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (lock, latest) = (dir.path().join("run/run.lock"), dir.path().join("run/latest"));
    while !latest.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = sgpo(&["sft", "--out", &run, "--resume", "--device", "cpu"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&format!("another sgpo process (pid {}) is writing this run", first.id())), "{}", stderr(&o));
    let dead = first.id();
    first.kill().unwrap();
    first.wait().unwrap();
    // Killed: its lock stays behind, and its last checkpoint is whole.
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), dead.to_string());
    let o = sgpo(&["eval", "--model", &run, "--limit", "3", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The next writer of a directory whose lock names a dead process takes it over.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("run.lock"), dead.to_string()).unwrap();
    let o = sgpo(&["sft", "--out", other.to_str().unwrap(), "--preset", "tiny", "--steps", "1", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("taking over the lock of a process that no longer runs (pid {dead})")), "{}", stderr(&o));
    assert!(!other.join("run.lock").exists());
}

/// Settings out of range, and requests that cannot mean what they say, are refused with the
/// setting and its allowed range named, before any work.
#[test]
fn settings_are_checked_before_a_run_starts() {
    let dir = common::TempDir::new();
    let init = dir.path().join("sft").display().to_string();
    let o = sgpo(&["sft", "--out", &init, "--preset", "tiny", "--steps", "2", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let same = write(dir.path(), "same.jsonl", "{\"prompt\": \"p\", \"chosen\": \"a b\", \"rejected\": \"a  b\"}\n");
    let data = write(dir.path(), "data.jsonl", "{\"instruction\": \"say hi\", \"output\": \"hi\"}\n{\"instruction\": \"say yo\", \"output\": \"yo\"}\n");
    let fresh = |name: &str| dir.path().join(name).display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["sft".into(), "--steps".into(), "0".into()], "steps = 0 is out of range (allowed: 1 or more)"),
        (vec!["sft".into(), "--lr=-1".into()], "optim.lr = -1 is out of range (allowed: a finite number above 0)"),
        (vec!["sft".into(), "--lr".into(), "NaN".into()], "optim.lr = NaN is out of range"),
        (vec!["sft".into(), "--batch-size".into(), "0".into()], "batch_size = 0 is out of range"),
        (vec!["sft".into(), "--data".into(), data.clone(), "--eval-fraction".into(), "1.5".into()], "eval_fraction = 1.5 is out of range (allowed: 0 to 1, exclusive)"),
        (vec!["sft".into(), "--resume".into()], "nothing to resume (no checkpoint there)"),
        (vec!["sft".into(), "--read-every".into(), "0".into()], "--read-every = 0 is out of range (allowed: 1 or more)"),
        (vec!["sft".into(), "--read-every".into(), "4".into(), "--skip-nonfinite".into(), "2".into()], "--read-every 4 with --skip-nonfinite: skipping a step needs it read before it is applied"),
        (vec!["train".into(), "--init".into(), init.clone(), "--read-every".into(), "0".into()], "--read-every = 0 is out of range"),
        (vec!["train".into(), "--init".into(), init.clone(), "--beta".into(), "0".into()], "beta = 0 is out of range (allowed: a finite number above 0)"),
        (vec!["train".into(), "--init".into(), init.clone(), "--beta=-2".into()], "beta = -2 is out of range"),
        (vec!["train".into(), "--init".into(), init.clone(), "--label-smoothing".into(), "5".into()], "label_smoothing = 5 is out of range (allowed: 0 to 0.5, exclusive)"),
        (vec!["train".into(), "--init".into(), init.clone(), "--prompts-per-iteration".into(), "0".into()], "prompts_per_iteration = 0 is out of range"),
        (vec!["train".into(), "--init".into(), init.clone(), "--lr".into(), "inf".into()], "dpo_optim.lr = inf is out of range"),
        (vec!["train".into(), "--init".into(), init.clone(), "--iterations".into(), "0".into()], "iterations = 0 is out of range"),
        (vec!["train".into(), "--init".into(), init.clone(), "--resume".into()], "nothing to resume (no checkpoint there)"),
        (vec!["train".into(), "--init".into(), init.clone(), "--method".into(), "dpo".into(), "--data".into(), same], "every pair's chosen answer equals its rejected one"),
        (vec!["train".into(), "--init".into(), init.clone(), "--method".into(), "spin".into(), "--improvement-passes".into(), "2".into()], "improvement_passes = 2 with method spin: only SGPO improves its drafts"),
    ];
    for (i, (args, expected)) in cases.into_iter().enumerate() {
        let out = fresh(&format!("run{i}"));
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(["--out", &out, "--device", "cpu"]);
        if all[0] == "sft" && !all.contains(&"--preset") {
            all.extend(["--preset", "tiny"]);
        }
        let o = sgpo(&all);
        assert!(!o.status.success(), "case {i} ran: {all:?}");
        assert!(stderr(&o).contains(expected), "case {i} {all:?}: {}", stderr(&o));
        assert!(!Path::new(&out).join("latest").exists(), "case {i} saved a run");
    }
    for bad in ["0", "10", "262"] {
        let o = sgpo(&["tokenizer", "train", "--out", &fresh("tok.json"), "--vocab-size", bad]);
        assert!(stderr(&o).contains(&format!("--vocab-size = {bad} is out of range (allowed: 263 or more)")), "{}", stderr(&o));
    }
    // An experiment's results file holding a run of other settings is refused, by line, before
    // anything trains.
    let exp = fresh("exp");
    std::fs::create_dir_all(&exp).unwrap();
    let other = r#"{"setting": "all-labeled", "method": "sgpo", "sft_seed": 0, "seed": 0, "split": "validation", "win_rate": 0.5, "mean_score": 0.5, "comparison": {"wins": [0.5], "scores": [0.5]}, "compute": {"optimizer_steps": 1, "pairs": 1, "generated_tokens": 1}, "sft_key": "all-labeled-sft0-00000000", "preference_key": "00000000"}"#;
    write(Path::new(&exp), "results-validation.jsonl", &format!("\n{other}\n"));
    let o = sgpo(&["experiment", "--out", &exp, "--device", "cpu"]);
    assert!(!o.status.success() && stderr(&o).contains("results-validation.jsonl:2: a run made with other settings"), "{}", stderr(&o));
    assert!(!Path::new(&exp).join("sft").exists(), "nothing trained");
    // A file of one row trains, and says it has nothing to hold out rather than scoring nothing.
    let one = write(dir.path(), "one.jsonl", "{\"instruction\": \"say hi\", \"output\": \"hi\"}\n");
    let o = sgpo(&["sft", "--out", &fresh("one"), "--data", &one, "--preset", "tiny", "--steps", "1", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("no held-out examples to score"), "{}", stderr(&o));
}

/// `--resume` takes the flags given with it at their word: the same values are fine, a
/// different one is refused by name, and `--steps` / `--iterations` move the run's end.
#[test]
fn resume_checks_the_flags_given_with_it() {
    let dir = common::TempDir::new();
    let run = dir.path().join("sft").display().to_string();
    let o = sgpo(&["sft", "--out", &run, "--preset", "tiny", "--steps", "4", "--checkpoint-every", "2", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let refused = |args: &[&str], flags: &str| {
        let o = sgpo(args);
        assert!(!o.status.success(), "{args:?} ran");
        assert!(stderr(&o).contains(&format!("these flags differ from the saved run's settings: {flags};")), "{args:?}: {}", stderr(&o));
    };
    refused(&["sft", "--out", &run, "--resume", "--preset", "small", "--device", "cpu"], "--preset");
    refused(&["sft", "--out", &run, "--resume", "--lr", "0.5", "--seed", "9", "--device", "cpu"], "--lr (or --config), --seed");
    let o = sgpo(&["sft", "--out", &run, "--resume", "--preset", "tiny", "--steps", "6", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("--steps 6: the run now ends at step 6 (it was to end at 4)"), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(dir.path().join("sft/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().filter(|l| l.contains("\"train\"")).count(), 6);

    let config = write(dir.path(), "small.json", r#"{"iterations": 1, "improver_steps": 2, "improver_examples": 8, "prompts_per_iteration": 8, "batch_size": 4, "eval_examples": 4, "max_new_tokens": 6}"#);
    let out = dir.path().join("sgpo").display().to_string();
    let o = sgpo(&["train", "--init", &run, "--out", &out, "--config", &config, "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    refused(&["train", "--init", &run, "--out", &out, "--resume", "--beta", "0.5", "--device", "cpu"], "--beta");
    refused(&["train", "--init", &run, "--out", &out, "--resume", "--method", "spin", "--device", "cpu"], "--method");
    refused(&["train", "--init", &config, "--out", &out, "--resume", "--device", "cpu"], "--init");
    let o = sgpo(&["train", "--init", &run, "--out", &out, "--resume", "--iterations", "2", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path().join("sgpo/pairs-iter2.jsonl").exists(), "{}", stderr(&o));
}

/// A run records its data file by absolute path (a relative `--data` works from anywhere
/// later), and `eval --data` on the run's own file scores the run's own held-out part.
#[test]
fn data_files_are_found_again_and_split_as_the_run_split_them() {
    let dir = common::TempDir::new();
    let mut text = String::new();
    for e in sgpo::data::tasks::generate(40, 5) {
        text.push_str(&serde_json::json!({"instruction": e.prompt, "output": e.response}).to_string());
        text.push('\n');
    }
    // A byte-order mark, as some editors write, is fine.
    std::fs::write(dir.path().join("data.jsonl"), format!("\u{feff}{text}")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_sgpo"))
        .current_dir(dir.path())
        .args(["sft", "--out", "run", "--data", "data.jsonl", "--eval-fraction", "0.25", "--preset", "tiny", "--steps", "2", "--device", "cpu"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/config.json")).unwrap()).unwrap();
    assert_eq!(saved["sft"]["data"]["path"], dir.path().join("data.jsonl").display().to_string());
    let run = dir.path().join("run").display().to_string();
    let data = dir.path().join("data.jsonl").display().to_string();
    let o = sgpo(&["eval", "--model", &run, "--data", &data, "--json", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["n"], 10, "the run held out a quarter of 40 rows");
    assert!(!stderr(&o).contains("changed since"), "{}", stderr(&o));
    // Edited after training: scored, with a warning that names the file.
    std::fs::write(dir.path().join("data.jsonl"), text.replace("sort", "order")).unwrap();
    let o = sgpo(&["eval", "--model", &run, "--data", &data, "--json", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("warning: {data} changed since the run recorded it")), "{}", stderr(&o));
}

/// A damaged checkpoint file is refused by name, not loaded as garbage.
#[test]
fn a_damaged_checkpoint_is_refused() {
    let dir = common::TempDir::new();
    let run = dir.path().join("run").display().to_string();
    let o = sgpo(&["sft", "--out", &run, "--preset", "tiny", "--steps", "2", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let latest = std::fs::read_to_string(dir.path().join("run/latest")).unwrap();
    let model = dir.path().join("run").join(latest.trim()).join("model.bpk");
    std::fs::write(&model, vec![0xFFu8; 4000]).unwrap();
    let o = sgpo(&["eval", "--model", &run, "--device", "cpu"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("model.bpk: damaged: its CRC-32 is"), "{}", stderr(&o));

    // Without its optimiser state a run does not resume (fresh AdamW moments are not the run).
    let other = dir.path().join("other").display().to_string();
    assert!(sgpo(&["sft", "--out", &other, "--preset", "tiny", "--steps", "2", "--device", "cpu"]).status.success());
    let latest = std::fs::read_to_string(dir.path().join("other/latest")).unwrap();
    std::fs::remove_file(dir.path().join("other").join(latest.trim()).join("optimizer.safetensors")).unwrap();
    let o = sgpo(&["sft", "--out", &other, "--resume", "--steps", "3", "--device", "cpu"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("optimizer.safetensors: missing from the checkpoint"), "{}", stderr(&o));
}

/// A run resumed on the CPU backend never starts wgpu: burn's optimiser loaded its state on
/// its default device first, and without a session's XDG_RUNTIME_DIR the Vulkan loader said so
/// four times on every `--resume --device cpu` (our AdamW keeps loaded moments on the host).
#[test]
fn resuming_on_the_cpu_does_not_touch_vulkan() {
    let dir = common::TempDir::new();
    let run = dir.path().join("run").display().to_string();
    let sft = |extra: &[&str]| {
        let mut args = vec!["sft", "--out", run.as_str(), "--preset", "tiny", "--device", "cpu"];
        args.extend(extra);
        Command::new(env!("CARGO_BIN_EXE_sgpo")).args(&args).env_remove("XDG_RUNTIME_DIR").env_remove("BURN_DEVICE").output().unwrap()
    };
    assert!(sft(&["--steps", "2"]).status.success());
    let o = sft(&["--resume", "--steps", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("XDG_RUNTIME_DIR"), "{}", stderr(&o));
}

/// SFT trains on the rows with answers; a mixed file's other rows are counted, not dropped
/// silently.
#[test]
fn sft_says_how_many_rows_of_a_mixed_file_it_leaves_to_train() {
    let dir = common::TempDir::new();
    let data = dir.path().join("mixed.jsonl");
    let mut rows: Vec<String> = (0..10).map(|i| format!(r#"{{"instruction": "add: {i} + 1", "output": "{}"}}"#, i + 1)).collect();
    rows.push(r#"{"prompt": "add: 7 + 7"}"#.into());
    rows.push(r#"{"prompt": "add: 8 + 8"}"#.into());
    rows.push(r#"{"prompt": "add: 1 + 1", "chosen": "2", "rejected": "3"}"#.into());
    std::fs::write(&data, rows.join("\n")).unwrap();
    let run = dir.path().join("run").display().to_string();
    let o = sgpo(&["sft", "--out", &run, "--data", data.to_str().unwrap(), "--preset", "tiny", "--steps", "1", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("not used by SFT: 2 prompts without an answer and 1 preference rows"), "{}", stderr(&o));
}

/// `--skip-nonfinite N` drops up to N non-finite steps, each said, then stops as without it;
/// the log holds only steps that were applied.
#[test]
fn skip_nonfinite_drops_that_many_bad_batches_then_stops() {
    let dir = common::TempDir::new();
    let run = dir.path().join("run").display().to_string();
    let o = sgpo(&["sft", "--out", &run, "--preset", "tiny", "--steps", "20", "--lr", "1e9", "--checkpoint-every", "1", "--skip-nonfinite", "3", "--device", "cpu"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    for k in 1..=3 {
        assert!(err.contains(&format!("batch skipped ({k} of --skip-nonfinite 3)")), "{err}");
    }
    assert!(!err.contains("(4 of"), "{err}");
    assert!(err.contains("is not finite, so the step was not applied"), "{err}");
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    assert!(!metrics.contains("null") && !metrics.is_empty(), "{metrics}");
}
