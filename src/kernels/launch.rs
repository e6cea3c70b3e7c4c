//! Launching a WGSL file from `shaders/` on burn's wgpu backend: its source, the buffers in
//! binding order, and its small parameters as one uniform after them.

use burn::backend::DType;
use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::{KernelArguments, MetadataBindingInfo};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::Shape;

/// Invocations per workgroup of every kernel here (the WGSL files say the same).
pub const WORKGROUP: u32 = 256;

/// A WGSL source as burn's template kernels take it; `name` keys its compiled pipeline, so a
/// variant (the source with other `defines` filled into its `{{ placeholders }}`) needs its
/// own name.
#[derive(Clone, Copy)]
pub struct Wgsl {
    pub name: &'static str,
    pub source: &'static str,
    pub defines: &'static [(&'static str, &'static str)],
}

impl KernelSource for Wgsl {
    fn source(&self) -> SourceTemplate {
        self.defines.iter().fold(SourceTemplate::new(self.source), |t, (name, value)| t.register(*name, *value))
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.name).cube_dim(CubeDim::new_1d(WORKGROUP).into())
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// A contiguous, uninitialised tensor of `shape` and `dtype` (4-byte elements: f32 or i32) on
/// `like`'s device: a kernel's output, or a buffer of its own for a binding left unused.
pub fn empty(like: &CubeTensor, shape: Shape, dtype: DType) -> CubeTensor {
    let client = like.client.clone();
    let bytes = shape.num_elements() * 4;
    CubeTensor::new_contiguous(client.clone(), like.device.clone(), shape, client.empty(bytes), dtype)
}

/// `groups` workgroups as a 2-D grid (WebGPU allows 65535 per dimension): `(x, y)`.
pub fn grid(groups: u32) -> (u32, u32) {
    let x = groups.clamp(1, 65_535);
    (x, groups.div_ceil(x))
}

/// u32 parameters as the kernel's uniform, padded with zeros to a multiple of four (uniforms
/// are 16-byte aligned), packed two per u64 word, low half first.
fn params(p: &[u32]) -> MetadataBindingInfo {
    let mut p = p.to_vec();
    p.resize(p.len().div_ceil(4).max(1) * 4, 0);
    MetadataBindingInfo::custom(p.chunks(2).map(|w| w[0] as u64 | (w[1] as u64) << 32).collect())
}

/// Run `kernel` on a `(x, y)` grid of workgroups with `buffers` bound in order and `p` as the
/// uniform after them (the WGSL file's `Params` struct, field by field).
pub fn launch(kernel: Wgsl, grid: (u32, u32), buffers: &[&CubeTensor], p: &[u32]) {
    let client = buffers[0].client.clone();
    let bindings = buffers.iter().map(|t| t.handle.clone().binding()).collect();
    client.launch(
        Box::new(SourceKernel::new(kernel, CubeDim::new_1d(WORKGROUP))),
        CubeCount::Static(grid.0, grid.1, 1),
        KernelArguments::new().with_buffers(bindings).with_info(params(p)),
    );
}
