// RMSNorm of each row, as burn's RmsNorm: out = x / sqrt(mean(x^2) + eps) * gamma.
// Two variants: a workgroup per row (GPUs), or with LANE_PER_ROW an invocation per row and 256
// rows per workgroup (software adapters: lavapipe and SwiftShader run a workgroup as batches of
// SIMD lanes on a CPU, where the reductions' barriers, each a switch between the batches, made
// a workgroup per row slower than burn's ops; README). Rows or groups of rows on a 2-D grid.
// Follows row_reduce.wgsl and row_rms.wgsl, which src/kernels prepends.

const LANE_PER_ROW: bool = {{ lane_per_row }};

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

struct Params {
    rows: u32,
    width: u32,
    groups_x: u32,
    eps_bits: u32,
};
@group(0) @binding(3) var<uniform> params: Params;

// The row at `base` normalised by `rms`, its elements first, first + stride, ...
fn normalise(base: u32, rms: f32, first: u32, stride: u32) {
    for (var i = first; i < params.width; i = i + stride) {
        out[base + i] = x[base + i] / rms * gamma[i];
    }
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = wid.x + wid.y * params.groups_x;
    if (LANE_PER_ROW) {
        let row = group * WG + lid;
        if (row < params.rows) {
            let base = row * params.width;
            normalise(base, lane_rms(base), 0u, 1u);
        }
    } else if (group < params.rows) {
        let base = group * params.width;
        normalise(base, row_rms(base, lid), lid, WG);
    }
}
