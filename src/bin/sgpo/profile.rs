//! `sgpo bench --profile`: where a decode step's time goes, piece by piece, on the selected
//! device. Each piece is run back to back and then synchronised once, so the numbers are the
//! device's throughput for that piece (plus the host's cost of issuing it), not its latency;
//! `readback` is the latency of one tiny read.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;

use sgpo::generate::{SamplingConfig, Stop, generate};
use sgpo::metrics::now_seconds;
use sgpo::model::{KvCache, Model, padded_bias};
use sgpo::rng::Rng;

/// One measured piece: milliseconds per call on the device, and of that the host's time to
/// issue the call (its ops recorded and submitted, before any wait).
#[derive(Serialize)]
pub struct Piece {
    pub name: String,
    pub batch_size: usize,
    pub ms_per_call: f64,
    pub host_ms_per_call: f64,
}

fn time_calls(device: &Device, calls: usize, mut call: impl FnMut()) -> (f64, f64) {
    call();
    device.sync().expect("device sync");
    let t0 = now_seconds();
    for _ in 0..calls {
        call();
    }
    let issued = now_seconds();
    device.sync().expect("device sync");
    let done = now_seconds();
    ((done - t0) * 1e3 / calls as f64, (issued - t0) * 1e3 / calls as f64)
}

fn ids(rows: usize, len: usize, device: &Device) -> Tensor<2, Int> {
    let v: Vec<i32> = (0..rows * len).map(|i| 3 + (i % 7) as i32).collect();
    Tensor::from_data(TensorData::new(v, [rows, len]), device)
}

pub fn decode_step(model: &Model, d_model: usize, d_ff: usize, batches: &[usize], device: &Device) -> anyhow::Result<Vec<Piece>> {
    let mut out = Vec::new();
    let mut piece = |name: &str, b: usize, (ms, host): (f64, f64)| {
        eprintln!("profile b={b:>2} {name:<34} {ms:>9.3} ms/call (host {host:.3})");
        out.push(Piece { name: name.into(), batch_size: b, ms_per_call: ms, host_ms_per_call: host });
    };
    let one = Tensor::<1>::from_data(TensorData::new(vec![1.0f32], [1]), device);
    let mut reads = 0.0;
    let t0 = now_seconds();
    for _ in 0..20 {
        reads += pollster::block_on(sgpo::readback::scalar(one.clone().add_scalar(1.0)))?;
    }
    piece("readback of one float (latency)", 1, ((now_seconds() - t0) * 50.0, 0.0));
    anyhow::ensure!(reads == 40.0);

    for &b in batches {
        let prompt = 16;
        let valid = vec![vec![true; prompt]; b];
        let mut cache = KvCache::new(prompt + 64);
        let _ = model.forward(ids(b, prompt, device), padded_bias(&valid, prompt, device), Some(&mut cache));
        let step_ids = ids(b, 1, device);
        let mut len = prompt;
        let mut valid = valid;
        let mut step = |cache: &mut KvCache| {
            len += 1;
            for v in valid.iter_mut() {
                v.push(true);
            }
            model.last_logits(step_ids.clone(), padded_bias(&valid, 1, device), Some(cache))
        };
        piece("decode forward (cache)", b, time_calls(device, 16, || drop(step(&mut cache))));
        let t0 = now_seconds();
        for _ in 0..8 {
            pollster::block_on(sgpo::readback::floats(step(&mut cache)))?;
        }
        piece("decode forward + logits readback", b, ((now_seconds() - t0) * 1e3 / 8.0, 0.0));

        let x = Tensor::<2>::from_data(TensorData::new(vec![0.01f32; b * d_model], [b, d_model]), device);
        piece("output head (tied, W^T view)", b, time_calls(device, 32, || drop(model.head(x.clone()))));
        let vocab = model.vocab_size();
        let w_head = Tensor::<2>::from_data(TensorData::new(vec![0.01f32; d_model * vocab], [d_model, vocab]), device);
        piece("output head (contiguous [d, vocab])", b, time_calls(device, 32, || drop(x.clone().matmul(w_head.clone()))));
        let w_up = Tensor::<2>::from_data(TensorData::new(vec![0.01f32; d_model * d_ff], [d_model, d_ff]), device);
        piece("matmul [b, d] x [d, d_ff]", b, time_calls(device, 64, || drop(x.clone().matmul(w_up.clone()))));
        piece("matmul [b, d] x [d, d_ff] (ours/fallback)", b, time_calls(device, 64, || drop(sgpo::kernels::matmul2(x.clone(), w_up.clone(), false))));
        let up = Linear { weight: Param::from_tensor(w_up.clone()), bias: None };
        let x3 = x.clone().reshape([1, b, d_model]);
        piece("linear [b, d] x [d, d_ff] (ours/fallback)", b, time_calls(device, 64, || drop(sgpo::kernels::linear(x3.clone(), &up))));
        let w_sq = Tensor::<2>::from_data(TensorData::new(vec![0.01f32; d_model * d_model], [d_model, d_model]), device);
        piece("matmul [b, d] x [d, d]", b, time_calls(device, 64, || drop(x.clone().matmul(w_sq.clone()))));
        let y = Tensor::<2>::from_data(TensorData::new(vec![0.5f32; b * d_ff], [b, d_ff]), device);
        piece("elementwise silu(y) * y [b, d_ff]", b, time_calls(device, 64, || drop(burn::tensor::activation::silu(y.clone()) * y.clone())));
        let bias_rows = vec![vec![true; 64]; b];
        piece("padded_bias upload [b, 1, 1, 64]", b, time_calls(device, 64, || drop(padded_bias(&bias_rows, 1, device))));

        // A whole greedy generation, cold (first time at this batch) and warm.
        let prompts: Vec<Vec<u32>> = (0..b).map(|i| vec![3 + i as u32 % 3; prompt]).collect();
        let stop = Stop { end: u32::MAX, pad: 0, suppress: &[] };
        for label in ["generate 48 tokens, first call", "generate 48 tokens, second call"] {
            let t0 = now_seconds();
            pollster::block_on(generate(model, &prompts, &SamplingConfig::greedy(48), stop, &mut Rng::new(0), true, device))?;
            piece(label, b, ((now_seconds() - t0) * 1e3 / 48.0, 0.0));
        }
    }
    Ok(out)
}
