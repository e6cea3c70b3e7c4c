// One AdamW update of one parameter, elementwise, in one pass (the rule is src/train/adamw.rs'):
//   grad   = grad scale
//   scale  = max_norm / (norm + 1e-6) where norm = sqrt(report[1]) exceeds max_norm > 0, else 1
//   first  = beta1 first  + (1 - beta1) grad
//   second = beta2 second + (1 - beta2) grad^2
//   weight = weight keep - lr (first / bias1) / (sqrt(second / bias2) + eps)
// with keep = 1 - lr weight_decay (1 for vectors) and biasN = 1 - betaN^step. The plain burn
// composition of the same rule is about a dozen dispatches per parameter, each a full pass.
// New buffers take the results: the old weight may still be read elsewhere (a frozen copy).
// `report` is the step's [loss, squared sum of every gradient, ..] where the step left it, so
// the host need not read it first: when either is not finite, nothing changes.

@group(0) @binding(0) var<storage, read_write> weight: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> first: array<f32>;
@group(0) @binding(3) var<storage, read_write> second: array<f32>;
@group(0) @binding(4) var<storage, read_write> report: array<f32>;
@group(0) @binding(5) var<storage, read_write> weight_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> first_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> second_out: array<f32>;

struct Params {
    len: u32,
    groups_x: u32,
    beta1_bits: u32,
    beta2_bits: u32,
    lr_bits: u32,
    keep_bits: u32,
    bias1_bits: u32,
    bias2_bits: u32,
    eps_bits: u32,
    max_norm_bits: u32,
    _unused1: u32,
    _unused2: u32,
};
@group(0) @binding(8) var<uniform> params: Params;

// By the bits: WGSL lets a compiler assume floats are finite, so `x != x` may fold to false.
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * params.groups_x) * 256u + lid;
    if (i >= params.len) {
        return;
    }
    let loss = report[0];
    let squares = report[1];
    if (!(is_finite(loss) && is_finite(squares))) {
        weight_out[i] = weight[i];
        first_out[i] = first[i];
        second_out[i] = second[i];
        return;
    }
    let norm = sqrt(squares);
    let max_norm = bitcast<f32>(params.max_norm_bits);
    var scale = 1.0;
    if (max_norm > 0.0 && norm > max_norm) {
        scale = max_norm / (norm + 1e-6);
    }
    let beta1 = bitcast<f32>(params.beta1_bits);
    let beta2 = bitcast<f32>(params.beta2_bits);
    let g = grad[i] * scale;
    let m = beta1 * first[i] + (1.0 - beta1) * g;
    let v = beta2 * second[i] + (1.0 - beta2) * (g * g);
    first_out[i] = m;
    second_out[i] = v;
    let delta = (m / bitcast<f32>(params.bias1_bits)) / (sqrt(v / bitcast<f32>(params.bias2_bits)) + bitcast<f32>(params.eps_bits));
    weight_out[i] = weight[i] * bitcast<f32>(params.keep_bits) - delta * bitcast<f32>(params.lr_bits);
}
