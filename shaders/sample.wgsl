// One token per row drawn from its logits, on the GPU, so a decode step reads back token ids
// (or nothing) instead of logits. The same definition as the host's `generate::sample_row`:
//   greedy: the largest logit (lowest id on ties);
//   else keep the tokens whose logit is >= the top-k threshold (the k-th largest logit) and
//   >= the top-p threshold (the largest t whose tokens >= t hold top_p of the kept mass), and
//   take the Gumbel-max draw: argmax of logit / T - ln(-ln(u)), u = draw(seed, row, token),
//   a counter-based hash, so each token's u needs no state. Thresholds are found by bisection
//   over the logits' order-preserving u32 keys (exact for top-k). One workgroup per row.

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> tokens: array<i32>;

struct Params {
    rows: u32,
    vocab: u32,
    groups_x: u32,
    seed_lo: u32,
    seed_hi: u32,
    inv_t_bits: u32,
    top_k: u32,
    top_p_bits: u32,
    greedy: u32,
    _unused0: u32,
    _unused1: u32,
    _unused2: u32,
};
@group(0) @binding(2) var<uniform> params: Params;

const WG: u32 = 256u;
var<workgroup> red_f: array<f32, 256>;
var<workgroup> red_u: array<u32, 256>;

fn mix32(x: u32) -> u32 {
    var h = x;
    h = h ^ (h >> 16u);
    h = h * 0x7feb352du;
    h = h ^ (h >> 15u);
    h = h * 0x846ca68bu;
    return h ^ (h >> 16u);
}

fn uniform_draw(row: u32, i: u32) -> f32 {
    var h = params.seed_lo ^ (row * 0x85ebca77u);
    h = mix32(h ^ (i * 0x9e3779b1u));
    h = mix32(h ^ params.seed_hi);
    return (f32(h >> 8u) + 0.5) / 16777216.0;
}

fn order_key(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    if ((b >> 31u) == 1u) {
        return ~b;
    }
    return b | 0x80000000u;
}

fn sum_f(lid: u32) -> f32 {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red_f[lid] = red_f[lid] + red_f[lid + s];
        }
        workgroupBarrier();
    }
    let total = red_f[0];
    workgroupBarrier();
    return total;
}

fn sum_u(lid: u32) -> u32 {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red_u[lid] = red_u[lid] + red_u[lid + s];
        }
        workgroupBarrier();
    }
    let total = red_u[0];
    workgroupBarrier();
    return total;
}

fn max_f(lid: u32) -> f32 {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red_f[lid] = max(red_f[lid], red_f[lid + s]);
        }
        workgroupBarrier();
    }
    let m = red_f[0];
    workgroupBarrier();
    return m;
}

// The (score, id) pair with the largest score, the lowest id among equal scores.
fn argmax(lid: u32, score: f32, id: u32) -> u32 {
    red_f[lid] = score;
    red_u[lid] = id;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            let a = red_f[lid];
            let b = red_f[lid + s];
            if (b > a || (b == a && red_u[lid + s] < red_u[lid])) {
                red_f[lid] = b;
                red_u[lid] = red_u[lid + s];
            }
        }
        workgroupBarrier();
    }
    return red_u[0];
}

// The midpoint that rounds up, without overflowing at lo = 0, hi = 0xffffffff.
fn upper_mid(lo: u32, hi: u32) -> u32 {
    return lo + (hi - lo) / 2u + ((hi - lo) & 1u);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * params.groups_x;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.vocab;
    let inv_t = bitcast<f32>(params.inv_t_bits);

    if (params.greedy != 0u) {
        var best = -3.4e38;
        var best_id = 0xffffffffu;
        for (var v = lid; v < params.vocab; v = v + WG) {
            let x = logits[base + v];
            if (x > best || best_id == 0xffffffffu) {
                best = x;
                best_id = v;
            }
        }
        let id = argmax(lid, best, best_id);
        if (lid == 0u) {
            tokens[row] = i32(id);
        }
        return;
    }

    var floor = 0u;
    if (params.top_k > 0u && params.top_k < params.vocab) {
        var lo = 0u;
        var hi = 0xffffffffu;
        for (var it = 0u; it < 32u; it = it + 1u) {
            let mid = upper_mid(lo, hi);
            var count = 0u;
            for (var v = lid; v < params.vocab; v = v + WG) {
                count = count + select(0u, 1u, order_key(logits[base + v]) >= mid);
            }
            red_u[lid] = count;
            let total = sum_u(lid);
            if (lo < hi) {
                if (total >= params.top_k) {
                    lo = mid;
                } else {
                    hi = mid - 1u;
                }
            }
        }
        floor = lo;
    }

    let top_p = bitcast<f32>(params.top_p_bits);
    if (top_p < 1.0) {
        var m = -3.4e38;
        for (var v = lid; v < params.vocab; v = v + WG) {
            m = max(m, logits[base + v]);
        }
        red_f[lid] = m;
        let row_max = max_f(lid);
        var mass = 0.0;
        for (var v = lid; v < params.vocab; v = v + WG) {
            let x = logits[base + v];
            if (order_key(x) >= floor) {
                mass = mass + exp((x - row_max) * inv_t);
            }
        }
        red_f[lid] = mass;
        let wanted = top_p * sum_f(lid);
        var lo = floor;
        var hi = 0xffffffffu;
        for (var it = 0u; it < 32u; it = it + 1u) {
            let mid = upper_mid(lo, hi);
            var part = 0.0;
            for (var v = lid; v < params.vocab; v = v + WG) {
                let x = logits[base + v];
                if (order_key(x) >= mid) {
                    part = part + exp((x - row_max) * inv_t);
                }
            }
            red_f[lid] = part;
            let above = sum_f(lid);
            if (lo < hi) {
                if (above >= wanted) {
                    lo = mid;
                } else {
                    hi = mid - 1u;
                }
            }
        }
        floor = lo;
    }

    var best = -3.4e38;
    var best_id = 0xffffffffu;
    for (var v = lid; v < params.vocab; v = v + WG) {
        let x = logits[base + v];
        if (order_key(x) >= floor) {
            let score = x * inv_t - log(-log(uniform_draw(row, v)));
            if (score > best || best_id == 0xffffffffu) {
                best = score;
                best_id = v;
            }
        }
    }
    let id = argmax(lid, best, best_id);
    if (lid == 0u) {
        tokens[row] = i32(id);
    }
}
