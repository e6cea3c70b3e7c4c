//! Our kernels on burn's CPU backend (Flex): the same fused passes as the WGSL files, as loops
//! over the tensors' memory, split across threads natively (burn Flex runs its elementwise ops
//! one pass each on one thread, so a dozen-op composition costs a dozen single-threaded passes).

use burn::backend::DType;
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;

/// Values per piece of work handed to a thread: large enough that handing it over costs nothing
/// next to the loop over it, small enough that a parameter of a few thousand values splits.
const CHUNK: usize = 1 << 14;

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

/// `f(a, b, c, x)` over matching [`CHUNK`]-long pieces of three writable slices and one
/// read-only one, on every thread natively and in turn on wasm (a tab gives burn no threads).
pub fn for_each_chunk3(a: &mut [f32], b: &mut [f32], c: &mut [f32], x: &[f32], f: impl Fn(&mut [f32], &mut [f32], &mut [f32], &[f32]) + Sync + Send) {
    assert!(a.len() == x.len() && b.len() == x.len() && c.len() == x.len());
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        a.par_chunks_mut(CHUNK)
            .zip(b.par_chunks_mut(CHUNK))
            .zip(c.par_chunks_mut(CHUNK))
            .zip(x.par_chunks(CHUNK))
            .for_each(|(((a, b), c), x)| f(a, b, c, x));
    }
    #[cfg(target_arch = "wasm32")]
    for (((a, b), c), x) in a.chunks_mut(CHUNK).zip(b.chunks_mut(CHUNK)).zip(c.chunks_mut(CHUNK)).zip(x.chunks(CHUNK)) {
        f(a, b, c, x);
    }
}

/// The sum of `f` over [`CHUNK`]-long pieces of `x`, the pieces' sums added in f64, in order:
/// the same bits on every run (rayon's own sum adds in an order that depends on its splitting,
/// and a training run must repeat exactly from its seed).
pub fn sum_chunks(x: &[f32], f: impl Fn(&[f32]) -> f64 + Sync + Send) -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        let pieces: Vec<f64> = x.par_chunks(CHUNK).map(f).collect();
        pieces.into_iter().sum()
    }
    #[cfg(target_arch = "wasm32")]
    {
        x.chunks(CHUNK).map(f).sum()
    }
}

/// `f(row, &mut a[row], &mut b[row])` for every row, rows split across threads natively.
pub fn for_each_row2(a: &mut [f32], b: &mut [f32], f: impl Fn(usize, &mut f32, &mut f32) + Sync + Send) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        a.par_iter_mut().zip(b.par_iter_mut()).enumerate().for_each(|(row, (a, b))| f(row, a, b));
    }
    #[cfg(target_arch = "wasm32")]
    for (row, (a, b)) in a.iter_mut().zip(b.iter_mut()).enumerate() {
        f(row, a, b);
    }
}

/// A `rows x width` buffer, each row written by `f(row, values)`, rows split across threads
/// natively.
pub fn filled_rows(rows: usize, width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * width];
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(width.max(1)).enumerate().for_each(|(row, values)| f(row, values));
    }
    #[cfg(target_arch = "wasm32")]
    for (row, values) in out.chunks_mut(width.max(1)).enumerate() {
        f(row, values);
    }
    out
}
