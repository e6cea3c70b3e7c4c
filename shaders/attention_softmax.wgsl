// Attention's weights from its scores: probs = softmax(scores * scale + bias) over each row of
// keys, where bias is the causal and padding mask, [bias_batch, 1, queries, keys], shared by
// every head (and by every row of the batch when bias_batch is 1). Replaces burn's scale, bias
// add and softmax (max, subtract, exp, sum, divide): seven passes over [batch, heads, queries,
// keys]. One invocation per row (rows of keys are short, and a workgroup per row left most of
// it idle and was slower than burn's ops on lavapipe); rows on a 2-D grid of workgroups. Every
// buffer is read_write: natively, tensors from one memory page may share a buffer.

@group(0) @binding(0) var<storage, read_write> scores: array<f32>;
@group(0) @binding(1) var<storage, read_write> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;

struct Params {
    rows: u32,
    keys: u32,
    // queries per (batch row, head)
    queries: u32,
    // queries x heads: the rows of one batch row
    per_batch: u32,
    bias_batch: u32,
    scale_bits: u32,
    groups_x: u32,
    _unused: u32,
};
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * params.groups_x) * 256u + lid;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.keys;
    let batch_row = min(row / params.per_batch, params.bias_batch - 1u);
    let bias_base = (batch_row * params.queries + row % params.queries) * params.keys;
    let scale = bitcast<f32>(params.scale_bits);

    var row_max = -3.0e38;
    for (var k = 0u; k < params.keys; k = k + 1u) {
        row_max = max(row_max, scores[base + k] * scale + bias[bias_base + k]);
    }
    var sum = 0.0;
    for (var k = 0u; k < params.keys; k = k + 1u) {
        let e = exp(scores[base + k] * scale + bias[bias_base + k] - row_max);
        probs[base + k] = e;
        sum = sum + e;
    }
    let inv = 1.0 / sum;
    for (var k = 0u; k < params.keys; k = k + 1u) {
        probs[base + k] = probs[base + k] * inv;
    }
}
