//! Our own WGSL kernels (`shaders/`) on burn's wgpu backend, natively and in the browser, each
//! behind a function that falls back to the plain burn composition on other backends (and
//! when switched off, to measure what a kernel buys).

mod inference;
mod launch;
mod sample;
mod token_logprobs;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;

pub use inference::{LINEAR_ROWS_MAX, RopeTable, cached_attention, linear, rms_norm, rope_into, swiglu};
pub use sample::sample_tokens;
pub use token_logprobs::token_logprobs;

static ENABLED: AtomicBool = AtomicBool::new(true);
static SOFTWARE_ADAPTER: AtomicBool = AtomicBool::new(false);

/// Use the WGSL kernels where they apply (the default), or the plain burn composition
/// everywhere (`sgpo bench --no-kernels`, and the tests that compare the two).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Say that the wgpu adapter is a software rasteriser (lavapipe, SwiftShader): kernels with a
/// variant or a limit for it take those (`device::select` says so when it picks one).
pub fn set_software_adapter(on: bool) {
    SOFTWARE_ADAPTER.store(on, Ordering::Relaxed);
}

fn software_adapter() -> bool {
    SOFTWARE_ADAPTER.load(Ordering::Relaxed)
}

/// Whether tensors on `device` go through our kernels: burn's wgpu backend (with or without
/// autodiff), kernels on. The CPU backend always takes the fallback.
pub fn applies(device: &Device) -> bool {
    ENABLED.load(Ordering::Relaxed) && crate::device::is_gpu(device)
}
