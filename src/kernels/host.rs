//! Our kernels on burn's CPU backend (Flex): the same fused passes as the WGSL files, as loops
//! over the tensors' memory, split across threads natively (`threads.rs`; burn Flex runs its
//! elementwise ops one pass each on one thread, so a dozen-op composition costs a dozen
//! single-threaded passes). Here: the tensors' values, and the vectorised dot products,
//! maxima, sums, `exp` and few-row products the twins are made of.

use burn::backend::DType;
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;

#[cfg(not(target_arch = "wasm32"))]
use super::threads::CHUNK;
use super::threads::{added_parts, for_each_row, rows_on_threads};

/// `t`'s f32 values, contiguous, as a tensor this code may write in place: `t` itself when it
/// owns its whole buffer alone, else a copy (the old values may still be read elsewhere, e.g.
/// a weight a frozen reference model shares).
pub fn owned_f32(t: FlexTensor) -> FlexTensor {
    assert_eq!(t.dtype(), DType::F32, "host kernels take f32 tensors");
    let n = t.layout().num_elements();
    let whole = t.as_slice::<f32>().is_some_and(|s| s.len() == n && t.bytes().len() == 4 * n);
    if whole && t.is_unique() {
        return t;
    }
    let values = match t.as_slice::<f32>() {
        Some(s) => s.to_vec(),
        None => t.to_contiguous().as_slice::<f32>().expect("contiguous after the copy").to_vec(),
    };
    FlexTensor::from_data(TensorData::new(values, t.layout().shape().clone()))
}

/// `t`'s f32 values, contiguous (a copy only where `t` is a strided view).
pub fn f32_values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    assert_eq!(t.dtype(), DType::F32, "host kernels take f32 tensors");
    match t.as_slice::<f32>() {
        Some(s) => s.into(),
        None => t.to_contiguous().as_slice::<f32>().expect("contiguous after the copy").to_vec().into(),
    }
}

/// The writable values of a tensor [`owned_f32`] returned.
pub fn values_mut(t: &mut FlexTensor) -> &mut [f32] {
    t.try_storage_mut::<f32>().expect("owned_f32 tensors are unique")
}

/// Whether this CPU runs the loops compiled for AVX2 and FMA (x86-64 only; this crate builds
/// for baseline x86-64, so they are picked at run time).
#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Whether this CPU has AVX-512 (x86-64 only): the packed products' registers (`packed.rs`).
#[cfg(target_arch = "x86_64")]
pub fn has_avx512f() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}


/// `out` `[rows, n]` plus `bias` `[n]` on every row and plus `residual` `[rows, n]`, where
/// given: a projection's epilogue on the CPU (`linear_rows`' twin, the packed products).
pub fn add_bias_and_residual(out: &mut [f32], n: usize, bias: Option<&[f32]>, residual: Option<&[f32]>) {
    assert!(bias.is_none_or(|b| b.len() == n) && residual.is_none_or(|r| r.len() == out.len()), "bias or residual of another size than [{}, {n}]", out.len() / n.max(1));
    if let Some(bias) = bias {
        out.chunks_exact_mut(n).for_each(|row| row.iter_mut().zip(bias).for_each(|(o, b)| *o += b));
    }
    if let Some(residual) = residual {
        out.iter_mut().zip(residual).for_each(|(o, r)| *o += r);
    }
}

/// `a · b`, in [`DOT_LANES`] running sums (a loop over one sum cannot be vectorised: float
/// addition is not associative, so the compiler keeps its order).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_with::<false>(a, b)
}

/// Running sums in [`dot`]: four vectors of eight, so that four multiply-adds are in flight
/// instead of one waiting on the last.
const DOT_LANES: usize = 32;

#[inline(always)]
fn dot_with<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut sums = [0.0f32; DOT_LANES];
    let (a_lanes, b_lanes) = (a.chunks_exact(DOT_LANES), b.chunks_exact(DOT_LANES));
    let tail: f32 = a_lanes.remainder().iter().zip(b_lanes.remainder()).map(|(x, y)| x * y).sum();
    for (a, b) in a_lanes.zip(b_lanes) {
        for i in 0..DOT_LANES {
            sums[i] = if FMA { a[i].mul_add(b[i], sums[i]) } else { sums[i] + a[i] * b[i] };
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// The largest of `values` (negative infinity for none), in eight running maxima: `f32::max`
/// in one loop does not vectorise (it must skip NaN, value by value). A NaN among the values
/// may be passed over here; the softmaxes that use this carry it on through `exp`.
fn max_of(values: &[f32]) -> f32 {
    let larger = |m: f32, v: f32| if v > m { v } else { m };
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| larger(m, v));
    for chunk in chunks {
        for i in 0..8 {
            lanes[i] = larger(lanes[i], chunk[i]);
        }
    }
    lanes.into_iter().fold(tail, larger)
}

/// The sum of `values`, in eight running sums (as [`dot`]: one sum in order does not vectorise).
fn sum_of(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for i in 0..8 {
            lanes[i] += chunk[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// A softmax's unnormalised weights in place: `values` less their maximum, exponentiated
/// (a masked value, -1e9, comes out 0). Returns the maximum and the weights' sum.
pub fn exp_shifted(values: &mut [f32]) -> (f32, f32) {
    let max = max_of(values);
    values.iter_mut().for_each(|v| *v -= max);
    exp_in_place(values);
    (max, sum_of(values))
}

/// Rows of the weight per piece of work in [`rows_product_transposed`].
const TRANSPOSED_BLOCK: usize = 256;

/// `x` `[rows, k]` times the transpose of `w` `[n, k]`: `[rows, n]`, for few rows. The tied
/// output head's product (`w` is the embedding table): each of `w`'s rows is read once and
/// dotted with every row of `x`; blocks of them split across threads natively.
pub fn rows_product_transposed(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
    assert!(x.len() == rows * k && w.len() == n * k, "a [{rows}, {k}] x [{n}, {k}]^T product of {} and {} values", x.len(), w.len());
    // Column-major (`[n, rows]`): a block of w's rows writes one contiguous run.
    let mut by_column = vec![0.0f32; n * rows];
    for_each_row(&mut by_column, TRANSPOSED_BLOCK * rows, |block, out| {
        let first = block * TRANSPOSED_BLOCK;
        transposed_block(x, &w[first * k..(first + out.len() / rows) * k], rows, k, out);
    });
    if rows == 1 {
        return by_column;
    }
    let mut out = vec![0.0f32; rows * n];
    for (j, column) in by_column.chunks_exact(rows).enumerate() {
        for (row, &v) in column.iter().enumerate() {
            out[row * n + j] = v;
        }
    }
    out
}

/// `out[j * rows + r]` = `x[r] · w[j]` for each of `w`'s rows.
fn transposed_block(x: &[f32], w: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function is compiled for (checked above).
        return unsafe { transposed_block_avx2(x, w, rows, k, out) };
    }
    transposed_block_portable::<false>(x, w, rows, k, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn transposed_block_avx2(x: &[f32], w: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    transposed_block_portable::<true>(x, w, rows, k, out)
}

#[inline(always)]
fn transposed_block_portable<const FMA: bool>(x: &[f32], w: &[f32], rows: usize, k: usize, out: &mut [f32]) {
    for (w, out) in w.chunks_exact(k).zip(out.chunks_exact_mut(rows)) {
        for (x, o) in x.chunks_exact(k).zip(out) {
            *o = dot_with::<FMA>(x, w);
        }
    }
}

/// Rows of the weight [`rows_product`] adds into the output in one pass over it: the output,
/// read and written once per pass, moves an eighth as often as one row at a time would make it.
const PRODUCT_DEPTH: usize = 8;

/// `x` `[rows, k]` times `w` `[k, n]`, row-major: `[rows, n]`, for few rows (a decode step).
/// The weight is read once, front to back (a general product packs it into panels first,
/// which for a few rows costs as much as the product); each thread takes a contiguous run of
/// its rows and the threads' sums are added in a fixed order. On x86-64 the loop is compiled
/// for AVX2 and FMA too and picked at run time (this crate builds for baseline x86-64).
pub fn rows_product(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
    assert!(x.len() == rows * k && w.len() == k * n, "a [{rows}, {k}] x [{k}, {n}] product of {} and {} values", x.len(), w.len());
    // As `for_each_row`: a small product on the calling thread alone.
    #[cfg(not(target_arch = "wasm32"))]
    let parts = if k * n <= CHUNK { 1 } else { rayon::current_num_threads().min(k.div_ceil(PRODUCT_DEPTH)) };
    #[cfg(target_arch = "wasm32")]
    let parts = 1;
    let depth = k.div_ceil(parts).next_multiple_of(PRODUCT_DEPTH);
    let mut sums = vec![0.0f32; parts * rows * n];
    rows_on_threads(&mut sums, rows * n, parts > 1, |part, out| {
        let ks = (part * depth).min(k)..((part + 1) * depth).min(k);
        product_part(x, w, rows, k, n, ks, out);
    });
    added_parts(sums, rows * n)
}

/// `out` `[rows, n]` += `x[:, ks]` times `w[ks, :]`.
fn product_part(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize, ks: std::ops::Range<usize>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function is compiled for (checked above).
        return unsafe { product_part_avx2(x, w, rows, k, n, ks, out) };
    }
    product_part_portable::<false>(x, w, rows, k, n, ks, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn product_part_avx2(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize, ks: std::ops::Range<usize>, out: &mut [f32]) {
    product_part_portable::<true>(x, w, rows, k, n, ks, out)
}

/// The loop, with fused multiply-adds where `FMA` (only where the CPU has them: elsewhere
/// `mul_add` is a library call).
#[inline(always)]
fn product_part_portable<const FMA: bool>(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize, ks: std::ops::Range<usize>, out: &mut [f32]) {
    let mut at = ks.start;
    while at < ks.end {
        if ks.end - at >= PRODUCT_DEPTH {
            let w: [&[f32]; PRODUCT_DEPTH] = std::array::from_fn(|i| &w[(at + i) * n..(at + i + 1) * n]);
            for row in 0..rows {
                let a: [f32; PRODUCT_DEPTH] = std::array::from_fn(|i| x[row * k + at + i]);
                let out = &mut out[row * n..(row + 1) * n];
                for c in 0..n {
                    let mut sum = out[c];
                    for i in 0..PRODUCT_DEPTH {
                        sum = if FMA { a[i].mul_add(w[i][c], sum) } else { sum + a[i] * w[i][c] };
                    }
                    out[c] = sum;
                }
            }
            at += PRODUCT_DEPTH;
        } else {
            let w = &w[at * n..(at + 1) * n];
            for row in 0..rows {
                let a = x[row * k + at];
                out[row * n..(row + 1) * n].iter_mut().zip(w).for_each(|(o, &w)| *o = if FMA { a.mul_add(w, *o) } else { *o + a * w });
            }
            at += 1;
        }
    }
}

/// Below this `e^x` is subnormal in f32: [`exp_in_place`] gives 0 (a masked key's weight).
const EXP_MIN: f32 = -87.336_55;
/// Above this `e^x` overflows f32: [`exp_in_place`] gives infinity.
const EXP_MAX: f32 = 88.722_83;

/// `e^x` for each value, in place, within a few units in the last place of the true value:
/// `x = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-7 polynomial for `e^r` (Cephes' `expf`
/// coefficients) and `2^n` put in the exponent bits. Unlike a call to the C library's `expf`
/// per value, the loop vectorises; on x86-64 it is compiled for AVX2 and FMA too and picked at
/// run time. NaN stays NaN (a non-finite loss must show).
pub fn exp_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features the function is compiled for (checked above).
        return unsafe { exp_in_place_avx2(values) };
    }
    values.iter_mut().for_each(|v| *v = exp::<false>(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_in_place_avx2(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = exp::<true>(*v));
}

#[inline(always)]
fn exp<const FMA: bool>(x: f32) -> f32 {
    let madd = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    // Rounding to the nearest integer by adding and taking away 1.5 * 2^23.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.clamp(EXP_MIN, EXP_MAX);
    let rounded = madd(clamped, std::f32::consts::LOG2_E, ROUND);
    let n = rounded - ROUND;
    // ln 2 in two parts, the first exact in a few bits, so that n ln 2 loses nothing.
    let r = madd(n, 2.121_944_4e-4, madd(n, -0.693_359_4, clamped));
    let mut p = 1.987_569_1e-4f32;
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = madd(p, r, c);
    }
    let e_r = madd(p, r * r, r + 1.0);
    // e^r 2^n as (e^r 2^(n - 1)) 2: 2^128 (n's largest, where e^r < 1) is not an f32. n is
    // read from `rounded`'s low bits (it is ROUND's bits plus n), not converted from a float:
    // Rust's saturating float-to-int conversion does not vectorise.
    let n_bits = rounded.to_bits().wrapping_sub(ROUND.to_bits());
    let half_scale = f32::from_bits(n_bits.wrapping_add(126) << 23);
    let y = e_r * half_scale * 2.0;
    if x < EXP_MIN {
        0.0
    } else if x > EXP_MAX {
        f32::INFINITY
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lane-wise maximum and sum against one loop in order, for every length up to past
    /// two chunks of eight (the remainders), on values of both signs.
    #[test]
    fn max_and_sum_match_one_loop() {
        let values: Vec<f32> = (0..40).map(|i| ((i * 7919 % 23) as f32 - 11.5) * 0.37).collect();
        for n in 0..=values.len() {
            let v = &values[..n];
            assert_eq!(max_of(v), v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)), "max of {n}");
            let sum: f32 = v.iter().sum();
            assert!((sum_of(v) - sum).abs() <= 1e-5 * v.iter().map(|x| x.abs()).sum::<f32>().max(1.0), "sum of {n}");
        }
    }

    /// Against f64's `exp` over the whole finite range, densely: relative error within 3e-7
    /// (a few units in the last place); the ends and NaN.
    #[test]
    fn exp_matches_f64() {
        let xs: Vec<f32> = (0..=400_000).map(|i| EXP_MIN + (EXP_MAX - EXP_MIN) * i as f32 / 400_000.0).chain([0.0, -0.0, 1.0, -1.0, 1e-8, -1e-8]).collect();
        let mut ys = xs.clone();
        exp_in_place(&mut ys);
        let mut worst = 0.0f64;
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = (x as f64).exp();
            if want < f32::MIN_POSITIVE as f64 * 2.0 {
                continue; // near the subnormal edge only the absolute error is small
            }
            if want > f32::MAX as f64 {
                assert_eq!(y, f32::INFINITY, "e^{x} overflows f32");
                continue;
            }
            worst = worst.max(((y as f64) - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst:e}");
        let mut edges = [EXP_MIN - 1.0, -1e9, EXP_MAX + 1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        exp_in_place(&mut edges);
        assert_eq!(edges[..5], [0.0, 0.0, f32::INFINITY, f32::INFINITY, 0.0]);
        assert!(edges[5].is_nan());
    }
}
