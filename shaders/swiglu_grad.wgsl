// SwiGLU's backward, elementwise: with y = g s(g) u and s the sigmoid, d_up = dy g s(g) and
// d_gate = dy u s(g) (1 + g (1 - s(g))).

@group(0) @binding(0) var<storage, read_write> gate: array<f32>;
@group(0) @binding(1) var<storage, read_write> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> d_gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> d_up: array<f32>;

struct Params {
    len: u32,
    groups_x: u32,
    _unused0: u32,
    _unused1: u32,
};
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * params.groups_x) * 256u + lid;
    if (i >= params.len) {
        return;
    }
    let g = gate[i];
    let dy = grad[i];
    let s = 1.0 / (1.0 + exp(-g));
    d_up[i] = dy * g * s;
    d_gate[i] = dy * up[i] * s * (1.0 + g * (1.0 - s));
}
