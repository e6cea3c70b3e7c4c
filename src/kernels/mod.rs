//! Our own WGSL kernels (`shaders/`) on burn's wgpu backend, natively and in the browser, each
//! behind a function that falls back to the plain burn composition on other backends (and
//! when switched off, to measure what a kernel buys).

mod launch;
mod token_logprobs;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;

pub use token_logprobs::token_logprobs;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Use the WGSL kernels where they apply (the default), or the plain burn composition
/// everywhere (`sgpo bench --no-kernels`, and the tests that compare the two).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether tensors on `device` go through our kernels: burn's wgpu backend (with or without
/// autodiff), kernels on. The CPU backend always takes the fallback.
pub fn applies(device: &Device) -> bool {
    ENABLED.load(Ordering::Relaxed) && crate::device::is_gpu(device)
}
