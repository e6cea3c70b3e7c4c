// RMSNorm's backward: with y = x r g and r = (mean(x^2) + eps)^-1/2,
// dx = r g dy - x r^3 (sum of g dy x) / width, and each row's share of the gains' gradient,
// dy x r, written to a [rows, width] buffer that the caller sums over its rows (burn's
// reduction: a column sum here would leave most of a GPU idle). Variants as rms_norm.wgsl's: a
// workgroup per row, or with LANE_PER_ROW an invocation per row (software adapters).
// Follows row_reduce.wgsl and row_rms.wgsl, which src/kernels prepends.

const LANE_PER_ROW: bool = {{ lane_per_row }};

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

// The sum of g dy x over the row at `base`'s elements first, first + stride, ...
fn along(base: u32, first: u32, stride: u32) -> f32 {
    var sum = 0.0;
    for (var i = first; i < params.width; i = i + stride) {
        sum = sum + x[base + i] * grad[base + i] * gamma[i];
    }
    return sum;
}

// The row's gradients at its elements first, first + stride, ..., from r and the whole row's
// sum of g dy x.
fn write_grads(base: u32, r: f32, along_row: f32, first: u32, stride: u32) {
    let c = r * r * r * along_row / f32(params.width);
    for (var i = first; i < params.width; i = i + stride) {
        let v = x[base + i];
        let dy = grad[base + i];
        dx[base + i] = r * gamma[i] * dy - v * c;
        dgamma_rows[base + i] = dy * v * r;
    }
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = wid.x + wid.y * params.groups_x;
    if (LANE_PER_ROW) {
        let row = group * WG + lid;
        if (row < params.rows) {
            let base = row * params.width;
            write_grads(base, 1.0 / lane_rms(base), along(base, 0u, 1u), 0u, 1u);
        }
    } else if (group < params.rows) {
        let base = group * params.width;
        let r = 1.0 / row_rms(base, lid);
        partial[lid] = along(base, lid, WG);
        workgroupBarrier();
        reduce_sum(lid);
        write_grads(base, r, partial[0], lid, WG);
    }
}
