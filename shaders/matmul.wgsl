// A matrix product on many rows (the training and scoring forward and its backward): for each of
// `batches` matrices stored one after another in each buffer, c = op(a) op(b), op(a) [m, k],
// op(b) [k, n], c [m, n]; a is stored [m, k], or [k, m] when TRANS_A, and b [k, n], or [n, k]
// when TRANS_B, so the backward's products read the forward's operands transposed where they
// lie, without a copy. A workgroup computes a 64 x 64 tile of c, each of its 256 invocations a
// 4 x 4 block of that tile in registers, walking k in steps of 16 through one tile of op(a)
// and one of op(b) in workgroup memory (8 KiB: WebGPU guarantees 16). Grid: one workgroup per
// (matrix, tile row, tile column), numbered along x then y.

const TRANS_A: bool = {{ trans_a }};
const TRANS_B: bool = {{ trans_b }};
const TILE: u32 = 64u;
const DEPTH: u32 = 16u;

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

struct Params {
    batches: u32,
    m: u32,
    k: u32,
    n: u32,
    grid_x: u32,
    _unused0: u32,
    _unused1: u32,
    _unused2: u32,
};
@group(0) @binding(3) var<uniform> params: Params;

// [DEPTH][TILE / 4] vectors: a_tile[kk * 16 + i / 4][i % 4] = op(a)[row0 + i, k0 + kk], and
// b_tile[kk * 16 + j / 4][j % 4] = op(b)[k0 + kk, col0 + j]: one read of each gives an
// invocation its four rows (columns) at one kk.
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

fn a_at(base: u32, row: u32, kk: u32) -> f32 {
    if (row >= params.m || kk >= params.k) {
        return 0.0;
    }
    if (TRANS_A) {
        return a[base + kk * params.m + row];
    }
    return a[base + row * params.k + kk];
}

fn b_at(base: u32, kk: u32, col: u32) -> f32 {
    if (kk >= params.k || col >= params.n) {
        return 0.0;
    }
    if (TRANS_B) {
        return b[base + col * params.k + kk];
    }
    return b[base + kk * params.n + col];
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tiles_m = (params.m + TILE - 1u) / TILE;
    let tiles_n = (params.n + TILE - 1u) / TILE;
    let tile = wid.y * params.grid_x + wid.x;
    if (tile >= params.batches * tiles_m * tiles_n) {
        return;
    }
    let batch = tile / (tiles_m * tiles_n);
    let row0 = tile / tiles_n % tiles_m * TILE;
    let col0 = tile % tiles_n * TILE;
    let a_base = batch * params.m * params.k;
    let b_base = batch * params.k * params.n;
    // This invocation's block: rows row0 + 4 ty .. + 4, columns col0 + 4 tx .. + 4.
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < params.k; k0 = k0 + DEPTH) {
        // 1024 values of each tile, four per invocation; neighbouring invocations read
        // neighbouring addresses of the stored layout.
        for (var r = 0u; r < 4u; r = r + 1u) {
            let e = r * 256u + lid;
            var i = e / DEPTH;
            var kk = e % DEPTH;
            if (TRANS_A) {
                i = e % TILE;
                kk = e / TILE;
            }
            a_tile[kk * 16u + i / 4u][i % 4u] = a_at(a_base, row0 + i, k0 + kk);
            var j = e % TILE;
            var kb = e / TILE;
            if (TRANS_B) {
                j = e / DEPTH;
                kb = e % DEPTH;
            }
            b_tile[kb * 16u + j / 4u][j % 4u] = b_at(b_base, k0 + kb, col0 + j);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < DEPTH; kk = kk + 1u) {
            let av = a_tile[kk * 16u + ty];
            let bv = b_tile[kk * 16u + tx];
            acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
            acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
            acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
            acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
        }
        workgroupBarrier();
    }
    let c_base = batch * params.m * params.n;
    for (var r = 0u; r < 4u; r = r + 1u) {
        let row = row0 + ty * 4u + r;
        if (row < params.m) {
            for (var q = 0u; q < 4u; q = q + 1u) {
                let col = col0 + tx * 4u + q;
                if (col < params.n) {
                    c[c_base + row * params.n + col] = acc[r][q];
                }
            }
        }
    }
}
