//! The decode path's kernels, forward only (generation tracks no gradients): the MLP's first
//! half (RMSNorm, gate, up and SwiGLU in one), few-row projections with their residual add,
//! RoPE into the preallocated KV cache, and attention over the cache; the few-rows variants
//! that `qkv.rs` (the attention inputs in one dispatch) shares. Each replaces a chain of burn
//! ops, and so a chain of dispatches: on wgpu the host's cost of issuing a dispatch, not the
//! GPU, is what bounds a decode step (README, performance). Five have a CPU twin (`DecodeOps`
//! for Flex, in `decode_twins.rs`), as has the tied output head's few-row product.

use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Backend, DType, Dispatch, backend_extension};
use burn::backend::tensor::FloatTensor;
use burn::nn::{Linear, RmsNorm};
use burn::tensor::activation::softmax;
use burn::tensor::{Shape, Tensor};

use super::{Kernel, applies_forward, applies_forward_with_twin, applies_on_cpu, rms_norm, swiglu};
use super::decode_twins::TiedHeadOps;
use super::packed::{PackedLayer, packed_product};
use super::launch::{WORKGROUP, Wgsl, empty, grid, launch};
use crate::model::attention::{repeat_kv, rotate};

const SWIGLU: Wgsl = Wgsl { name: "swiglu", source: include_str!("../../shaders/swiglu.wgsl"), defines: &[] };
const ROPE_INTO: Wgsl = Wgsl { name: "rope_into", source: include_str!("../../shaders/rope_into.wgsl"), defines: &[] };
/// A few-rows kernel's variants, for GPUs and for software adapters: (rows per workgroup,
/// kernel), with columns x k-slices per workgroup 8 x 32 and 32 x 8. Each is its file after
/// `few_rows.wgsl`, the work split and reductions they share.
pub(super) type RowsVariants = [[(usize, Wgsl); 3]; 2];

macro_rules! rows_variants {
    ($name:literal, $file:literal) => {{
        const SOURCE: &str = concat!(include_str!("../../shaders/few_rows.wgsl"), include_str!(concat!("../../shaders/", $file)));
        [
            [
                (1, Wgsl { name: concat!($name, "_1_8"), source: SOURCE, defines: &[("rows", "1"), ("cols", "8")] }),
                (4, Wgsl { name: concat!($name, "_4_8"), source: SOURCE, defines: &[("rows", "4"), ("cols", "8")] }),
                (8, Wgsl { name: concat!($name, "_8_8"), source: SOURCE, defines: &[("rows", "8"), ("cols", "8")] }),
            ],
            [
                (1, Wgsl { name: concat!($name, "_1_32"), source: SOURCE, defines: &[("rows", "1"), ("cols", "32")] }),
                (4, Wgsl { name: concat!($name, "_4_32"), source: SOURCE, defines: &[("rows", "4"), ("cols", "32")] }),
                (8, Wgsl { name: concat!($name, "_8_32"), source: SOURCE, defines: &[("rows", "8"), ("cols", "32")] }),
            ],
        ]
    }};
}
pub(super) use rows_variants;

const LINEAR_ROWS: RowsVariants = rows_variants!("linear_rows", "linear_rows.wgsl");
const LINEAR_SWIGLU: RowsVariants = rows_variants!("linear_swiglu", "linear_swiglu.wgsl");

/// The variant for `rows` rows and `n` output columns, and its grid: the fewest rows per
/// workgroup that take all rows at once, else the most.
pub(super) fn rows_launch(variants: &RowsVariants, rows: usize, n: usize) -> (Wgsl, (u32, u32)) {
    let software = super::software_adapter();
    let variants = variants[software as usize];
    let [.., most] = variants;
    let (per_group, kernel) = variants.into_iter().find(|(r, _)| rows <= *r).unwrap_or(most);
    let cols = if software { 32 } else { 8 };
    (kernel, (n.div_ceil(cols) as u32, rows.div_ceil(per_group) as u32))
}

const CACHED_ATTENTION: Wgsl = Wgsl { name: "cached_attention", source: include_str!("../../shaders/cached_attention.wgsl"), defines: &[] };

/// Cosine and sine of every position's rotation angles, `[positions, head_dim / 2]` each.
#[derive(Debug, Clone)]
pub struct RopeTable {
    pub cos: Tensor<2>,
    pub sin: Tensor<2>,
}

/// Rows up to which a linear layer takes `linear_rows.wgsl` (decode steps) on a GPU; more rows
/// are a matrix product that burn's tiled matmul does well.
pub const LINEAR_ROWS_MAX: usize = 64;
/// The same on a software adapter, where burn's matmul is already faster at 8 rows (measured
/// with `sgpo bench --profile` on lavapipe).
const LINEAR_ROWS_MAX_SOFTWARE: usize = 4;
/// The same for the CPU twin, where burn's general product packs the weight first (measured
/// with `sgpo bench --profile --device cpu`: the twin is faster at 1 and 16 rows).
const LINEAR_ROWS_MAX_CPU: usize = 16;
/// Rows up to which the tied output head takes its CPU twin: one row's dot products with the
/// table are read-bound, sixteen rows' compute-bound, where burn's product is faster (measured
/// as above: SmolLM2's head at 1, 2, 4, 8 and 16 rows took 7.4, 9.0, 10.5, 13.8 and 25.8 ms,
/// burn's 12.1, 13.4, 13.4, 15.4 and 17.5 ms).
const TIED_HEAD_ROWS_MAX_CPU: usize = 8;

/// The MLP's first half in one decode kernel (the attention inputs' is `qkv.rs`'s `FusedQkv`),
/// wgpu only: on the CPU backend its fallback is made of the twins of [`DecodeOps`].
#[backend_extension(Cube, Fusion: cfg(feature = "fusion"))]
pub trait FusedDecodeOps: Backend {
    #[fusion(dtype = x, shape = Shape::new([x[0], w_gate[1]]))]
    fn linear_swiglu(x: FloatTensor<Self>, gamma: FloatTensor<Self>, w_gate: FloatTensor<Self>, w_up: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;
}

/// The decode kernels that have a CPU twin: on burn's CPU backend each replaces a chain of
/// single-threaded passes, hundreds of tiny matrix products per layer (attention), or a general
/// matrix product that packs the whole weight for a few rows (`linear_rows`).
#[backend_extension(Cube, Flex, Fusion: cfg(feature = "fusion"))]
pub trait DecodeOps: Backend {
    #[fusion(dtype = x, shape = Shape::new([x[0], weight[1]]))]
    fn linear_rows(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
        residual: FloatTensor<Self>,
        has_residual: bool,
    ) -> FloatTensor<Self>;
    #[fusion(dtype = x, shape = x)]
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;
    #[fusion(dtype = gate, shape = gate)]
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;
    #[fusion(dtype = dst, shape = dst)]
    fn rope_into(
        dst: FloatTensor<Self>,
        src: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        offset: usize,
        pos_start: usize,
        rotate: bool,
    ) -> FloatTensor<Self>;
    #[fusion(dtype = q, shape = Shape::new([q[0], q[2], q[1] * q[3]]))]
    fn cached_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        len_k: usize,
    ) -> FloatTensor<Self>;
}

impl FusedDecodeOps for CubeBackend {
    fn linear_swiglu(x: CubeTensor, gamma: CubeTensor, w_gate: CubeTensor, w_up: CubeTensor, eps: f32) -> CubeTensor {
        let (x, gamma) = (into_contiguous(x), into_contiguous(gamma));
        let (w_gate, w_up) = (into_contiguous(w_gate), into_contiguous(w_up));
        let [rows, k] = x.meta.shape().dims::<2>();
        let n = w_gate.meta.shape().dims::<2>()[1];
        let out = empty(&x, Shape::new([rows, n]), DType::F32);
        let (kernel, grid) = rows_launch(&LINEAR_SWIGLU, rows, n);
        launch(kernel, grid, &[&x, &gamma, &w_gate, &w_up, &out], &[rows as u32, k as u32, n as u32, eps.to_bits()]);
        out
    }

}

impl DecodeOps for CubeBackend {
    fn linear_rows(x: CubeTensor, weight: CubeTensor, bias: CubeTensor, has_bias: bool, residual: CubeTensor, has_residual: bool) -> CubeTensor {
        let (x, weight) = (into_contiguous(x), into_contiguous(weight));
        let (bias, residual) = (bound_or_own(bias, has_bias, &x), bound_or_own(residual, has_residual, &x));
        let [rows, k] = x.meta.shape().dims::<2>();
        let n = weight.meta.shape().dims::<2>()[1];
        let out = empty(&x, Shape::new([rows, n]), DType::F32);
        let (kernel, grid) = rows_launch(&LINEAR_ROWS, rows, n);
        let p = [rows as u32, k as u32, n as u32, has_bias as u32, has_residual as u32];
        launch(kernel, grid, &[&x, &weight, &bias, &residual, &out], &p);
        out
    }

    fn rms_norm(x: CubeTensor, gamma: CubeTensor, eps: f32) -> CubeTensor {
        super::rms_norm::launch_forward(x, gamma, eps)
    }

    fn swiglu(gate: CubeTensor, up: CubeTensor) -> CubeTensor {
        let (gate, up) = (into_contiguous(gate), into_contiguous(up));
        let shape = gate.meta.shape().clone();
        let len = shape.num_elements();
        let out = empty(&gate, shape, DType::F32);
        let g = grid((len as u32).div_ceil(WORKGROUP));
        launch(SWIGLU, g, &[&gate, &up, &out], &[len as u32, g.0]);
        out
    }

    fn rope_into(dst: CubeTensor, src: CubeTensor, cos: CubeTensor, sin: CubeTensor, offset: usize, pos_start: usize, rotate: bool) -> CubeTensor {
        let rotation = if rotate { Rotation::Forward } else { Rotation::None };
        launch_rope_into(dst, src, cos, sin, offset, pos_start, rotation)
    }

    fn cached_attention(q: CubeTensor, k: CubeTensor, v: CubeTensor, bias: CubeTensor, len_k: usize) -> CubeTensor {
        let (q, k, v, bias) = (into_contiguous(q), into_contiguous(k), into_contiguous(v), into_contiguous(bias));
        let [batch, heads, len_q, head_dim] = q.meta.shape().dims::<4>();
        let [_, kv_heads, capacity, _] = k.meta.shape().dims::<4>();
        let [bias_rows, _, _, bias_len] = bias.meta.shape().dims::<4>();
        let out = empty(&q, Shape::new([batch, len_q, heads * head_dim]), DType::F32);
        let g = grid((batch * heads * len_q) as u32);
        let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
        let p = [batch, heads, kv_heads, head_dim, len_q, len_k, capacity, (bias_rows > 1) as usize].map(|v| v as u32);
        launch(CACHED_ATTENTION, g, &[&q, &k, &v, &bias, &out], &[&p[..], &[scale.to_bits(), g.0, bias_len as u32]].concat());
        out
    }
}

/// How `rope_into.wgsl` writes the heads (its `rotate` parameter): as they are, rotated, or
/// rotated back (the rotation's transpose: its gradient).
#[derive(Debug, Clone, Copy)]
pub(super) enum Rotation {
    None = 0,
    Forward = 1,
    Back = 2,
}

/// `rope_into.wgsl`: the heads of `src` `[batch, len, heads * head_dim]` written into `dst`
/// `[batch, heads, capacity, head_dim]` from position `offset`, turned by `rotation` at
/// positions `pos_start..` of the `cos`/`sin` tables.
pub(super) fn launch_rope_into(dst: CubeTensor, src: CubeTensor, cos: CubeTensor, sin: CubeTensor, offset: usize, pos_start: usize, rotation: Rotation) -> CubeTensor {
    let (dst, src) = (into_contiguous(dst), into_contiguous(src));
    let (cos, sin) = (into_contiguous(cos), into_contiguous(sin));
    let [batch, heads, capacity, head_dim] = dst.meta.shape().dims::<4>();
    let len = src.meta.shape().dims::<3>()[1];
    let g = grid((batch * len * heads * head_dim / 2).div_ceil(WORKGROUP as usize) as u32);
    let p = [batch, len, heads, head_dim, capacity, offset, pos_start, rotation as usize].map(|v| v as u32);
    launch(ROPE_INTO, g, &[&src, &cos, &sin, &dst], &[&p[..], &[g.0]].concat());
    dst
}

/// What a kernel binds for an optional input: the tensor when `present`, else a buffer of its
/// own beside `like` (WebGPU rejects one buffer bound twice where either binding is writable,
/// so the placeholder the caller passed cannot be bound).
fn bound_or_own(input: CubeTensor, present: bool, like: &CubeTensor) -> CubeTensor {
    if present { into_contiguous(input) } else { empty(like, Shape::new([1]), DType::F32) }
}

/// An optional input as the extension ops take it: the tensor and `true`, or `placeholder` and
/// `false` (the kernel then binds a buffer of its own, [`bound_or_own`]).
pub(super) fn optional_input<const D: usize, const P: usize>(input: Option<Tensor<D>>, placeholder: &Tensor<P>) -> (FloatTensor<Dispatch>, bool) {
    match input {
        Some(t) => (t.into_dispatch(), true),
        None => (placeholder.clone().into_dispatch(), false),
    }
}

/// Whether a few-rows kernel (`linear_rows`, `linear_swiglu`, `linear_qkv`) takes `rows` rows
/// of `x` on wgpu.
pub(super) fn few_rows_apply(kernel: Kernel, x: &Tensor<3>, rows: usize) -> bool {
    let max_rows = if super::software_adapter() { LINEAR_ROWS_MAX_SOFTWARE } else { LINEAR_ROWS_MAX };
    applies_forward(kernel, x) && rows <= max_rows
}

/// Whether `linear_rows` takes `rows` rows of `x`: [`few_rows_apply`] on wgpu, its CPU twin up
/// to [`LINEAR_ROWS_MAX_CPU`] rows.
fn linear_rows_apply(x: &Tensor<3>, rows: usize) -> bool {
    few_rows_apply(Kernel::LinearRows, x, rows) || (applies_on_cpu(Kernel::LinearRows, x) && rows <= LINEAR_ROWS_MAX_CPU)
}

/// `layer` applied to `x` `[batch, len, in]`: by `linear_rows.wgsl` when `batch * len` is at
/// most [`LINEAR_ROWS_MAX`] (burn's matmul spends far longer on so few rows), else by the tiled
/// product ([`super::matmul`]: on wgpu, with its backward) or burn's.
pub fn linear(x: Tensor<3>, layer: &Linear) -> Tensor<3> {
    projection(x, layer, None)
}

/// The tied output head: `hidden` `[rows, d]` times the transpose of the embedding `table`
/// `[vocab, d]`. On the CPU backend, up to [`TIED_HEAD_ROWS_MAX_CPU`] rows (a decode step), each
/// of the table's rows read once (`linear_rows`' switch); on wgpu above [`LINEAR_ROWS_MAX`] rows
/// (training, scoring) the tiled product ([`super::matmul2`]); else burn's product.
pub fn tied_head(hidden: Tensor<2>, table: Tensor<2>) -> Tensor<2> {
    tied_head_decoding(hidden, table, None)
}

/// [`tied_head`] in a decode step: from `packed`, the table packed once per KV cache
/// (`packed.rs`), where given.
pub fn tied_head_decoding(hidden: Tensor<2>, table: Tensor<2>, packed: Option<&Tensor<3>>) -> Tensor<2> {
    if let Some(logits) = packed_product(&hidden, packed, None, None) {
        return logits;
    }
    let rows = hidden.dims()[0];
    if applies_on_cpu(Kernel::LinearRows, &hidden) && rows <= TIED_HEAD_ROWS_MAX_CPU {
        return Tensor::from_dispatch(<Dispatch as TiedHeadOps>::rows_times_table(hidden.into_dispatch(), table.into_dispatch()));
    }
    if rows <= LINEAR_ROWS_MAX {
        // A decode step's: burn's product, as measured on the H100 (README).
        return hidden.matmul(table.transpose());
    }
    super::matmul2(hidden, table, true)
}

/// `residual + layer(x)`, the add done in `linear_rows.wgsl`'s epilogue where that kernel
/// applies (in a decode step each burn op costs the host more than the GPU its work).
pub fn linear_add(x: Tensor<3>, layer: &Linear, residual: Tensor<3>) -> Tensor<3> {
    projection(x, layer, Some(residual))
}

/// [`linear`], or [`linear_add`] with a `residual`, in a decode step: from `packed`, the layer's
/// weight packed once per KV cache (`packed.rs`: the CPU backend, 9 to 16 rows), where given.
pub fn linear_decoding(x: Tensor<3>, layer: &Linear, packed: Option<&Tensor<3>>, residual: Option<Tensor<3>>) -> Tensor<3> {
    if packed.is_none() {
        return projection(x, layer, residual);
    }
    let [b, t, k] = x.dims();
    let n = layer.weight.dims()[1];
    let bias = layer.bias.as_ref().map(|b| b.val());
    let rows = x.clone().reshape([b * t, k]);
    match packed_product(&rows, packed, bias, residual.clone().map(|r| r.reshape([b * t, n]))) {
        Some(y) => y.reshape([b, t, n]),
        None => projection(x, layer, residual),
    }
}

fn projection(x: Tensor<3>, layer: &Linear, residual: Option<Tensor<3>>) -> Tensor<3> {
    let [b, t, k] = x.dims();
    let weight = layer.weight.val();
    let n = weight.dims()[1];
    if linear_rows_apply(&x, b * t) {
        let (bias, has_bias) = optional_input(layer.bias.as_ref().map(|b| b.val()), &weight);
        let (residual, has_residual) = optional_input(residual.map(|r| r.reshape([b * t, n])), &weight);
        let x = x.reshape([b * t, k]).into_dispatch();
        let out = <Dispatch as DecodeOps>::linear_rows(x, weight.into_dispatch(), bias, has_bias, residual, has_residual);
        return Tensor::<2>::from_dispatch(out).reshape([b, t, n]);
    }
    let y = super::matmul(x.reshape([1, b * t, k]), weight.unsqueeze(), false).reshape([b, t, n]);
    let y = match &layer.bias {
        Some(bias) => y + bias.val().unsqueeze(),
        None => y,
    };
    match residual {
        Some(r) => r + y,
        None => y,
    }
}

/// `silu(gate(h)) * up(h)` with `h = norm(x)`, the SwiGLU MLP's first half: one
/// `linear_swiglu.wgsl` dispatch on few rows (as [`linear`]), else [`rms_norm`], the two
/// projections (from their `packed` weights where given: [`linear_decoding`]) and [`swiglu`].
pub fn norm_linear_swiglu(x: Tensor<3>, norm: &RmsNorm, gate: &Linear, up: &Linear, packed: Option<&PackedLayer>) -> Tensor<3> {
    let [b, t, k] = x.dims();
    let no_bias = gate.bias.is_none() && up.bias.is_none();
    if few_rows_apply(Kernel::LinearSwiglu, &x, b * t) && no_bias {
        let (w_gate, w_up) = (gate.weight.val(), up.weight.val());
        let n = w_gate.dims()[1];
        let x = x.reshape([b * t, k]).into_dispatch();
        let gamma = norm.gamma.val().into_dispatch();
        let out = <Dispatch as FusedDecodeOps>::linear_swiglu(x, gamma, w_gate.into_dispatch(), w_up.into_dispatch(), norm.epsilon as f32);
        return Tensor::<2>::from_dispatch(out).reshape([b, t, n]);
    }
    let h = rms_norm(x, norm);
    let [gate_packed, up_packed] = [packed.and_then(|p| p.gate.as_ref()), packed.and_then(|p| p.up.as_ref())];
    swiglu(linear_decoding(h.clone(), gate, gate_packed, None), linear_decoding(h, up, up_packed, None))
}

/// `src` `[batch, len, heads * head_dim]` split into heads, rotated for positions
/// `pos_start..pos_start + len` when `rotate`, and written into `dst` `[batch, heads, capacity,
/// head_dim]` at `offset..offset + len` along its third dimension (in place on wgpu).
pub fn rope_into(dst: Tensor<4>, src: Tensor<3>, rope: &RopeTable, offset: usize, pos_start: usize, rotate_heads: bool) -> Tensor<4> {
    if applies_forward_with_twin(Kernel::RopeInto, &src) {
        let out = <Dispatch as DecodeOps>::rope_into(
            dst.into_dispatch(),
            src.into_dispatch(),
            rope.cos.clone().into_dispatch(),
            rope.sin.clone().into_dispatch(),
            offset,
            pos_start,
            rotate_heads,
        );
        return Tensor::from_dispatch(out);
    }
    let [b, heads, capacity, hd] = dst.dims();
    let len = src.dims()[1];
    let mut x = src.reshape([b, len, heads, hd]).swap_dims(1, 2);
    if rotate_heads {
        let table = |t: &Tensor<2>| t.clone().narrow(0, pos_start, len).reshape([1, 1, len, hd / 2]);
        x = rotate(x, &table(&rope.cos), &table(&rope.sin));
    }
    if offset == 0 && len == capacity {
        return x;
    }
    dst.slice_assign([0..b, 0..heads, offset..offset + len, 0..hd], x)
}

/// Attention of `q` `[batch, heads, len_q, head_dim]` over the first `len_k` positions of the
/// cache `k`, `v` `[batch, kv_heads, capacity, head_dim]`, with `bias` `[batch or 1, 1, len_q,
/// >= len_k]` added to the scaled scores (its keys past `len_k` unread): `[batch, len_q, heads
/// * head_dim]`.
pub fn cached_attention(q: Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, bias: &Tensor<4>, len_k: usize) -> Tensor<3> {
    if applies_forward_with_twin(Kernel::CachedAttention, &q) {
        let out = <Dispatch as DecodeOps>::cached_attention(
            q.into_dispatch(),
            k.clone().into_dispatch(),
            v.clone().into_dispatch(),
            bias.clone().into_dispatch(),
            len_k,
        );
        return Tensor::from_dispatch(out);
    }
    let [b, heads, len_q, hd] = q.dims();
    let rep = heads / k.dims()[1];
    let k = repeat_kv(k.clone().narrow(2, 0, len_k), rep);
    let v = repeat_kv(v.clone().narrow(2, 0, len_k), rep);
    let bias = bias.clone().narrow(3, 0, len_k);
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (hd as f64).sqrt()) + bias;
    softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, len_q, heads * hd])
}
