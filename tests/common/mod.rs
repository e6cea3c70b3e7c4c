//! Shared by the integration tests (each test crate uses a part of it).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use sgpo::config::ModelConfig;
use sgpo::model::{Model, load_model, model_bytes};

pub mod resume;
#[allow(unused_imports)]
pub use resume::losses;

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

/// The logits of `model` for a fixed input, after a round trip through its serialised
/// weights onto the CPU: what two runs that "end with the same weights" must agree on.
pub fn probe_logits(model: &Model, config: &ModelConfig) -> Vec<f32> {
    let bytes = pollster::block_on(model_bytes(model)).unwrap();
    let m = load_model(config, &bytes, &Device::flex(), "probe").unwrap();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![3i32, 4, 5, 6], [1, 4]), &Device::flex());
    m.forward_causal(ids).into_data().iter::<f32>().collect()
}
