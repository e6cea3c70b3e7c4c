// The SwiGLU MLP's first half for a few rows (decode steps), with the RMSNorm before it, in one
// dispatch instead of four: h = rms_norm(x), out = silu(h @ w_gate) * (h @ w_up), x [rows, k],
// w_gate and w_up [k, n]. The work split of few_rows.wgsl, with two accumulators per row; the
// norm folded in as there (the gain scales the weights as they are read, the sums of x^2 ride
// along, the products are scaled by 1 / rms at the end). Each invocation that adds up a (row,
// column) does so for both products and applies the gate.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> w_gate: array<f32>;
@group(0) @binding(3) var<storage, read_write> w_up: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

struct Params {
    rows: u32,
    k: u32,
    n: u32,
    eps_bits: u32,
};
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = lid % COLS;
    let slice = lid / COLS;
    let col = wid.x * COLS + c;
    let row0 = wid.y * ROWS;
    var gate: array<f32, ROWS>;
    var up: array<f32, ROWS>;
    var sq: array<f32, ROWS>;
    for (var r = 0u; r < ROWS; r = r + 1u) {
        gate[r] = 0.0;
        up[r] = 0.0;
        sq[r] = 0.0;
    }
    let rows = min(ROWS, params.rows - min(row0, params.rows));
    // Column 0 of every workgroup is in range, so the invocations that keep x^2 always run.
    if (col < params.n) {
        for (var kk = slice; kk < params.k; kk = kk + SLICES) {
            let g = gamma[kk];
            let wg = w_gate[kk * params.n + col] * g;
            let wu = w_up[kk * params.n + col] * g;
            for (var r = 0u; r < ROWS; r = r + 1u) {
                if (r < rows) {
                    let xv = x[(row0 + r) * params.k + kk];
                    gate[r] = gate[r] + xv * wg;
                    up[r] = up[r] + xv * wu;
                    sq[r] = sq[r] + xv * xv;
                }
            }
        }
    }
    for (var r = 0u; r < ROWS; r = r + 1u) {
        partial[(r * SLICES + slice) * COLS + c] = gate[r];
        if (c == 0u) {
            squares[r * SLICES + slice] = sq[r];
        }
    }
    workgroupBarrier();
    // Invocation (r, c) of the first ROWS x COLS adds up row r's slices for column c.
    let r = lid / COLS;
    let reducer = r < rows && col < params.n;
    var g = 0.0;
    if (reducer) {
        g = slice_sum(r, c);
    }
    workgroupBarrier();
    for (var r2 = 0u; r2 < ROWS; r2 = r2 + 1u) {
        partial[(r2 * SLICES + slice) * COLS + c] = up[r2];
    }
    workgroupBarrier();
    if (reducer) {
        let scale = inv_rms(r, params.k, params.eps_bits);
        let gated = g * scale;
        let u = slice_sum(r, c) * scale;
        out[(row0 + r) * params.n + col] = gated / (1.0 + exp(-gated)) * u;
    }
}
