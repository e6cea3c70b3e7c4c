// The gradient of token_logprobs.wgsl: d logprobs[r] / d logits[r, v] = [v == targets[r]] -
// softmax(logits[r])[v], times the incoming gradient of row r. One invocation per logit, on a
// 2-D grid of 256-wide workgroups.

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_logits: array<f32>;

struct Params {
    total: u32,
    vocab: u32,
    groups_x: u32,
    _unused: u32,
};
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * params.groups_x * 256u;
    if (i >= params.total) {
        return;
    }
    let row = i / params.vocab;
    let v = i % params.vocab;
    let t = targets[row];
    var hit = 0.0;
    if (t >= 0 && u32(t) == v) {
        hit = 1.0;
    }
    grad_logits[i] = grad_out[row] * (hit - exp(logits[i] - lse[row]));
}
