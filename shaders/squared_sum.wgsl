// Clipping's squared gradient norm, added up on the device: each workgroup takes `chunk`
// consecutive values of x, adds up their squares and writes that to out[offset + its index],
// so one dispatch per gradient leaves its partial sums in one buffer for all gradients (burn's
// ops took a square, a sum and an add per gradient). With `square` 0 the values themselves are
// added: the last pass, one workgroup adding every partial sum in a fixed order.
// Follows row_reduce.wgsl, which src/kernels prepends.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

struct Params {
    len: u32,
    offset: u32,
    chunk: u32,
    groups_x: u32,
    square: u32,
    _unused0: u32,
    _unused1: u32,
    _unused2: u32,
};
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = wid.x + wid.y * params.groups_x;
    let start = group * params.chunk;
    if (start >= params.len) {
        return;
    }
    let end = min(start + params.chunk, params.len);
    var sum = 0.0;
    for (var i = start + lid; i < end; i = i + WG) {
        let v = x[i];
        sum = sum + select(v, v * v, params.square != 0u);
    }
    partial[lid] = sum;
    workgroupBarrier();
    reduce_sum(lid);
    if (lid == 0u) {
        out[params.offset + group] = partial[0];
    }
}
