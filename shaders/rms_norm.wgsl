// RMSNorm of each row, as burn's RmsNorm: out = x / sqrt(mean(x^2) + eps) * gamma.
// One workgroup per row (rows on a 2-D grid).
// Follows row_reduce.wgsl and row_rms.wgsl, which src/kernels prepends.

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

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * params.groups_x;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.width;
    let rms = row_rms(base, lid);
    for (var i = lid; i < params.width; i = i + WG) {
        out[base + i] = x[base + i] / rms * gamma[i];
    }
}
