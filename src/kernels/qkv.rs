//! A decode step's queries, keys and values in one dispatch (`linear_qkv.wgsl`): the attention
//! norm, the three projections and their biases, the split into heads, RoPE and the write into
//! the preallocated KV cache, from the three weights joined once per cache ([`QkvWeights`]).
//! Where it does not apply (many rows, autodiff, the CPU backend, switched off) the same work
//! is the norm, then [`linear`](super::linear) and [`rope_into`] for each projection.

use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Backend, DType, Dispatch, backend_extension};
use burn::nn::{Linear, RmsNorm};
use burn::tensor::{Shape, Tensor};

use super::inference::{RopeTable, RowsVariants, few_rows_apply, linear_decoding, rope_into, rows_launch, rows_variants};
use super::packed::PackedLayer;
use super::launch::{Wgsl, empty, launch};
use super::{Kernel, rms_norm};

const LINEAR_QKV: RowsVariants = rows_variants!("linear_qkv", "linear_qkv.wgsl");

#[backend_extension(Cube, Fusion: cfg(feature = "fusion"))]
pub trait FusedQkv: Backend {
    /// Queries (a new tensor), keys and values (written into the caches): see
    /// `linear_qkv.wgsl`. `weight` is [`QkvWeights`]', with a bias row when it has one row more
    /// than `x` has columns. The caches come back as outputs (the same buffers): under burn's
    /// fusion the op consumes its inputs, and these are the live handles on what it wrote.
    #[fusion(meta = |k_cache, v_cache, x, _weight, _cos, _sin, at| (burn::backend::fusion::custom::TensorSpec::new(at.queries(&k_cache.shape, &x.shape), x.dtype), k_cache.clone(), v_cache.clone()))]
    fn linear_qkv(
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        at: QkvAt,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl FusedQkv for CubeBackend {
    fn linear_qkv(k_cache: CubeTensor, v_cache: CubeTensor, x: CubeTensor, weight: CubeTensor, cos: CubeTensor, sin: CubeTensor, at: QkvAt) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (k_cache, v_cache, x, weight) = (into_contiguous(k_cache), into_contiguous(v_cache), into_contiguous(x), into_contiguous(weight));
        let (cos, sin) = (into_contiguous(cos), into_contiguous(sin));
        let [batch, kv_heads, capacity, head_dim] = k_cache.meta.shape().dims::<4>();
        let [rows, k] = x.meta.shape().dims::<2>();
        let len = rows / batch;
        let q = empty(&x, at.queries(k_cache.meta.shape(), x.meta.shape()), DType::F32);
        let n = (at.heads + 2 * kv_heads) * head_dim;
        let (kernel, grid) = rows_launch(&LINEAR_QKV, rows, n / 2);
        let has_bias = weight.meta.shape().dims::<2>()[0] > k;
        let p = [rows, k, len, head_dim, at.heads, kv_heads, capacity, at.pos_start, has_bias as usize].map(|v| v as u32);
        launch(kernel, grid, &[&x, &weight, &cos, &sin, &q, &k_cache, &v_cache], &[&p[..], &[at.eps.to_bits()]].concat());
        (q, k_cache, v_cache)
    }
}

/// What `linear_qkv.wgsl` needs besides its buffers: the query heads, the position of the
/// first row (where the rotation starts and the keys and values go in their caches), and the
/// norm's epsilon.
#[derive(Debug, Clone, Copy)]
pub struct QkvAt {
    heads: usize,
    pos_start: usize,
    eps: f32,
}

impl QkvAt {
    /// The queries' shape, `[batch, heads, rows / batch, head_dim]`, for `x` `[rows, in]` and a
    /// cache `[batch, kv_heads, capacity, head_dim]`.
    fn queries(&self, cache: &Shape, x: &Shape) -> Shape {
        let [batch, _, _, head_dim] = cache.dims::<4>();
        Shape::new([batch, self.heads, x[0] / batch, head_dim])
    }
}

/// A layer's query, key and value weights side by side, `[in (+ 1), (heads + 2 kv_heads) *
/// head_dim]`, with the attention norm's gain multiplied in and the three biases (zeros for
/// one without) as the last row where any has one: what `linear_qkv.wgsl` reads, since WebGPU
/// lets a kernel bind too few buffers for the parts. Made by a decode's first step that takes
/// the kernel and kept with its KV cache (a decode's weights do not change); a copy of the
/// three weights for as long as the cache lives.
#[derive(Debug, Clone)]
pub struct QkvWeights(Tensor<2>);

impl QkvWeights {
    fn new(norm: &RmsNorm, layers: [&Linear; 3]) -> Self {
        let weights = layers.iter().map(|l| l.weight.val()).collect();
        let weight = Tensor::cat(weights, 1) * norm.gamma.val().unsqueeze_dim(1);
        if layers.iter().all(|l| l.bias.is_none()) {
            return Self(weight);
        }
        let biases = layers.iter().map(|l| match &l.bias {
            Some(bias) => bias.val(),
            None => Tensor::zeros([l.weight.dims()[1]], &weight.device()),
        });
        let bias = Tensor::cat(biases.collect(), 0).unsqueeze::<2>();
        Self(Tensor::cat(vec![weight, bias], 0))
    }
}

/// What a decode step derives from a layer's weights, once per KV cache: on wgpu the joined
/// q/k/v weight ([`QkvWeights`], made by the first step that takes it), on the CPU the packed
/// projections (`packed.rs`, made with the cache where they apply).
#[derive(Debug, Clone, Default)]
pub struct DecodeWeights {
    pub qkv: Option<QkvWeights>,
    pub packed: Option<PackedLayer>,
}

/// A decode step's queries `[batch, heads, len, head_dim]` (rotated), keys (rotated) and values
/// for `x` `[batch, len, in]` normed by `norm` through `wq`, `wk`, `wv`; the keys and values
/// written into `caches` `[batch, kv_heads, capacity, head_dim]` at `pos_start`, the cache's
/// length (in place on wgpu). One `linear_qkv.wgsl` dispatch on few rows (as
/// [`linear`](super::linear)), its weights joined into `derived` by the first step that takes
/// it; else [`rms_norm`], then [`linear`](super::linear) (from `derived`'s packed weights where
/// it has them: [`linear_decoding`]) and [`rope_into`] for each.
pub fn norm_linear_qkv(x: Tensor<3>, norm: &RmsNorm, [wq, wk, wv]: [&Linear; 3], caches: (Tensor<4>, Tensor<4>), derived: &mut DecodeWeights, rope: &RopeTable, pos_start: usize) -> [Tensor<4>; 3] {
    let [b, t, k] = x.dims();
    let (k_cache, v_cache) = caches;
    let [_, _, _, head_dim] = k_cache.dims();
    let heads = wq.weight.dims()[1] / head_dim;
    if few_rows_apply(Kernel::LinearQkv, &x, b * t) {
        let weights = derived.qkv.get_or_insert_with(|| QkvWeights::new(norm, [wq, wk, wv]));
        let at = QkvAt { heads, pos_start, eps: norm.epsilon as f32 };
        let (q, k_cache, v_cache) = <Dispatch as FusedQkv>::linear_qkv(
            k_cache.into_dispatch(),
            v_cache.into_dispatch(),
            x.reshape([b * t, k]).into_dispatch(),
            weights.0.clone().into_dispatch(),
            rope.cos.clone().into_dispatch(),
            rope.sin.clone().into_dispatch(),
            at,
        );
        return [q, k_cache, v_cache].map(Tensor::from_dispatch);
    }
    let q = Tensor::empty([b, heads, t, head_dim], &x.device());
    let h = rms_norm(x, norm);
    let packed = |p: fn(&PackedLayer) -> &Option<Tensor<3>>| derived.packed.as_ref().and_then(|layer| p(layer).as_ref());
    [
        rope_into(q, linear_decoding(h.clone(), wq, packed(|p| &p.q), None), rope, 0, pos_start, true),
        rope_into(k_cache, linear_decoding(h.clone(), wk, packed(|p| &p.k), None), rope, pos_start, pos_start, true),
        rope_into(v_cache, linear_decoding(h, wv, packed(|p| &p.v), None), rope, pos_start, pos_start, false),
    ]
}
