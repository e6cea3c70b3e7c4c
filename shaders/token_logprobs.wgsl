// Log-probability of each row's target token, without materialising the log-softmax:
// logprobs[r] = logits[r, targets[r]] - logsumexp(logits[r, :]). One workgroup per row (rows on
// a 2-D grid, so more than 65535 fit); the row's log-sum-exp is kept for the backward pass.
// Every buffer is read_write: natively, tensors from one memory page may share a buffer.
// Follows row_reduce.wgsl (WG, partial, reduce_max, reduce_sum), which src/kernels prepends.

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> logprobs: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;

struct Params {
    rows: u32,
    vocab: u32,
    groups_x: u32,
    _unused: u32,
};
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // Uniform across the workgroup (workgroup id and uniform params), so returning before the
    // barriers is allowed.
    let row = wid.x + wid.y * params.groups_x;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.vocab;

    var m = -3.0e38;
    for (var v = lid; v < params.vocab; v = v + WG) {
        m = max(m, logits[base + v]);
    }
    partial[lid] = m;
    workgroupBarrier();
    reduce_max(lid);
    let row_max = partial[0];
    workgroupBarrier();

    var sum = 0.0;
    for (var v = lid; v < params.vocab; v = v + WG) {
        sum = sum + exp(logits[base + v] - row_max);
    }
    partial[lid] = sum;
    workgroupBarrier();
    reduce_sum(lid);

    if (lid == 0u) {
        let log_z = row_max + log(partial[0]);
        lse[row] = log_z;
        let t = targets[row];
        var lp = -3.0e38;
        if (t >= 0 && u32(t) < params.vocab) {
            lp = logits[base + u32(t)] - log_z;
        }
        logprobs[row] = lp;
    }
}
