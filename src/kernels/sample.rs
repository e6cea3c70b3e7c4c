//! Sampling on the GPU: one token id per row from `[rows, vocab]` logits, by the same
//! definition as the host's [`crate::generate::sample_row`] (Gumbel-max over a counter-based
//! hash), so a decode step never reads logits back and the draws stay reproducible from the
//! seed on every backend.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Backend, DType, Dispatch, backend_extension};
use burn::tensor::{Int, Shape, Tensor, TensorData};

use super::launch::{Wgsl, empty, grid, launch};
use crate::error::Result;
use crate::generate::{SamplingConfig, sample_row};
use crate::readback;

const SAMPLE: Wgsl = Wgsl { name: "sample", source: include_str!("../../shaders/sample.wgsl"), defines: &[] };

#[backend_extension(Cube, Fusion: cfg(feature = "fusion"))]
pub trait SampleOps: Backend {
    #[fusion(dtype = DType::I32, shape = Shape::new([logits[0]]))]
    fn sample(logits: FloatTensor<Self>, seed: u64, temperature: f32, top_k: usize, top_p: f32) -> IntTensor<Self>;
}

impl SampleOps for CubeBackend {
    fn sample(logits: CubeTensor, seed: u64, temperature: f32, top_k: usize, top_p: f32) -> CubeTensor {
        let logits = into_contiguous(logits);
        let [rows, vocab] = logits.meta.shape().dims::<2>();
        let tokens = empty(&logits, Shape::new([rows]), DType::I32);
        let g = grid(rows as u32);
        let greedy = temperature <= 0.0;
        let inv_t = if greedy { 1.0 } else { 1.0 / temperature };
        let p = [rows as u32, vocab as u32, g.0, seed as u32, (seed >> 32) as u32, inv_t.to_bits(), top_k as u32, top_p.to_bits(), greedy as u32];
        launch(SAMPLE, g, &[&logits, &tokens], &p);
        tokens
    }
}

/// One token per row of `logits` `[rows, vocab]`, drawn as `cfg` says for the decode step
/// seeded `seed`: on a GPU by the kernel, elsewhere on the host (where the CPU backend's
/// tensors live anyway; on a software adapter, lavapipe, reading the logits back is cheap and
/// the host's draw measured faster than the kernel's). The same ids either way.
pub async fn sample_tokens(logits: Tensor<2>, cfg: &SamplingConfig, seed: u64) -> Result<Tensor<1, Int>> {
    let device = logits.device();
    if super::applies_forward(super::Kernel::Sample, &logits) && !super::software_adapter() {
        let ids = <Dispatch as SampleOps>::sample(logits.into_dispatch(), seed, cfg.temperature, cfg.top_k, cfg.top_p);
        return Ok(Tensor::from_dispatch(ids));
    }
    let [rows, vocab] = logits.dims();
    let host = readback::floats(logits).await?;
    let ids: Vec<i32> = host.chunks(vocab).enumerate().map(|(r, row)| sample_row(row, cfg, seed, r as u32) as i32).collect();
    Ok(Tensor::from_data(TensorData::new(ids, [rows]), &device))
}
