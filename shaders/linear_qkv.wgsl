// A decode step's attention inputs in one dispatch (instead of RMSNorm, three projections and
// three splits into heads with RoPE and the cache write): for x [rows, k], rows = batch * len,
//   y = rms_norm(x) @ [wq | wk | wv] (+ [bq | bk | bv])
// split into heads, the query and key heads rotated (RoPE at positions pos_start + t), then
//   q[b, h, t, :]                                    queries [batch, heads, len, head_dim]
//   k_cache[b, h, pos_start + t, :], v_cache[...]    [batch, kv_heads, capacity, head_dim]
// (the KV cache, written in place; its positions are the rotation's). w is the three weights side by side, [k (+ 1), n] with
// n = (heads + 2 kv_heads) * head_dim, the norm's gain already multiplied in and the biases as
// the last row when has_bias: a kernel may bind at most 8 storage buffers in WebGPU, too few for
// x, the gain, three weights, three biases, two tables and three destinations
// (src/kernels/inference.rs joins them once per KV cache). The norm is folded in:
// rms_norm(x) @ w = (x @ (gamma * w)) / rms(x), so each workgroup sums x^2 over the k its
// invocations read anyway and scales at the end.
// Work split as few_rows.wgsl says (ROWS rows per workgroup, COLS x SLICES invocations), but
// each column of an invocation is a rotation pair: elements i and i + head_dim / 2 of one head
// (each head's columns are contiguous in w, so a pair lies in one head of one of the three),
// so the invocation that adds up both can rotate and write them. Grid: x = pair groups of
// COLS, y = row groups of ROWS.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> cos_table: array<f32>;
@group(0) @binding(3) var<storage, read_write> sin_table: array<f32>;
@group(0) @binding(4) var<storage, read_write> q: array<f32>;
@group(0) @binding(5) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(6) var<storage, read_write> v_cache: array<f32>;

struct Params {
    rows: u32,
    k: u32,
    len: u32,
    head_dim: u32,
    heads: u32,
    kv_heads: u32,
    capacity: u32,
    pos_start: u32,
    has_bias: u32,
    eps_bits: u32,
    _unused0: u32,
    _unused1: u32,
};
@group(0) @binding(7) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = lid % COLS;
    let slice = lid / COLS;
    let half = params.head_dim / 2u;
    let n = (params.heads + 2u * params.kv_heads) * params.head_dim;
    let pair = wid.x * COLS + c;
    let pairs = n / 2u;
    // The head among all three's, and the pair's place in it.
    let head = pair / half;
    let i = pair % half;
    let col = head * params.head_dim + i;
    let row0 = wid.y * ROWS;
    let rows = min(ROWS, params.rows - min(row0, params.rows));
    var lower: array<f32, ROWS>;
    var upper: array<f32, ROWS>;
    var sq: array<f32, ROWS>;
    for (var r = 0u; r < ROWS; r = r + 1u) {
        lower[r] = 0.0;
        upper[r] = 0.0;
        sq[r] = 0.0;
    }
    for (var kk = slice; kk < params.k; kk = kk + SLICES) {
        // Past the last pair the weights read as 0: the x^2 sums still need every slice.
        var w1 = 0.0;
        var w2 = 0.0;
        if (pair < pairs) {
            w1 = w[kk * n + col];
            w2 = w[kk * n + col + half];
        }
        for (var r = 0u; r < ROWS; r = r + 1u) {
            if (r < rows) {
                let xv = x[(row0 + r) * params.k + kk];
                lower[r] = lower[r] + xv * w1;
                upper[r] = upper[r] + xv * w2;
                sq[r] = sq[r] + xv * xv;
            }
        }
    }
    for (var r = 0u; r < ROWS; r = r + 1u) {
        partial[(r * SLICES + slice) * COLS + c] = lower[r];
        if (c == 0u) {
            squares[r * SLICES + slice] = sq[r];
        }
    }
    workgroupBarrier();
    // Invocation (r, c) of the first ROWS x COLS adds up row r's slices for pair c.
    let r = lid / COLS;
    let reducer = r < rows && pair < pairs;
    var y1 = 0.0;
    if (reducer) {
        y1 = slice_sum(r, c);
    }
    workgroupBarrier();
    for (var r2 = 0u; r2 < ROWS; r2 = r2 + 1u) {
        partial[(r2 * SLICES + slice) * COLS + c] = upper[r2];
    }
    workgroupBarrier();
    if (reducer) {
        var y2 = slice_sum(r, c);
        let scale = inv_rms(r, params.k, params.eps_bits);
        y1 = y1 * scale;
        y2 = y2 * scale;
        if (params.has_bias != 0u) {
            y1 = y1 + w[params.k * n + col];
            y2 = y2 + w[params.k * n + col + half];
        }
        let row = row0 + r;
        let b = row / params.len;
        let t = row % params.len;
        let kv_end = params.heads + params.kv_heads;
        if (head < kv_end) {
            let angle = (params.pos_start + t) * half + i;
            let cs = cos_table[angle];
            let sn = sin_table[angle];
            let rotated = y1 * cs - y2 * sn;
            y2 = y2 * cs + y1 * sn;
            y1 = rotated;
        }
        if (head < params.heads) {
            let at = ((b * params.heads + head) * params.len + t) * params.head_dim + i;
            q[at] = y1;
            q[at + half] = y2;
        } else if (head < kv_end) {
            let at = ((b * params.kv_heads + head - params.heads) * params.capacity + params.pos_start + t) * params.head_dim + i;
            k_cache[at] = y1;
            k_cache[at + half] = y2;
        } else {
            let at = ((b * params.kv_heads + head - kv_end) * params.capacity + params.pos_start + t) * params.head_dim + i;
            v_cache[at] = y1;
            v_cache[at + half] = y2;
        }
    }
}
