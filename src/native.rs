//! The native edge: everything that touches the file system (run directories, checkpoints,
//! metrics logs, users' files). The engine itself never opens a file, so it runs in a browser.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::checkpoint::{CONFIG_FILE, Checkpoint, LATEST_FILE, crc32_hex};
use crate::config::{DataSource, PreferenceSource, RunConfig, SftConfig};
use crate::data::{Dataset, RunData, parse_jsonl_bytes, tasks};
use crate::error::{Error, Result};
use crate::metrics::Event;
use crate::model::{TextModel, gguf, hf};

/// A model to start from or to use: a run directory (its latest checkpoint) or a Hugging Face
/// model directory. Returns its config, the model, and the step it was saved at.
pub fn open_model(path: &Path, device: &Device) -> Result<(RunConfig, TextModel, usize)> {
    if Checkpoint::exists(path) {
        let checkpoint = Checkpoint::load(path)?;
        let (config, model) = checkpoint.open(&path.display().to_string(), device)?;
        return Ok((config, model, checkpoint.state.step));
    }
    if path.extension().is_some_and(|e| e == "gguf") {
        let bytes = fs::read(path).map_err(|e| Error::file(path.display(), e))?;
        let (config, model) = gguf::open(&path.display().to_string(), &bytes, device)?;
        return Ok((config, model, 0));
    }
    if path.join(hf::CONFIG).exists() {
        let (config, model) = hf::open(&path.display().to_string(), &mut files_in(path), device)?;
        return Ok((config, model, 0));
    }
    Err(Error::checkpoint(
        path.display(),
        "no checkpoint here (no `latest`) and no Hugging Face model (no config.json): give a run directory written by `sgpo sft`/`sgpo train`, a model directory, or a .gguf file",
    ))
}

/// A reader of the files in `dir` by name: `None` for one that is not there.
fn files_in(dir: &Path) -> impl FnMut(&str) -> Result<Option<Vec<u8>>> + '_ {
    move |file| {
        let p = dir.join(file);
        p.exists().then(|| fs::read(&p).map_err(|e| Error::file(p.display(), e))).transpose()
    }
}

/// Read and parse a JSONL data file.
pub fn load_jsonl(path: &Path) -> Result<Dataset> {
    let name = path.display().to_string();
    let bytes = fs::read(path).map_err(|e| Error::file(&name, e))?;
    parse_jsonl_bytes(&name, &bytes)
}

/// A run's data from its source, reading the file a file source names.
pub fn load_run_data(source: &DataSource, seed: u64) -> Result<RunData> {
    let file = match source {
        DataSource::File { path, .. } => Some(load_jsonl(Path::new(path))?),
        DataSource::Builtin { .. } => None,
    };
    RunData::assemble(source, file, seed)
}

/// A preference run's data: `--data` (split as a file source) or else the SFT run's own data,
/// plus every prompt in `--prompts` as unlabeled; at most `eval_examples` held out.
pub fn load_preference_data(source: &PreferenceSource, sft: &SftConfig, eval_examples: usize) -> Result<RunData> {
    let own = match &source.data {
        Some(path) => DataSource::file(path.clone(), crate::config::DEFAULT_EVAL_FRACTION),
        None => sft.data.clone(),
    };
    let mut data = load_run_data(&own, sft.seed)?;
    if let Some(path) = &source.prompts {
        data.add_prompts(load_jsonl(Path::new(path))?);
    }
    data.eval.truncate(eval_examples);
    Ok(data)
}

/// A file's CRC-32, as a run records its data file.
pub fn file_crc(path: &Path) -> Result<String> {
    let bytes = fs::read(path).map_err(|e| Error::file(path.display(), e))?;
    Ok(crc32_hex(&bytes))
}

/// For a data file recorded with its checksum: a notice when the file is not what the run
/// trained on (its held-out part may now hold training rows, and a resume is not exact).
pub fn data_changed(source: &DataSource) -> Result<Option<String>> {
    if let DataSource::Builtin { generator, .. } = source
        && *generator != tasks::GENERATOR_VERSION
    {
        return Ok(Some(format!(
            "the built-in tasks changed since the run recorded them (generator version {generator}, this build makes version {}): the examples loaded now are not the ones it trained on, its held-out part may hold prompts it trained on, and a resume is not exact",
            tasks::GENERATOR_VERSION
        )));
    }
    let DataSource::File { path, crc32: Some(recorded), .. } = source else { return Ok(None) };
    let now = file_crc(Path::new(path))?;
    Ok((&now != recorded).then(|| format!("{path} changed since the run recorded it (CRC-32 {recorded}, now {now}): its held-out part may now hold rows the run trained on")))
}

/// A JSON settings file, every error naming it.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let name = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|e| Error::file(&name, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(&name, e))
}

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
    /// Write into `run_dir/checkpoint-STEP` under a temporary name, rename it into place, and
    /// point `run_dir/latest` at it by a rename too, so a run killed at any instant leaves the
    /// previous checkpoint intact. The previous checkpoint is kept too (one bad save never
    /// leaves only bad weights); older ones are removed once the new one is in place.
    pub fn save(&self, run_dir: &Path) -> Result<PathBuf> {
        let previous = fs::read_to_string(run_dir.join(LATEST_FILE)).ok().map(|n| n.trim().to_string());
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
            if n.starts_with("checkpoint-") && n != name && Some(&n) != previous.as_ref() {
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
        Self::from_files(&dir.display().to_string(), files_in(&dir))
    }

    pub fn exists(run_dir: &Path) -> bool {
        run_dir.join(LATEST_FILE).exists()
    }
}

/// The run directory's lock (`run.lock`, holding the owner's process id), held while a
/// command writes the run: a second process on the same `--out` is refused instead of
/// corrupting it. A lock left by a process that no longer runs is taken over, with a notice.
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        fs::create_dir_all(run_dir).map_err(|e| Error::file(run_dir.display(), e))?;
        let path = run_dir.join("run.lock");
        for _ in 0..2 {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id()).map_err(|e| Error::file(path.display(), e))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = fs::read_to_string(&path).unwrap_or_default();
                    let pid: Option<u32> = owner.trim().parse().ok();
                    if pid.is_some_and(process_alive) {
                        return Err(Error::file(
                            run_dir.display(),
                            format!("another sgpo process (pid {}) is writing this run; wait for it to finish or stop it", owner.trim()),
                        ));
                    }
                    eprintln!("{}: taking over the lock of a process that no longer runs (pid {})", run_dir.display(), owner.trim());
                    fs::remove_file(&path).map_err(|e| Error::file(path.display(), e))?;
                }
                Err(e) => return Err(Error::file(path.display(), e)),
            }
        }
        Err(Error::file(path.display(), "could not take the lock"))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether a process with this id runs (on Linux, by /proc; elsewhere assumed alive).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") { Path::new(&format!("/proc/{pid}")).exists() } else { true }
}

/// An append-only JSONL log of events in a run directory (`metrics.jsonl`, `samples.jsonl`).
pub struct EventLog {
    path: PathBuf,
    /// Whole lines in the file.
    lines: usize,
}

impl EventLog {
    /// A new, empty log.
    pub fn create(path: &Path) -> Result<Self> {
        fs::write(path, "").map_err(|e| Error::file(path.display(), e))?;
        Ok(Self { path: path.to_path_buf(), lines: 0 })
    }

    /// The log of a resumed run, cut back to the `lines` it held when the checkpoint was
    /// written: what the interrupted run logged after that is logged again, exactly once.
    pub fn resume(path: &Path, lines: usize) -> Result<Self> {
        let text = if path.exists() { fs::read_to_string(path).map_err(|e| Error::file(path.display(), e))? } else { String::new() };
        let kept: String = text.split_inclusive('\n').filter(|l| l.ends_with('\n')).take(lines).collect();
        let lines = kept.lines().count();
        fs::write(path, kept).map_err(|e| Error::file(path.display(), e))?;
        Ok(Self { path: path.to_path_buf(), lines })
    }

    /// Lines written so far: what a checkpoint records to resume this log.
    pub fn lines(&self) -> usize {
        self.lines
    }

    pub fn file_name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()
    }

    pub fn write(&mut self, event: &Event) -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::file(self.path.display(), e))?;
        let line = serde_json::to_string(event).expect("events serialise");
        writeln!(f, "{line}").map_err(|e| Error::file(self.path.display(), e))?;
        self.lines += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run on the built-in tasks of another generator is named, as an edited data file is.
    #[test]
    fn built_in_tasks_of_another_generator_are_named() {
        assert_eq!(data_changed(&DataSource::builtin(5, 2)).unwrap(), None);
        let old: DataSource = serde_json::from_str(r#"{"kind": "builtin", "n_train": 5, "n_eval": 2}"#).unwrap();
        let notice = data_changed(&old).unwrap().expect("a notice");
        assert!(notice.contains("generator version 1") && notice.contains("a resume is not exact"), "{notice}");
    }
}
