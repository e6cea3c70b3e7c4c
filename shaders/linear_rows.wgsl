// A linear layer for a few rows (decode steps): out = x @ w (+ bias) (+ residual), x [rows, k],
// w [k, n], residual [rows, n] (the residual stream the projection adds to, so the add is no
// dispatch of its own)
// (burn's layout: inputs along the first dimension), w read once per ROWS rows. Each
// workgroup computes 8 output columns of up to ROWS rows: its 256 invocations are 32 slices of
// the k dimension x 8 columns (each reads 8 consecutive weights, a 32-byte sector, per k), and
// the slices' partial sums are added in workgroup memory. Few rows make this a matrix-vector
// product bound by memory latency, so the k dimension is spread over many invocations.
// ROWS (1, 4 or 16) is filled in by the template ({{ rows }}): one pipeline per variant, each
// with its accumulators in registers. Grid: x = column groups of 32, y = row groups of ROWS.

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

const COLS: u32 = {{ cols }}u;
const SLICES: u32 = 256u / COLS;
const ROWS: u32 = {{ rows }}u;
const CHUNKS: u32 = (ROWS + 7u) / 8u;
// The partial sums of 8 rows at a time: [row 0..8][slice][column].
var<workgroup> partial: array<f32, 2048>;

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
    for (var chunk = 0u; chunk < CHUNKS; chunk = chunk + 1u) {
        for (var r = 0u; r < 8u; r = r + 1u) {
            if (chunk * 8u + r < ROWS) {
                partial[(r * SLICES + slice) * COLS + c] = acc[chunk * 8u + r];
            }
        }
        workgroupBarrier();
        // Invocation (r, c) of the first 8 x COLS adds row r's slices for column c.
        let r = lid / COLS;
        let row = chunk * 8u + r;
        if (lid < 8u * COLS && col < params.n && row < rows) {
            var sum = 0.0;
            for (var s = 0u; s < SLICES; s = s + 1u) {
                sum = sum + partial[(r * SLICES + s) * COLS + c];
            }
            if (params.has_bias != 0u) {
                sum = sum + bias[col];
            }
            let at = (row0 + row) * params.n + col;
            if (params.has_residual != 0u) {
                sum = residual[at] + sum;
            }
            out[at] = sum;
        }
        workgroupBarrier();
    }
}
