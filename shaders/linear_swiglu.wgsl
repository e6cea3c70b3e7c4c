// The SwiGLU MLP's first half for a few rows (decode steps), in one dispatch instead of three:
// out = silu(x @ w_gate) * (x @ w_up), x [rows, k], w_gate and w_up [k, n]. The same work split
// as linear_rows.wgsl (COLS columns x SLICES k-slices per workgroup, ROWS rows per workgroup,
// filled in by the template), with two accumulators per row; each invocation that adds up a
// (row, column) does so for both products and applies the gate.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> w_gate: array<f32>;
@group(0) @binding(2) var<storage, read_write> w_up: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

struct Params {
    rows: u32,
    k: u32,
    n: u32,
    _unused: u32,
};
@group(0) @binding(4) var<uniform> params: Params;

const COLS: u32 = {{ cols }}u;
const SLICES: u32 = 256u / COLS;
const ROWS: u32 = {{ rows }}u;
const CHUNKS: u32 = (ROWS + 7u) / 8u;
var<workgroup> partial: array<f32, 2048>;

// The slices' sum for invocation `lid`'s (row, column) of this chunk, from `partial`.
fn slice_sum(lid: u32, c: u32) -> f32 {
    let r = lid / COLS;
    var sum = 0.0;
    for (var s = 0u; s < SLICES; s = s + 1u) {
        sum = sum + partial[(r * SLICES + s) * COLS + c];
    }
    return sum;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = lid % COLS;
    let slice = lid / COLS;
    let col = wid.x * COLS + c;
    let row0 = wid.y * ROWS;
    var gate: array<f32, ROWS>;
    var up: array<f32, ROWS>;
    for (var r = 0u; r < ROWS; r = r + 1u) {
        gate[r] = 0.0;
        up[r] = 0.0;
    }
    let rows = min(ROWS, params.rows - min(row0, params.rows));
    if (col < params.n) {
        for (var kk = slice; kk < params.k; kk = kk + SLICES) {
            let wg = w_gate[kk * params.n + col];
            let wu = w_up[kk * params.n + col];
            for (var r = 0u; r < ROWS; r = r + 1u) {
                if (r < rows) {
                    let xv = x[(row0 + r) * params.k + kk];
                    gate[r] = gate[r] + xv * wg;
                    up[r] = up[r] + xv * wu;
                }
            }
        }
    }
    let reducer = lid < 8u * COLS && col < params.n;
    for (var chunk = 0u; chunk < CHUNKS; chunk = chunk + 1u) {
        let row = chunk * 8u + lid / COLS;
        for (var r = 0u; r < 8u; r = r + 1u) {
            if (chunk * 8u + r < ROWS) {
                partial[(r * SLICES + slice) * COLS + c] = gate[chunk * 8u + r];
            }
        }
        workgroupBarrier();
        var g = 0.0;
        if (reducer && row < rows) {
            g = slice_sum(lid, c);
        }
        workgroupBarrier();
        for (var r = 0u; r < 8u; r = r + 1u) {
            if (chunk * 8u + r < ROWS) {
                partial[(r * SLICES + slice) * COLS + c] = up[chunk * 8u + r];
            }
        }
        workgroupBarrier();
        if (reducer && row < rows) {
            let u = slice_sum(lid, c);
            out[(row0 + row) * params.n + col] = g / (1.0 + exp(-g)) * u;
        }
        workgroupBarrier();
    }
}
