// RMSNorm's backward, one workgroup per row: with y = x r g and r = (mean(x^2) + eps)^-1/2,
// dx = r g dy - x r^3 (sum of g dy x) / width, and each row's share of the gains' gradient,
// dy x r, written to a [rows, width] buffer that the caller sums over its rows (burn's
// reduction: a column sum here would leave most of a GPU idle).
// Follows row_reduce.wgsl and row_rms.wgsl, which src/kernels prepends.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgamma_rows: array<f32>;

struct Params {
    rows: u32,
    width: u32,
    groups_x: u32,
    eps_bits: u32,
};
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * params.groups_x;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.width;
    let r = 1.0 / row_rms(base, lid);
    var along = 0.0;
    for (var i = lid; i < params.width; i = i + WG) {
        along = along + x[base + i] * grad[base + i] * gamma[i];
    }
    partial[lid] = along;
    workgroupBarrier();
    reduce_sum(lid);
    let c = r * r * r * partial[0] / f32(params.width);
    for (var i = lid; i < params.width; i = i + WG) {
        let v = x[base + i];
        let dy = grad[base + i];
        dx[base + i] = r * gamma[i] * dy - v * c;
        dgamma_rows[base + i] = dy * v * r;
    }
}
