//! Shared by the integration tests (each test crate uses a part of it).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sgpo::metrics::Event;

/// Every optimiser step's (stage, step, loss), in order: what two runs must agree on.
pub fn losses(events: &[Event]) -> Vec<(String, usize, f32)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Train(t) => Some((t.stage.clone(), t.step, t.loss)),
            Event::Dpo(d) => Some(("dpo".into(), d.step, d.loss)),
            _ => None,
        })
        .collect()
}

/// A fresh directory under the system temp dir, removed on drop. (Not the `tempfile` crate:
/// its dependencies would change the features of crates burn shares, and so rebuild burn
/// for tests separately from the CLI.)
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("sgpo-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
