// Attention of `len_q` queries over the first `len_k` positions of a KV cache, grouped-query
// heads resolved in place (no repeated K/V), softmax computed online over chunks of 256 keys
// (so any cache length fits in workgroup memory), written straight in the `[batch, len_q,
// heads * head_dim]` layout the output projection takes.
//   q:    [batch, heads, len_q, head_dim]
//   k, v: [batch, kv_heads, capacity, head_dim]
//   bias: [batch or 1, 1, len_q, bias_len >= len_k], added to the scaled scores (causal and
//         padding mask); keys past len_k are not read, so a decode step can pass one bias
//         for the whole cache
// One workgroup per (b, h, query); head_dim <= 256.

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

struct Params {
    batch: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    len_q: u32,
    len_k: u32,
    capacity: u32,
    bias_batched: u32,
    scale_bits: u32,
    groups_x: u32,
    bias_len: u32,
    _unused0: u32,
};
@group(0) @binding(5) var<uniform> params: Params;

const WG: u32 = 256u;
var<workgroup> query: array<f32, 256>;
var<workgroup> probs: array<f32, 256>;
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * params.groups_x;
    if (row >= params.batch * params.heads * params.len_q) {
        return;
    }
    let hd = params.head_dim;
    let qi = row % params.len_q;
    let h = (row / params.len_q) % params.heads;
    let b = row / (params.len_q * params.heads);
    let kvh = h / (params.heads / params.kv_heads);
    let kv_base = (b * params.kv_heads + kvh) * params.capacity * hd;
    var bias_row = qi * params.bias_len;
    if (params.bias_batched != 0u) {
        bias_row = (b * params.len_q + qi) * params.bias_len;
    }
    let scale = bitcast<f32>(params.scale_bits);

    if (lid < hd) {
        query[lid] = q[row * hd + lid];
    }
    workgroupBarrier();

    var m_run = -3.0e38;
    var l_run = 0.0;
    var acc = 0.0;
    for (var c0 = 0u; c0 < params.len_k; c0 = c0 + WG) {
        let j = c0 + lid;
        var s = -3.0e38;
        if (j < params.len_k) {
            var qk = 0.0;
            let key = kv_base + j * hd;
            for (var d = 0u; d < hd; d = d + 1u) {
                qk = qk + query[d] * k[key + d];
            }
            s = qk * scale + bias[bias_row + j];
        }
        partial[lid] = s;
        workgroupBarrier();
        for (var r = WG / 2u; r > 0u; r = r / 2u) {
            if (lid < r) {
                partial[lid] = max(partial[lid], partial[lid + r]);
            }
            workgroupBarrier();
        }
        let m_new = max(m_run, partial[0]);
        workgroupBarrier();
        var p = 0.0;
        if (j < params.len_k) {
            p = exp(s - m_new);
        }
        probs[lid] = p;
        partial[lid] = p;
        workgroupBarrier();
        for (var r = WG / 2u; r > 0u; r = r / 2u) {
            if (lid < r) {
                partial[lid] = partial[lid] + partial[lid + r];
            }
            workgroupBarrier();
        }
        let correction = exp(m_run - m_new);
        l_run = l_run * correction + partial[0];
        if (lid < hd) {
            acc = acc * correction;
            let n = min(WG, params.len_k - c0);
            for (var jj = 0u; jj < n; jj = jj + 1u) {
                acc = acc + probs[jj] * v[kv_base + (c0 + jj) * hd + lid];
            }
        }
        m_run = m_new;
        workgroupBarrier();
    }
    if (lid < hd) {
        out[((b * params.len_q + qi) * params.heads + h) * hd + lid] = acc / l_run;
    }
}
