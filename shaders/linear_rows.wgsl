// A linear layer for a few rows (decode steps): out = x @ w (+ bias) (+ residual), x [rows, k],
// w [k, n] (burn's layout: inputs along the first dimension), residual [rows, n] (the residual
// stream the projection adds to, so the add is no dispatch of its own). The work split of
// few_rows.wgsl: w read once per ROWS rows; with COLS = 8 each invocation of a slice reads 8
// consecutive weights per k, a 32-byte sector (32 columns on software adapters, whose "GPU"
// threads are few and wide). Grid: x = column groups of COLS, y = row groups of ROWS.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> residual: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

struct Params {
    rows: u32,
    k: u32,
    n: u32,
    has_bias: u32,
    has_residual: u32,
    _unused0: u32,
    _unused1: u32,
    _unused2: u32,
};
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = lid % COLS;
    let slice = lid / COLS;
    let col = wid.x * COLS + c;
    let row0 = wid.y * ROWS;
    var acc: array<f32, ROWS>;
    for (var r = 0u; r < ROWS; r = r + 1u) {
        acc[r] = 0.0;
    }
    let rows = min(ROWS, params.rows - min(row0, params.rows));
    if (col < params.n) {
        for (var kk = slice; kk < params.k; kk = kk + SLICES) {
            let weight = w[kk * params.n + col];
            for (var r = 0u; r < ROWS; r = r + 1u) {
                if (r < rows) {
                    acc[r] = acc[r] + x[(row0 + r) * params.k + kk] * weight;
                }
            }
        }
    }
    for (var r = 0u; r < ROWS; r = r + 1u) {
        partial[(r * SLICES + slice) * COLS + c] = acc[r];
    }
    workgroupBarrier();
    // Invocation (r, c) of the first ROWS x COLS adds up row r's slices for column c.
    let r = lid / COLS;
    if (r < rows && col < params.n) {
        var sum = slice_sum(r, c);
        if (params.has_bias != 0u) {
            sum = sum + bias[col];
        }
        let at = (row0 + r) * params.n + col;
        if (params.has_residual != 0u) {
            sum = residual[at] + sum;
        }
        out[at] = sum;
    }
}
