//! Our own WGSL kernels (`shaders/`) on burn's wgpu backend, natively and in the browser, each
//! behind a function that falls back to the plain burn composition on other backends (and
//! when switched off, to measure what a kernel buys). Some have a CPU twin (`host.rs`) for
//! burn's CPU backend, behind the same function and switch. Each is implemented on
//! `CubeBackend`; with `--features fusion` (burn's fusion, measured and not adopted: README,
//! performance) it becomes one opaque op in fusion's graph, the `#[fusion(..)]` line on each
//! method giving its outputs' shapes, which fusion needs before the kernel runs.

mod adamw;
mod attention_softmax;
mod decode_twins;
mod host;
mod inference;
mod launch;
mod matmul;
mod packed;
mod qkv;
mod rms_norm;
mod rope;
mod sample;
mod swiglu;
mod threads;
mod token_logprobs;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use burn::tensor::Device;

pub use adamw::{AdamWRule, adamw, squared_sum};
pub use attention_softmax::attention_softmax;
pub use inference::{LINEAR_ROWS_MAX, RopeTable, cached_attention, linear, linear_add, linear_decoding, norm_linear_swiglu, rope_into, tied_head, tied_head_decoding};
pub use packed::{PACKED_ROWS_MAX, PACKED_ROWS_MIN, PackedLayer, pack, packing_applies};
pub use qkv::{DecodeWeights, QkvWeights, norm_linear_qkv};
pub use matmul::{matmul, matmul2, matmul4};
pub use rms_norm::rms_norm;
pub use rope::rope;
pub use swiglu::swiglu;
pub use sample::sample_tokens;
pub use token_logprobs::token_logprobs;

/// Each kernel, by the name `sgpo bench --no-kernel` takes (its WGSL file's). A kernel's switch
/// also covers its CPU twins, `rope_into`'s the training path's rotation (`rope.rs`), and
/// `adamw`'s the gradients' squared sum for clipping (`squared_sum.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    TokenLogprobs,
    LinearRows,
    LinearSwiglu,
    LinearQkv,
    RmsNorm,
    Swiglu,
    RopeInto,
    CachedAttention,
    Sample,
    Adamw,
    AttentionSoftmax,
    Matmul,
}

impl Kernel {
    pub const ALL: [Kernel; 12] = [
        Self::TokenLogprobs,
        Self::LinearRows,
        Self::LinearSwiglu,
        Self::LinearQkv,
        Self::RmsNorm,
        Self::Swiglu,
        Self::RopeInto,
        Self::CachedAttention,
        Self::Sample,
        Self::Adamw,
        Self::AttentionSoftmax,
        Self::Matmul,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::TokenLogprobs => "token_logprobs",
            Self::LinearRows => "linear_rows",
            Self::LinearSwiglu => "linear_swiglu",
            Self::LinearQkv => "linear_qkv",
            Self::RmsNorm => "rms_norm",
            Self::Swiglu => "swiglu",
            Self::RopeInto => "rope_into",
            Self::CachedAttention => "cached_attention",
            Self::Sample => "sample",
            Self::Adamw => "adamw",
            Self::AttentionSoftmax => "attention_softmax",
            Self::Matmul => "matmul",
        }
    }
}

impl std::str::FromStr for Kernel {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
            format!("no kernel named {name:?} (kernels: {})", names.join(", "))
        })
    }
}

/// One bit per [`Kernel`], set when it is on.
static ENABLED: AtomicU32 = AtomicU32::new(u32::MAX);
static SOFTWARE_ADAPTER: AtomicBool = AtomicBool::new(false);

/// Use the WGSL kernels where they apply (the default), or the plain burn composition
/// everywhere (`sgpo bench --no-kernels`, and the tests that compare the two).
pub fn set_enabled(on: bool) {
    ENABLED.store(if on { u32::MAX } else { 0 }, Ordering::Relaxed);
}

/// Switch one kernel (`sgpo bench --no-kernel NAME`, to measure what it buys).
pub fn set_kernel_enabled(kernel: Kernel, on: bool) {
    let bit = 1 << kernel as u32;
    if on {
        ENABLED.fetch_or(bit, Ordering::Relaxed);
    } else {
        ENABLED.fetch_and(!bit, Ordering::Relaxed);
    }
}

/// Say that the wgpu adapter is a software rasteriser (lavapipe, SwiftShader): kernels with a
/// variant or a limit for it take those (`device::select` says so when it picks one).
pub fn set_software_adapter(on: bool) {
    SOFTWARE_ADAPTER.store(on, Ordering::Relaxed);
}

/// Whether [`set_software_adapter`] said so.
pub fn software_adapter() -> bool {
    SOFTWARE_ADAPTER.load(Ordering::Relaxed)
}

/// Whether `x` goes through the forward-only `kernel` (the decode path's): it applies on
/// `x`'s device, `x` is f32, and not under autodiff (those kernels have no backward; training
/// keeps the plain ops).
fn applies_forward<const D: usize>(kernel: Kernel, x: &burn::tensor::Tensor<D>) -> bool {
    applies(kernel, &x.device()) && !x.is_autodiff() && x.dtype() == burn::backend::DType::F32
}

/// Whether `x` goes through the forward-only `kernel` or its CPU twin (`host.rs`): as
/// [`applies_forward`], on burn's CPU backend too.
fn applies_forward_with_twin<const D: usize>(kernel: Kernel, x: &burn::tensor::Tensor<D>) -> bool {
    applies_with_twin(kernel, &x.device()) && !x.is_autodiff() && x.dtype() == burn::backend::DType::F32
}

/// Whether `x`, under autodiff, goes through `kernel` with its backward, on wgpu or as its CPU
/// twin: f32, the kernel on.
fn applies_with_gradient<const D: usize>(kernel: Kernel, x: &burn::tensor::Tensor<D>) -> bool {
    applies_with_twin(kernel, &x.device()) && x.is_autodiff() && x.dtype() == burn::backend::DType::F32
}

/// Whether tensors on `device` go through `kernel` or its CPU twin (`host.rs`): burn's wgpu
/// backend or its CPU backend, the kernel on. For the kernels that have a twin.
fn applies_with_twin(kernel: Kernel, device: &Device) -> bool {
    enabled(kernel) && (crate::device::is_gpu(device) || crate::device::is_cpu(device))
}

/// Whether `x` goes through `kernel`'s CPU twin (`host.rs`): on burn's CPU backend, f32, not
/// under autodiff, the kernel on.
fn applies_on_cpu<const D: usize>(kernel: Kernel, x: &burn::tensor::Tensor<D>) -> bool {
    enabled(kernel) && crate::device::is_cpu(&x.device()) && !x.is_autodiff() && x.dtype() == burn::backend::DType::F32
}

/// Whether tensors on `device` go through `kernel`: burn's wgpu backend (with or without
/// autodiff), the kernel on. Elsewhere the fallback, or a CPU twin where the kernel's function
/// says so.
pub fn applies(kernel: Kernel, device: &Device) -> bool {
    enabled(kernel) && crate::device::is_gpu(device)
}

fn enabled(kernel: Kernel) -> bool {
    ENABLED.load(Ordering::Relaxed) & (1 << kernel as u32) != 0
}
