// Shared by the few-rows kernels (linear_rows, linear_swiglu, linear_qkv: decode steps'
// projections), put before each one's text by src/kernels/inference.rs. A workgroup's 256
// invocations are COLS output columns x SLICES slices of the k dimension, for ROWS rows (at
// most 8: one pass through `partial`); the template fills in {{ cols }} and {{ rows }}, one
// pipeline per variant. Few rows make a projection a matrix-vector product bound by memory
// latency, so k is spread over many invocations and their partial sums added up here.

const COLS: u32 = {{ cols }}u;
const SLICES: u32 = 256u / COLS;
const ROWS: u32 = {{ rows }}u;
// Partial sums, [row][slice][column].
var<workgroup> partial: array<f32, 2048>;
// Partial sums of x^2 for a folded RMSNorm, [row][slice] (every invocation of a slice reads
// the same x).
var<workgroup> squares: array<f32, 256>;

// Row r's sum over the slices for column c, from `partial`.
fn slice_sum(r: u32, c: u32) -> f32 {
    var sum = 0.0;
    for (var s = 0u; s < SLICES; s = s + 1u) {
        sum = sum + partial[(r * SLICES + s) * COLS + c];
    }
    return sum;
}

// 1 / rms of row r (k values), from `squares`: RMSNorm folded into a projection is
// rms_norm(x) @ w = (x @ (gamma * w)) * inv_rms(x).
fn inv_rms(r: u32, k: u32, eps_bits: u32) -> f32 {
    var ss = 0.0;
    for (var s = 0u; s < SLICES; s = s + 1u) {
        ss = ss + squares[r * SLICES + s];
    }
    return 1.0 / sqrt(ss / f32(k) + bitcast<f32>(eps_bits));
}
