// The SwiGLU gate, elementwise: out = silu(gate) * up, silu(g) = g / (1 + exp(-g)).

@group(0) @binding(0) var<storage, read_write> gate: array<f32>;
@group(0) @binding(1) var<storage, read_write> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

struct Params {
    len: u32,
    groups_x: u32,
    _unused0: u32,
    _unused1: u32,
};
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * params.groups_x) * 256u + lid;
    if (i >= params.len) {
        return;
    }
    let g = gate[i];
    out[i] = g / (1.0 + exp(-g)) * up[i];
}
