//! Our WGSL kernels (`shaders/`) against the plain burn composition each replaces, on burn's
//! wgpu backend (lavapipe on CI): values, and gradients where they train. The cases live in
//! `common/kernels.rs`, shared with the browser tests (`tests/web.rs`, WebGPU in Chromium).
#![cfg(not(target_arch = "wasm32"))] // native: wasm-pack builds every test target for wasm32

use burn::tensor::{Device, DeviceKind};

#[path = "common/kernels.rs"]
mod cases;

#[test]
fn kernels_match_the_burn_ops_they_replace() {
    sgpo::device::probe_wgpu().expect("no wgpu adapter: install a Vulkan driver (CI installs mesa-vulkan-drivers for lavapipe)");
    pollster::block_on(cases::all_match(&Device::wgpu(DeviceKind::DefaultDevice)));
}
