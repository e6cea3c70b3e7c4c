// One AdamW update of one parameter, elementwise, in one pass (the rule is src/train/adamw.rs'):
//   grad   = grad grad_scale (global-norm clipping's factor, 1 within bounds)
//   first  = beta1 first  + (1 - beta1) grad
//   second = beta2 second + (1 - beta2) grad^2
//   weight = weight keep - lr (first / bias1) / (sqrt(second / bias2) + eps)
// with keep = 1 - lr weight_decay (1 for vectors) and biasN = 1 - betaN^step. The plain burn
// composition of the same rule is about a dozen dispatches per parameter, each a full pass.
// New buffers take the results: the old weight may still be read elsewhere (a frozen copy).

@group(0) @binding(0) var<storage, read_write> weight: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> first: array<f32>;
@group(0) @binding(3) var<storage, read_write> second: array<f32>;
@group(0) @binding(4) var<storage, read_write> weight_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> first_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> second_out: array<f32>;

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
    grad_scale_bits: u32,
    _unused1: u32,
    _unused2: u32,
};
@group(0) @binding(7) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * params.groups_x) * 256u + lid;
    if (i >= params.len) {
        return;
    }
    let beta1 = bitcast<f32>(params.beta1_bits);
    let beta2 = bitcast<f32>(params.beta2_bits);
    let g = grad[i] * bitcast<f32>(params.grad_scale_bits);
    let m = beta1 * first[i] + (1.0 - beta1) * g;
    let v = beta2 * second[i] + (1.0 - beta2) * (g * g);
    first_out[i] = m;
    second_out[i] = v;
    let delta = (m / bitcast<f32>(params.bias1_bits)) / (sqrt(v / bitcast<f32>(params.bias2_bits)) + bitcast<f32>(params.eps_bits));
    weight_out[i] = weight[i] * bitcast<f32>(params.keep_bits) - delta * bitcast<f32>(params.lr_bits);
}
