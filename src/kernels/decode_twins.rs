//! The decode path's CPU twins (`DecodeOps` for burn's CPU backend, and the tied output head's
//! few-row product): the same maths as the WGSL kernels in `inference.rs`, as threaded Rust
//! loops over Flex's tensors (`host.rs`). A decode step there is bound by reading the weights.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};
use burn::tensor::TensorData;

use super::host::{add_bias_and_residual, dot, exp_in_place, exp_shifted, f32_values, owned_f32, rows_product, rows_product_transposed, values_mut};
use super::threads::{filled_rows, for_each_row};
use super::inference::DecodeOps;

/// The tied output head's few-row product, on the CPU backend only (on wgpu burn's product of
/// the table's transposed view is what runs: its output is wide enough to fill the GPU).
#[backend_extension(Flex)]
pub trait TiedHeadOps: Backend {
    fn rows_times_table(hidden: FloatTensor<Self>, table: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl TiedHeadOps for Flex {
    fn rows_times_table(hidden: FlexTensor, table: FlexTensor) -> FlexTensor {
        let [rows, d] = hidden.layout().shape().dims::<2>();
        let vocab = table.layout().shape().dims::<2>()[0];
        let out = rows_product_transposed(&f32_values(&hidden), &f32_values(&table), rows, d, vocab);
        FlexTensor::from_data(TensorData::new(out, [rows, vocab]))
    }
}

impl DecodeOps for Flex {
    fn linear_rows(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, has_bias: bool, residual: FlexTensor, has_residual: bool) -> FlexTensor {
        let [rows, k] = x.layout().shape().dims::<2>();
        let n = weight.layout().shape().dims::<2>()[1];
        let mut out = rows_product(&f32_values(&x), &f32_values(&weight), rows, k, n);
        let (bias, residual) = (has_bias.then(|| f32_values(&bias)), has_residual.then(|| f32_values(&residual)));
        add_bias_and_residual(&mut out, n, bias.as_deref(), residual.as_deref());
        FlexTensor::from_data(TensorData::new(out, [rows, n]))
    }

    fn rms_norm(x: FlexTensor, gamma: FlexTensor, eps: f32) -> FlexTensor {
        let shape = x.layout().shape().clone();
        let width = shape[shape.num_dims() - 1];
        let (x, gamma) = (f32_values(&x), f32_values(&gamma));
        let out = filled_rows(shape.num_elements() / width, width, |row, out| {
            let x = &x[row * width..(row + 1) * width];
            let inv_rms = 1.0 / (dot(x, x) / width as f32 + eps).sqrt();
            for ((o, &x), &g) in out.iter_mut().zip(x).zip(gamma.iter()) {
                *o = x * inv_rms * g;
            }
        });
        FlexTensor::from_data(TensorData::new(out, shape))
    }

    fn swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        let shape = gate.layout().shape().clone();
        let width = shape[shape.num_dims() - 1];
        let (gate, up) = (f32_values(&gate), f32_values(&up));
        let out = filled_rows(shape.num_elements() / width, width, |row, out| {
            let at = row * width..(row + 1) * width;
            let (gate, up) = (&gate[at.clone()], &up[at]);
            out.iter_mut().zip(gate).for_each(|(o, &g)| *o = -g);
            exp_in_place(out);
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + *o) * u;
            }
        });
        FlexTensor::from_data(TensorData::new(out, shape))
    }

    fn rope_into(dst: FlexTensor, src: FlexTensor, cos: FlexTensor, sin: FlexTensor, offset: usize, pos_start: usize, rotate: bool) -> FlexTensor {
        let mut dst = owned_f32(dst);
        let [_, heads, capacity, head_dim] = dst.layout().shape().dims::<4>();
        let len = src.layout().shape().dims::<3>()[1];
        let half = head_dim / 2;
        let (src, cos, sin) = (f32_values(&src), f32_values(&cos), f32_values(&sin));
        // One (batch row, head) of the cache per piece of work: its positions offset.. are written.
        for_each_row(values_mut(&mut dst), capacity * head_dim, |row, cache| {
            let (b, h) = (row / heads, row % heads);
            for t in 0..len {
                let x = &src[((b * len + t) * heads + h) * head_dim..][..head_dim];
                let out = &mut cache[(offset + t) * head_dim..][..head_dim];
                if !rotate {
                    out.copy_from_slice(x);
                    continue;
                }
                let at = (pos_start + t) * half;
                let (cos, sin) = (&cos[at..at + half], &sin[at..at + half]);
                for i in 0..half {
                    let (x1, x2) = (x[i], x[i + half]);
                    out[i] = x1 * cos[i] - x2 * sin[i];
                    out[i + half] = x2 * cos[i] + x1 * sin[i];
                }
            }
        });
        dst
    }

    fn cached_attention(q: FlexTensor, k: FlexTensor, v: FlexTensor, bias: FlexTensor, len_k: usize) -> FlexTensor {
        let [batch, heads, len_q, head_dim] = q.layout().shape().dims::<4>();
        let [_, kv_heads, capacity, _] = k.layout().shape().dims::<4>();
        let [bias_rows, _, _, bias_len] = bias.layout().shape().dims::<4>();
        let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
        let (q, k, v, bias) = (f32_values(&q), f32_values(&k), f32_values(&v), f32_values(&bias));
        // One output row per (batch row, query, head): its scores over the keys, their softmax,
        // and the values they weigh, without the repeated keys and values burn's ops need.
        let out = filled_rows(batch * len_q * heads, head_dim, |row, out| {
            let (b, query, h) = (row / (len_q * heads), row / heads % len_q, row % heads);
            let q = &q[((b * heads + h) * len_q + query) * head_dim..][..head_dim];
            let kv_at = (b * kv_heads + h / (heads / kv_heads)) * capacity * head_dim;
            let bias = &bias[(b.min(bias_rows - 1) * len_q + query) * bias_len..][..len_k];
            let key = |j: usize| kv_at + j * head_dim..kv_at + (j + 1) * head_dim;
            let mut weights: Vec<f32> = (0..len_k).map(|j| dot(q, &k[key(j)]) * scale + bias[j]).collect();
            let (_, sum) = exp_shifted(&mut weights);
            for (j, &w) in weights.iter().enumerate().filter(|(_, w)| **w != 0.0) {
                out.iter_mut().zip(&v[key(j)]).for_each(|(o, &v)| *o += w * v);
            }
            let inv = 1.0 / sum;
            out.iter_mut().for_each(|o| *o *= inv);
        });
        FlexTensor::from_data(TensorData::new(out, [batch, len_q, heads * head_dim]))
    }
}
