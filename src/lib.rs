//! sgpo: Self-Generated Preference Optimization (arXiv 2507.20181) on burn's wgpu backend.
//! The engine below knows nothing of terminals or pages: `src/bin/` and `src/web/` drive it,
//! and `native.rs` is its only door to the file system.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod generate;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod readback;
pub mod rng;
pub mod sgpo;
pub mod train;

pub use error::{Error, Result};

#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(target_arch = "wasm32")]
pub mod web;
