// Heads out of a projection, rotated (RoPE, half-rotation as Hugging Face's Llama) or not,
// written into a `[batch, heads, capacity, head_dim]` tensor at `offset` along its third
// dimension: the KV cache is written in place, without concatenation.
//   src:  [batch, len, heads * head_dim], the projection's output
//   cos, sin: [table_len, head_dim / 2], the rotation of every position
//   dst[b, h, offset + t, :] = rotate(src[b, t, h * head_dim ..], position pos_start + t)
// One invocation per (b, t, h, i < head_dim / 2) writes elements i and i + head_dim / 2.
// `rotate`: 0 copies the heads, 1 rotates them, 2 rotates them back.

@group(0) @binding(0) var<storage, read_write> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> cos_table: array<f32>;
@group(0) @binding(2) var<storage, read_write> sin_table: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

struct Params {
    batch: u32,
    len: u32,
    heads: u32,
    head_dim: u32,
    capacity: u32,
    offset: u32,
    pos_start: u32,
    rotate: u32,
    groups_x: u32,
    _unused0: u32,
    _unused1: u32,
    _unused2: u32,
};
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let half = params.head_dim / 2u;
    let id = (wid.x + wid.y * params.groups_x) * 256u + lid;
    if (id >= params.batch * params.len * params.heads * half) {
        return;
    }
    let i = id % half;
    let h = (id / half) % params.heads;
    let t = (id / (half * params.heads)) % params.len;
    let b = id / (half * params.heads * params.len);
    let src_at = (b * params.len + t) * params.heads * params.head_dim + h * params.head_dim;
    let x1 = src[src_at + i];
    let x2 = src[src_at + i + half];
    let dst_at = ((b * params.heads + h) * params.capacity + params.offset + t) * params.head_dim;
    if (params.rotate != 0u) {
        let row = (params.pos_start + t) * half + i;
        let c = cos_table[row];
        // rotate 2: by the negated angles, the rotation's transpose (training's backward).
        let s = select(sin_table[row], -sin_table[row], params.rotate == 2u);
        dst[dst_at + i] = x1 * c - x2 * s;
        dst[dst_at + i + half] = x2 * c + x1 * s;
    } else {
        dst[dst_at + i] = x1;
        dst[dst_at + i + half] = x2;
    }
}
