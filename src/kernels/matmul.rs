//! Matrix products on many rows, `shaders/matmul.wgsl`: the projections, attention's two
//! products and the tied output head of the training and scoring forward, and under autodiff
//! the two backward products of each, which read the forward's operands transposed where they
//! lie. burn-wgpu without autotune takes one fixed routine for every product (README: on a GPU
//! without cooperative matrices for f32, its simplest); this is a register-tiled one of our
//! own. Hardware adapters only: on lavapipe it takes three times burn's time; on the CPU
//! burn's packed product runs (decode steps' few rows have their own kernels).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Autodiff, Backend, DType, Dispatch, backend_extension};
use burn::tensor::{Shape, Tensor};

use super::launch::{Wgsl, empty, grid, launch};
use super::{Kernel, applies};

/// The product's variants by which operand is read transposed: as stored (the forward), `b`
/// (the tied head; a gradient of `a`) or `a` (a gradient of `b`). No product here reads both.
fn variant(transpose_a: bool, transpose_b: bool) -> Wgsl {
    const SOURCE: &str = include_str!("../../shaders/matmul.wgsl");
    match (transpose_a, transpose_b) {
        (false, false) => Wgsl { name: "matmul_nn", source: SOURCE, defines: &[("trans_a", "false"), ("trans_b", "false")] },
        (false, true) => Wgsl { name: "matmul_nt", source: SOURCE, defines: &[("trans_a", "false"), ("trans_b", "true")] },
        (true, false) => Wgsl { name: "matmul_tn", source: SOURCE, defines: &[("trans_a", "true"), ("trans_b", "false")] },
        (true, true) => unreachable!("no product here reads both operands transposed"),
    }
}

/// The product's shape, `[batch, m, n]`, of `a` and `b` read as `transpose_a` and `transpose_b`
/// say; it panics where their batches or inner sizes differ.
fn product_shape(a: &Shape, b: &Shape, transpose_a: bool, transpose_b: bool) -> Shape {
    let [batches, a0, a1] = a.dims::<3>();
    let [b_batches, b0, b1] = b.dims::<3>();
    let (m, k) = if transpose_a { (a1, a0) } else { (a0, a1) };
    let (k_b, n) = if transpose_b { (b1, b0) } else { (b0, b1) };
    assert!(batches == b_batches && k == k_b, "matmul of {a:?} and {b:?} (transposed: {transpose_a}, {transpose_b})");
    Shape::new([batches, m, n])
}

/// Output rows and columns per workgroup (the WGSL file's `TILE`).
const TILE: usize = 64;

#[backend_extension(Cube, Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait TiledMatmul: Backend {
    /// `a` `[batch, m, k]` (`[batch, k, m]` when `transpose_a`) times `b` `[batch, k, n]`
    /// (`[batch, n, k]` when `transpose_b`) -> `[batch, m, n]`.
    #[fusion(dtype = a, shape = product_shape(a, b, *transpose_a, *transpose_b))]
    fn tiled_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>, transpose_a: bool, transpose_b: bool) -> FloatTensor<Self>;
}

/// The product on one backend, for the forward and for the backward's two products.
#[backend_extension(Cube, Fusion: cfg(feature = "fusion"))]
pub trait MatrixProduct: Backend {
    #[fusion(dtype = a, shape = product_shape(a, b, *transpose_a, *transpose_b), id = "matmul")]
    fn product(a: FloatTensor<Self>, b: FloatTensor<Self>, transpose_a: bool, transpose_b: bool) -> FloatTensor<Self>;
}

impl MatrixProduct for CubeBackend {
    fn product(a: CubeTensor, b: CubeTensor, transpose_a: bool, transpose_b: bool) -> CubeTensor {
        let (a, b) = (into_contiguous(a), into_contiguous(b));
        let out_shape = product_shape(a.meta.shape(), b.meta.shape(), transpose_a, transpose_b);
        let [batches, m, n] = out_shape.dims::<3>();
        let k = if transpose_a { a.meta.shape()[1] } else { a.meta.shape()[2] };
        let out = empty(&a, out_shape, DType::F32);
        let tiles = batches * m.div_ceil(TILE) * n.div_ceil(TILE);
        let g = grid(tiles as u32);
        let p = [batches, m, k, n].map(|v| v as u32);
        launch(variant(transpose_a, transpose_b), g, &[&a, &b, &out], &[p[0], p[1], p[2], p[3], g.0]);
        out
    }
}

impl TiledMatmul for CubeBackend {
    fn tiled_matmul(a: CubeTensor, b: CubeTensor, transpose_a: bool, transpose_b: bool) -> CubeTensor {
        <CubeBackend as MatrixProduct>::product(a, b, transpose_a, transpose_b)
    }
}

#[derive(Debug)]
struct MatmulBackward;

impl<B: MatrixProduct> Backward<B, 2> for MatmulBackward {
    /// Both operands as stored, and whether each is read transposed.
    type State = (FloatTensor<B>, FloatTensor<B>, bool, bool);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, b, ta, tb) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [a_node, b_node] = ops.parents;
        // c = op(a) op(b): d op(a) = dc op(b)^T, d op(b) = op(a)^T dc; an operand stored
        // transposed gets the transpose of its gradient, written as the product swapped.
        if let Some(node) = a_node {
            let d_a = if ta { B::product(b.clone(), grad.clone(), tb, true) } else { B::product(grad.clone(), b, false, !tb) };
            grads.register::<B>(node.id, d_a);
        }
        if let Some(node) = b_node {
            let d_b = if tb { B::product(grad, a, true, ta) } else { B::product(a, grad, !ta, false) };
            grads.register::<B>(node.id, d_b);
        }
    }
}

impl<B: MatrixProduct, C: CheckpointStrategy> TiledMatmul for Autodiff<B, C> {
    fn tiled_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>, transpose_a: bool, transpose_b: bool) -> FloatTensor<Self> {
        let (a, a_node) = a.into_parts();
        let (b, b_node) = b.into_parts();
        match MatmulBackward.prepare::<C>([a_node, b_node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::product(a.clone(), b.clone(), transpose_a, transpose_b);
                prep.finish((a, b, transpose_a, transpose_b), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::product(a, b, transpose_a, transpose_b)),
        }
    }
}

/// Whether `a` and `b` go through the tiled kernel: on wgpu, f32, the kernel on, and the
/// adapter not a software one: on lavapipe this kernel takes three times burn's time
/// (README), where each invocation's loads are gathers and each barrier a switch between
/// batches of lanes.
fn tiled_applies(a: &Tensor<3>, b: &Tensor<3>) -> bool {
    applies(Kernel::Matmul, &a.device()) && !super::software_adapter() && a.dtype() == DType::F32 && b.dtype() == DType::F32
}

/// `a` `[batch, m, k]` times `b` `[batch, k, n]`, or times the transpose of `b` `[batch, n, k]`
/// when `transpose_b`: the tiled kernel on wgpu (with its backward under autodiff), burn's
/// matmul elsewhere or when switched off (`matmul`).
pub fn matmul(a: Tensor<3>, b: Tensor<3>, transpose_b: bool) -> Tensor<3> {
    if tiled_applies(&a, &b) {
        return Tensor::from_dispatch(<Dispatch as TiledMatmul>::tiled_matmul(a.into_dispatch(), b.into_dispatch(), false, transpose_b));
    }
    if transpose_b { a.matmul(b.swap_dims(1, 2)) } else { a.matmul(b) }
}

/// [`matmul`] of matrices: `a` `[m, k]` times `b` `[k, n]` (`[n, k]` when `transpose_b`).
pub fn matmul2(a: Tensor<2>, b: Tensor<2>, transpose_b: bool) -> Tensor<2> {
    let [m, _] = a.dims();
    let n = b.dims()[if transpose_b { 0 } else { 1 }];
    matmul(a.unsqueeze(), b.unsqueeze(), transpose_b).reshape([m, n])
}

/// Attention's products over grouped heads: `a` `[batch, heads, m, k]` times `b` `[batch,
/// kv_heads, k, n]`, or times the transpose of `b` `[batch, kv_heads, n, k]` when `transpose_b`
/// (the scores, from the keys as they are stored), query head `h` with key/value head
/// `h / (heads / kv_heads)`. The query heads of a group are consecutive, so `a` is `[batch *
/// kv_heads, group * m, k]` as it lies and one product per key/value head serves its group:
/// keys and values are not repeated per query head, and the backward's product for `b` sums the
/// group's gradients as it goes.
pub fn matmul4(a: Tensor<4>, b: Tensor<4>, transpose_b: bool) -> Tensor<4> {
    let [batch, heads, m, k] = a.dims();
    let [_, kv_heads, b0, b1] = b.dims();
    assert!(heads % kv_heads == 0, "{heads} query heads in groups over {kv_heads} key/value heads");
    let n = if transpose_b { b0 } else { b1 };
    let grouped = a.reshape([batch * kv_heads, heads / kv_heads * m, k]);
    matmul(grouped, b.reshape([batch * kv_heads, b0, b1]), transpose_b).reshape([batch, heads, m, n])
}
