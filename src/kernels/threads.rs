//! Loops over tensor memory split across threads natively (rayon) and run in turn on wasm (a
//! tab gives burn no threads), with the same bits on every run whatever the threads: how the
//! CPU twins (`host.rs`) use every core.

/// Values per piece of work handed to a thread: large enough that handing it over costs nothing
/// next to the loop over it, small enough that a parameter of a few thousand values splits.
pub(super) const CHUNK: usize = 1 << 14;

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

/// A `rows x width` buffer, each row written by `f(row, values)` (zeros before), rows split
/// across threads natively.
pub fn filled_rows(rows: usize, width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * width];
    for_each_row(&mut out, width, f);
    out
}

/// Two `rows x width` buffers, each row of both written by `f(row, a, b)` (zeros before), rows
/// split across threads natively as in [`for_each_row`].
pub fn filled_rows2(rows: usize, width: usize, f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync + Send) -> (Vec<f32>, Vec<f32>) {
    let (mut a, mut b) = (vec![0.0f32; rows * width], vec![0.0f32; rows * width]);
    let width = width.max(1);
    #[cfg(not(target_arch = "wasm32"))]
    if a.len() > CHUNK {
        use rayon::prelude::*;
        a.par_chunks_mut(width).zip(b.par_chunks_mut(width)).enumerate().for_each(|(row, (a, b))| f(row, a, b));
        return (a, b);
    }
    for (row, (a, b)) in a.chunks_mut(width).zip(b.chunks_mut(width)).enumerate() {
        f(row, a, b);
    }
    (a, b)
}

/// Rows per block in [`summed_blocks`].
const SUMMED_ROWS: usize = 64;

/// `Σ over rows of f(row)`, a `width`-long sum, where `f(row, sum)` adds its row's terms into
/// `sum`: blocks of [`SUMMED_ROWS`] rows summed across threads natively, the blocks' sums
/// added in order (the same bits whatever the threads, as [`sum_chunks`]).
pub fn summed_blocks(rows: usize, width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) -> Vec<f32> {
    let blocks = rows.div_ceil(SUMMED_ROWS);
    let mut sums = vec![0.0f32; blocks * width];
    rows_on_threads(&mut sums, width, blocks > 1, |block, sum| {
        for row in block * SUMMED_ROWS..rows.min((block + 1) * SUMMED_ROWS) {
            f(row, sum);
        }
    });
    added_parts(sums, width)
}

/// `parts`, pieces of `width` values each, added into the first in order (the same bits
/// whatever the threads that made them): the first `width` values.
pub(super) fn added_parts(mut parts: Vec<f32>, width: usize) -> Vec<f32> {
    let first = width.min(parts.len());
    let (total, rest) = parts.split_at_mut(first);
    for part in rest.chunks_exact(width.max(1)) {
        total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
    }
    parts.truncate(width);
    parts
}

/// `f(row, values)` for each `width`-long row of `values`, rows split across threads natively
/// when they hold more than [`CHUNK`] values (waking a sleeping thread costs more than a decode
/// step's norm of one row).
pub fn for_each_row(values: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let threaded = values.len() > CHUNK;
    rows_on_threads(values, width, threaded, f);
}

/// `f(row, values)` for each `width`-long row of `values`, on every thread natively where
/// `threaded`, else in turn.
pub(super) fn rows_on_threads(values: &mut [f32], width: usize, threaded: bool, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    #[cfg(target_arch = "wasm32")]
    let _ = threaded; // a tab gives burn no threads
    #[cfg(not(target_arch = "wasm32"))]
    if threaded {
        use rayon::prelude::*;
        values.par_chunks_mut(width.max(1)).enumerate().for_each(|(row, values)| f(row, values));
        return;
    }
    for (row, values) in values.chunks_mut(width.max(1)).enumerate() {
        f(row, values);
    }
}
