//! The CPU's products on 9 to 16 rows (a decode step of a batch) from weights packed once per KV
//! cache: each block of 16 output columns stored `[k][16]`, one after another, so that the
//! sixteen rows' sums of a block stay in AVX-512 registers over the whole of `k` and the weight
//! streams front to back once per step. [`super::host::rows_product`] reads the weight as
//! stored, an 8-deep slice at a time, and re-reads each slice from the L2 cache once per row:
//! on this project's machine, one core, `[16, 576] x [576, 1536]` over 40 weights too large
//! together for the caches, 30 GFLOP/s there against 52 here (README). On fewer rows the
//! packed product is no faster, and on CPUs without AVX-512 its sixteen rows of sums do not fit
//! the registers: there the weights are not packed.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Dispatch, Flex, backend_extension};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

#[cfg(target_arch = "x86_64")]
use super::host::has_avx512f;
use super::host::{add_bias_and_residual, f32_values};
use super::threads::{CHUNK, filled_rows, rows_on_threads};
use super::inference::optional_input;
use super::{Kernel, applies_on_cpu, enabled};

/// Output columns per packed block: one AVX-512 vector of f32.
pub const BLOCK: usize = 16;
/// Rows from which a projection takes its packed weight; below, the row-major product was as
/// fast in the measurement above.
pub const PACKED_ROWS_MIN: usize = 9;
/// Rows up to which it does: one sum per row in registers. (Sixty-four rows, `generate`'s
/// default batch, in groups of sixteen, were slower than burn's product: README.)
pub const PACKED_ROWS_MAX: usize = BLOCK;

#[backend_extension(Flex)]
pub trait PackedOps: Backend {
    /// `weight` `[k, n]` (`[n, k]` when `transposed`: the tied head's table) as `[n / 16, k,
    /// 16]`: block `c` holds columns `16 c .. 16 c + 16`, row by row of `k`.
    fn pack(weight: FloatTensor<Self>, transposed: bool) -> FloatTensor<Self>;
    /// `x` `[rows, k]` times the packed weight, plus `bias` `[n]` and `residual` `[rows, n]`
    /// where given: `[rows, n]`.
    fn packed_rows(x: FloatTensor<Self>, packed: FloatTensor<Self>, bias: FloatTensor<Self>, has_bias: bool, residual: FloatTensor<Self>, has_residual: bool) -> FloatTensor<Self>;
}

impl PackedOps for Flex {
    fn pack(weight: FlexTensor, transposed: bool) -> FlexTensor {
        let [a, b] = weight.layout().shape().dims::<2>();
        let (k, n) = if transposed { (b, a) } else { (a, b) };
        assert!(n % BLOCK == 0, "a packed weight has whole blocks of {BLOCK} columns, not {n}");
        let w = f32_values(&weight);
        let packed = filled_rows(n / BLOCK, k * BLOCK, |block, out| {
            for (kk, row) in out.chunks_exact_mut(BLOCK).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    let column = block * BLOCK + j;
                    *v = if transposed { w[column * k + kk] } else { w[kk * n + column] };
                }
            }
        });
        FlexTensor::from_data(TensorData::new(packed, [n / BLOCK, k, BLOCK]))
    }

    fn packed_rows(x: FlexTensor, packed: FlexTensor, bias: FlexTensor, has_bias: bool, residual: FlexTensor, has_residual: bool) -> FlexTensor {
        let [rows, k] = x.layout().shape().dims::<2>();
        let [blocks, k_packed, _] = packed.layout().shape().dims::<3>();
        assert!(k == k_packed && (1..=BLOCK).contains(&rows), "[{rows}, {k}] rows times a packed [{k_packed}, {}] weight", blocks * BLOCK);
        let n = blocks * BLOCK;
        let (x, w) = (f32_values(&x), f32_values(&packed));
        // Block by block (`[rows][16]` each, split across threads), then rows as stored.
        // Threaded as `rows_product` is, by the weight's size: a few rows' output is small.
        let mut by_block = vec![0.0f32; blocks * rows * BLOCK];
        rows_on_threads(&mut by_block, rows * BLOCK, k * n > CHUNK, |block, out| {
            block_product(&x, &w[block * k * BLOCK..(block + 1) * k * BLOCK], rows, k, out);
        });
        let mut out = vec![0.0f32; rows * n];
        for (row, out) in out.chunks_exact_mut(n).enumerate() {
            for (block, out) in out.chunks_exact_mut(BLOCK).enumerate() {
                out.copy_from_slice(&by_block[(block * rows + row) * BLOCK..][..BLOCK]);
            }
        }
        let (bias, residual) = (has_bias.then(|| f32_values(&bias)), has_residual.then(|| f32_values(&residual)));
        add_bias_and_residual(&mut out, n, bias.as_deref(), residual.as_deref());
        FlexTensor::from_data(TensorData::new(out, [rows, n]))
    }
}

/// `out[r][j]` = `x[r] · block[..][j]` for one packed block `[k][16]`, `rows` at most 16.
fn block_product(x: &[f32], block: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512f() {
        // SAFETY: the CPU has the feature the function is compiled for (checked above).
        return unsafe { block_product_avx512(x, block, rows, k, out) };
    }
    block_product_portable(x, block, rows, k, out)
}

/// The loop as plain Rust, for CPUs without AVX-512 (and the check of the vectorised one).
fn block_product_portable(x: &[f32], block: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    for (row, out) in out.chunks_exact_mut(BLOCK).take(rows).enumerate() {
        let x = &x[row * k..(row + 1) * k];
        let mut sums = [0.0f32; BLOCK];
        for (&a, w) in x.iter().zip(block.chunks_exact(BLOCK)) {
            for j in 0..BLOCK {
                sums[j] = a.mul_add(w[j], sums[j]);
            }
        }
        out.copy_from_slice(&sums);
    }
}

/// Rows of a packed block (64 bytes each) asked from memory ahead of the one multiplied.
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 24;

/// Sixteen sums (one per row; rows past `rows` repeat the last and are not stored) in sixteen
/// registers, each step of `k` one load of the weight and a broadcast of each row's value.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn block_product_avx512(x: &[f32], block: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(x.len() >= rows * k && block.len() == k * BLOCK && out.len() >= rows * BLOCK && rows >= 1);
    let starts: [usize; BLOCK] = std::array::from_fn(|r| r.min(rows - 1) * k);
    let mut sums = [_mm512_setzero_ps(); BLOCK];
    for kk in 0..k {
        // One stream through memory is read at about half the rate of several (README), unless
        // asked ahead: a prefetch past the block's end is only a hint (it cannot fault).
        _mm_prefetch::<_MM_HINT_T0>(block.as_ptr().wrapping_add((kk + PREFETCH_AHEAD) * BLOCK) as *const i8);
        // SAFETY: `block` holds k rows of 16 (asserted above).
        let w = unsafe { _mm512_loadu_ps(block.as_ptr().add(kk * BLOCK)) };
        for r in 0..BLOCK {
            sums[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[starts[r] + kk]), w, sums[r]);
        }
    }
    for (r, sum) in sums.iter().enumerate().take(rows) {
        // SAFETY: `out` holds `rows` rows of 16 (asserted above).
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(r * BLOCK), *sum) };
    }
}

/// Whether weights on `device` are packed for products on 9 to 16 rows: the CPU backend, on a CPU
/// with AVX-512, `linear_rows` (the few-row products' switch) on.
pub fn packing_applies(device: &Device) -> bool {
    #[cfg(target_arch = "x86_64")]
    let avx512 = has_avx512f();
    #[cfg(not(target_arch = "x86_64"))]
    let avx512 = false;
    avx512 && enabled(Kernel::LinearRows) && crate::device::is_cpu(device)
}

/// `weight` `[k, n]` (`[n, k]` when `transposed`) packed, where [`packing_applies`] and `n` is a
/// whole number of blocks.
pub fn pack(weight: Tensor<2>, transposed: bool) -> Option<Tensor<3>> {
    let n = weight.dims()[if transposed { 0 } else { 1 }];
    if !packing_applies(&weight.device()) || n % BLOCK != 0 || weight.dtype() != DType::F32 || weight.is_autodiff() {
        return None;
    }
    Some(Tensor::from_dispatch(<Dispatch as PackedOps>::pack(weight.into_dispatch(), transposed)))
}

/// A decoding layer's seven projections packed (`None` for one that cannot be).
#[derive(Debug, Clone)]
pub struct PackedLayer {
    pub q: Option<Tensor<3>>,
    pub k: Option<Tensor<3>>,
    pub v: Option<Tensor<3>>,
    pub o: Option<Tensor<3>>,
    pub gate: Option<Tensor<3>>,
    pub up: Option<Tensor<3>>,
    pub down: Option<Tensor<3>>,
}

impl PackedLayer {
    /// The layer's weights packed, in the order q, k, v, o, gate, up, down.
    pub fn new(projections: [&Linear; 7]) -> Self {
        let [q, k, v, o, gate, up, down] = projections.map(|p| pack(p.weight.val(), false));
        Self { q, k, v, o, gate, up, down }
    }
}

/// `x` `[rows, k]` times `packed`, plus `bias` `[n]` and `residual` `[rows, n]` where given, when
/// it applies (the CPU backend, `linear_rows`' switch on, `rows` from [`PACKED_ROWS_MIN`] to
/// [`PACKED_ROWS_MAX`], f32, not under autodiff); else `None`.
pub(super) fn packed_product(x: &Tensor<2>, packed: Option<&Tensor<3>>, bias: Option<Tensor<1>>, residual: Option<Tensor<2>>) -> Option<Tensor<2>> {
    let packed = packed?;
    let rows = x.dims()[0];
    if !applies_on_cpu(Kernel::LinearRows, x) || !(PACKED_ROWS_MIN..=PACKED_ROWS_MAX).contains(&rows) {
        return None;
    }
    let (bias, has_bias) = optional_input(bias, x);
    let (residual, has_residual) = optional_input(residual, x);
    let out = <Dispatch as PackedOps>::packed_rows(x.clone().into_dispatch(), packed.clone().into_dispatch(), bias, has_bias, residual, has_residual);
    Some(Tensor::from_dispatch(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised block against the plain loop and against sums in f64, every row count.
    #[test]
    fn block_products_agree() {
        let k = 37;
        let mut rng = crate::rng::Rng::new(3);
        let x: Vec<f32> = (0..BLOCK * k).map(|_| rng.next_f32() - 0.5).collect();
        let block: Vec<f32> = (0..k * BLOCK).map(|_| rng.next_f32() - 0.5).collect();
        for rows in 1..=BLOCK {
            let (mut fast, mut plain) = (vec![f32::NAN; BLOCK * BLOCK], vec![f32::NAN; BLOCK * BLOCK]);
            block_product(&x, &block, rows, k, &mut fast);
            block_product_portable(&x, &block, rows, k, &mut plain);
            for r in 0..rows {
                for j in 0..BLOCK {
                    let exact: f64 = (0..k).map(|kk| x[r * k + kk] as f64 * block[kk * BLOCK + j] as f64).sum();
                    let (a, b) = (fast[r * BLOCK + j], plain[r * BLOCK + j]);
                    assert!((a as f64 - exact).abs() < 1e-5 && a == b, "rows {rows}, [{r}][{j}]: {a} and {b}, exactly {exact}");
                }
            }
            assert!(fast[rows * BLOCK..].iter().all(|v| v.is_nan()), "rows past {rows} are not written");
        }
    }
}
