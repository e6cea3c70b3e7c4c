// The backward of attention_softmax.wgsl for the scores (the bias is a constant mask):
// grad_scores = scale * probs * (grad_probs - sum_k(grad_probs * probs)), per row of keys.
// One invocation per row, as the forward; rows on a 2-D grid of workgroups. Every buffer is
// read_write: natively, tensors from one memory page may share a buffer.

@group(0) @binding(0) var<storage, read_write> probs: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad_probs: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_scores: array<f32>;

struct Params {
    rows: u32,
    keys: u32,
    scale_bits: u32,
    groups_x: u32,
};
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * params.groups_x) * 256u + lid;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.keys;
    var total = 0.0;
    for (var k = 0u; k < params.keys; k = k + 1u) {
        total = total + grad_probs[base + k] * probs[base + k];
    }
    let scale = bitcast<f32>(params.scale_bits);
    for (var k = 0u; k < params.keys; k = k + 1u) {
        grad_scores[base + k] = scale * probs[base + k] * (grad_probs[base + k] - total);
    }
}
