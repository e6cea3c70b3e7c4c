//! Attention's position machinery: rotary tables, the causal and padding biases, and the
//! KV cache a decode step writes into.

use burn::tensor::{Device, Tensor, TensorData};

use crate::kernels::{DecodeWeights, RopeTable};

/// Added to attention scores that must not be attended to. Finite, so a query with no
/// visible key (a left pad) gets a uniform, harmless distribution instead of NaN.
pub const MASKED: f32 = -1e9;

/// Keys and values of the positions seen so far, per layer, in tensors allocated once for
/// `capacity` positions, `[batch, kv_heads, capacity, head_dim]`, and written in place as
/// positions arrive (no concatenation per token); with the rotation table of every position.
/// A cache belongs to the model and the sequences of its first forward (it keeps that model's
/// joined q/k/v weights, or packed weights, too): a new generation takes a new cache.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(super) capacity: usize,
    pub(super) layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// What each layer's decode steps derive from its weights: on wgpu its attention inputs'
    /// weights joined for one dispatch, on the CPU for batches of 9 to 16 rows its projections
    /// packed (`kernels::pack`), as is the output head.
    pub(super) derived: Vec<DecodeWeights>,
    pub(super) packed_head: Option<Tensor<3>>,
    pub(super) rope: Option<RopeTable>,
    pub(super) len: usize,
}

impl KvCache {
    /// An empty cache for up to `capacity` positions (prompt and generated tokens together);
    /// its tensors are allocated by the first forward that uses it.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, layers: Vec::new(), derived: Vec::new(), packed_head: None, rope: None, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether its decode steps multiply from packed weights (`kernels::pack`).
    pub fn is_packed(&self) -> bool {
        self.packed_head.is_some() && self.derived.iter().all(|d| d.packed.is_some())
    }
}

/// cos and sin of the rotation angles of positions `0..len`: `[len, head_dim / 2]` each.
pub(super) fn rope_table(len: usize, head_dim: usize, theta: f64, device: &Device) -> RopeTable {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(len * half);
    let mut sin = Vec::with_capacity(len * half);
    for pos in 0..len {
        for i in 0..half {
            let inv_freq = theta.powf(-2.0 * i as f64 / head_dim as f64);
            let angle = pos as f64 * inv_freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let table = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [len, half]), device);
    RopeTable { cos: table(cos), sin: table(sin) }
}

pub(crate) fn rotate(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(
        vec![
            x1.clone() * cos.clone() - x2.clone() * sin.clone(),
            x2 * cos.clone() + x1 * sin.clone(),
        ],
        3,
    )
}

/// `[b, kv, t, d]` -> `[b, kv * rep, t, d]`, each kv head serving `rep` query heads.
pub(crate) fn repeat_kv(x: Tensor<4>, rep: usize) -> Tensor<4> {
    if rep == 1 {
        return x;
    }
    let [b, kv, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kv, rep, t, d]).reshape([b, kv * rep, t, d])
}

/// `[1, 1, t, t]`: 0 on and below the diagonal, [`MASKED`] above.
pub fn causal_bias(t: usize, device: &Device) -> Tensor<4> {
    let mut v = vec![0.0f32; t * t];
    for i in 0..t {
        for j in i + 1..t {
            v[i * t + j] = MASKED;
        }
    }
    Tensor::from_data(TensorData::new(v, [1, 1, t, t]), device)
}

/// Attention bias for `q_len` new queries over `key_valid.len()` keys per row, where the last
/// `q_len` keys are the new positions: a key is visible if valid and not in the future.
pub fn padded_bias(key_valid: &[Vec<bool>], q_len: usize, device: &Device) -> Tensor<4> {
    let b = key_valid.len();
    let k_len = key_valid[0].len();
    let offset = k_len - q_len;
    let mut v = vec![0.0f32; b * q_len * k_len];
    for (row, valid) in key_valid.iter().enumerate() {
        for i in 0..q_len {
            for (j, ok) in valid.iter().enumerate() {
                if !ok || j > offset + i {
                    v[(row * q_len + i) * k_len + j] = MASKED;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [b, 1, q_len, k_len]), device)
}

