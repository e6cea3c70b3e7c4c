//! The kernel parity cases: each of our WGSL kernels against the plain burn composition it
//! replaces, on whatever wgpu device it is given: natively on lavapipe (`tests/kernels.rs`) and
//! in Chromium on WebGPU (`tests/web.rs`). Asynchronous reads only, as WebGPU requires. The
//! kernels switch is process-wide, so the cases run one after another from one test.

use burn::module::Param;
use burn::nn::{Linear, RmsNorm};
use burn::tensor::{Device, Int, Tensor, TensorData};

use sgpo::kernels::{AdamWRule, attention_softmax, RopeTable, adamw, cached_attention, linear, linear_add, linear_decoding, matmul, matmul2, matmul4, norm_linear_qkv, norm_linear_swiglu, pack, packing_applies, rms_norm, rope, rope_into, squared_sum, swiglu, tied_head, tied_head_decoding, token_logprobs};
use sgpo::model::MASKED;
use sgpo::readback::{self, max_diff};
use sgpo::rng::Rng;

/// Every case, in turn.
pub async fn all_match(device: &Device) {
    // Every kernel as on a GPU, whatever adapter runs the tests (an earlier test may have opened
    // one marked software); the few-rows cases switch the software variants on themselves.
    sgpo::kernels::set_software_adapter(false);
    let mut rng = Rng::new(5);
    token_logprobs_match(device, &mut rng).await;
    attention_softmax_matches(device, &mut rng).await;
    inference_kernels_match(device, &mut rng).await;
    sampler_matches_the_host(device, &mut rng).await;
    adamw_matches(device, &mut rng).await;
    squared_sum_matches(device, &mut rng).await;
    matmul_matches(device, &mut rng).await;
    norm_and_gate_gradients_match(device, &mut rng).await;
    // The CPU twins (`src/kernels/host.rs`): threaded natively, in turn in the browser. On the
    // CPU the decode path's fused kernels fall back to a composition of twins (the norm, the
    // few-row product, RoPE into the cache), so their cases check those compositions too.
    inference_kernels_match(&Device::flex(), &mut rng).await;
    token_logprobs_match(&Device::flex(), &mut rng).await;
    attention_softmax_matches(&Device::flex(), &mut rng).await;
    norm_and_gate_gradients_match(&Device::flex(), &mut rng).await;
    adamw_matches(&Device::flex(), &mut rng).await;
    squared_sum_matches(&Device::flex(), &mut rng).await;
    packed_products_match(&Device::flex(), &mut rng).await;
}

fn uniform(n: usize, scale: f32, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| (2.0 * rng.next_f32() - 1.0) * scale).collect()
}

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

async fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    readback::floats(t).await.expect("read back")
}

/// `f`'s result with the kernels on and off, read back: (kernels, plain burn).
async fn both<const D: usize>(mut f: impl FnMut() -> Tensor<D>) -> (Vec<f32>, Vec<f32>) {
    sgpo::kernels::set_enabled(true);
    let fused = f();
    sgpo::kernels::set_enabled(false);
    let plain = f();
    sgpo::kernels::set_enabled(true);
    (host(fused).await, host(plain).await)
}

/// `f`'s result and its input's gradient with the kernels on and off, read back: (kernels,
/// plain burn) of each.
async fn both_with_gradient<const D: usize, const G: usize>(f: impl Fn() -> (Tensor<D>, Tensor<G>)) -> ((Vec<f32>, Vec<f32>), (Vec<f32>, Vec<f32>)) {
    sgpo::kernels::set_enabled(true);
    let (fused, fused_grad) = f();
    sgpo::kernels::set_enabled(false);
    let (plain, plain_grad) = f();
    sgpo::kernels::set_enabled(true);
    ((host(fused).await, host(plain).await), (host(fused_grad).await, host(plain_grad).await))
}

/// The decode path's kernels (forward only) against the ops they replace: a linear layer on
/// few rows, alone and with the residual add (each variant, GPU and software: 1, 4 and 8 rows
/// per group; one to four groups; odd sizes; with and
/// without bias), the gate and up projections with SwiGLU in one, RMSNorm, SwiGLU,
/// RoPE into a cache at an offset (rotated and not; the rest of the cache untouched), and
/// attention over a cache longer than one 256-key chunk, grouped heads, padded and causal
/// biases per row or shared, a query whose every key is masked, head sizes 16 and 64; the tied
/// output head on few rows.
async fn inference_kernels_match(device: &Device, rng: &mut Rng) {
    for (rows, width) in [(6, 300), (1, 576), (3, 7), (300, 24)] {
        let x = uniform(rows * width, 3.0, rng);
        let gamma = uniform(width, 1.0, rng);
        let norm = RmsNorm { gamma: Param::from_tensor(tensor(gamma, [width], device)), epsilon: 1e-5 };
        for software in [false, true] {
            sgpo::kernels::set_software_adapter(software);
            let (a, b) = both(|| rms_norm(tensor(x.clone(), [1, rows, width], device), &norm)).await;
            let d = max_diff(&a, &b);
            eprintln!("rms_norm [{rows}, {width}] (software variant {software}): {d:.1e}");
            assert!(d < 1e-5, "rms_norm [{rows}, {width}] (software variant {software}) differs by {d}");
        }
        sgpo::kernels::set_software_adapter(false);
    }
    for (rows, k, n, with_bias) in [(1, 70, 100, false), (3, 50, 40, true), (5, 576, 1536, true), (16, 33, 31, false), (17, 40, 64, true), (64, 128, 96, false)] {
        let x = uniform(rows * k, 2.0, rng);
        let layer = Linear {
            weight: Param::from_tensor(tensor(uniform(k * n, 0.2, rng), [k, n], device)),
            bias: with_bias.then(|| Param::from_tensor(tensor(uniform(n, 1.0, rng), [n], device))),
        };
        for software in [false, true] {
            sgpo::kernels::set_software_adapter(software);
            let (a, b) = both(|| linear(tensor(x.clone(), [1, rows, k], device), &layer)).await;
            let d = max_diff(&a, &b);
            eprintln!("linear [{rows}, {k}] x [{k}, {n}] (bias {with_bias}, software variant {software}): {d:.1e}");
            assert!(d < 1e-4, "linear [{rows}, {k}] x [{k}, {n}] (software variant {software}) differs by {d}");
            let residual = uniform(rows * n, 3.0, rng);
            let added = || linear_add(tensor(x.clone(), [1, rows, k], device), &layer, tensor(residual.clone(), [1, rows, n], device));
            let (a, b) = both(added).await;
            let d = max_diff(&a, &b);
            assert!(d < 1e-4, "linear_add [{rows}, {k}] x [{k}, {n}] (software variant {software}) differs by {d}");
        }
        sgpo::kernels::set_software_adapter(false);
    }
    for (rows, k, n) in [(1, 70, 100), (3, 64, 40), (9, 576, 200)] {
        let x = uniform(rows * k, 2.0, rng);
        let norm = RmsNorm { gamma: Param::from_tensor(tensor(uniform(k, 1.5, rng), [k], device)), epsilon: 1e-5 };
        let proj = |rng: &mut Rng| Linear { weight: Param::from_tensor(tensor(uniform(k * n, 0.3, rng), [k, n], device)), bias: None };
        let (gate, up) = (proj(rng), proj(rng));
        for software in [false, true] {
            sgpo::kernels::set_software_adapter(software);
            let (a, b) = both(|| norm_linear_swiglu(tensor(x.clone(), [1, rows, k], device), &norm, &gate, &up, None)).await;
            // Relative to the outputs' size: products of two sums over k, each scaled by the norm,
            // in another order than burn's (a few float32 roundings of a k = 576 sum).
            let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let d = max_diff(&a, &b) / scale;
            eprintln!("norm_linear_swiglu [{rows}, {k}] x [{k}, {n}] (software variant {software}): {d:.1e} of {scale:.0}");
            assert!(d < 3e-6, "norm_linear_swiglu [{rows}, {k}] x [{k}, {n}] (software variant {software}) differs by {d} of {scale}");
        }
        sgpo::kernels::set_software_adapter(false);
    }
    norm_linear_qkv_matches(device, rng).await;
    for (rows, d, vocab) in [(1, 70, 1000), (3, 64, 257), (8, 576, 3000), (9, 40, 50)] {
        let hidden = uniform(rows * d, 2.0, rng);
        let table = tensor(uniform(vocab * d, 0.5, rng), [vocab, d], device);
        let (a, b) = both(|| tied_head(tensor(hidden.clone(), [rows, d], device), table.clone())).await;
        let d_max = max_diff(&a, &b);
        eprintln!("tied_head [{rows}, {d}] x [{vocab}, {d}]^T: {d_max:.1e}");
        assert!(d_max < 1e-4, "tied_head [{rows}, {d}] x [{vocab}, {d}]^T differs by {d_max}");
    }
    let (g, u) = (uniform(2 * 3 * 700, 6.0, rng), uniform(2 * 3 * 700, 2.0, rng));
    let (a, b) = both(|| swiglu(tensor(g.clone(), [2, 3, 700], device), tensor(u.clone(), [2, 3, 700], device))).await;
    let d = max_diff(&a, &b);
    eprintln!("swiglu: {d:.1e}");
    assert!(d < 1e-5, "swiglu differs by {d}");

    let (batch, heads, hd, cap, len, offset) = (2, 3, 8, 12, 4, 5);
    let table = RopeTable { cos: tensor(uniform(cap * hd / 2, 1.0, rng), [cap, hd / 2], device), sin: tensor(uniform(cap * hd / 2, 1.0, rng), [cap, hd / 2], device) };
    let cache = uniform(batch * heads * cap * hd, 1.0, rng);
    let src = uniform(batch * len * heads * hd, 1.0, rng);
    for rotate in [true, false] {
        let (a, b) = both(|| {
            let dst = tensor(cache.clone(), [batch, heads, cap, hd], device);
            rope_into(dst, tensor(src.clone(), [batch, len, heads * hd], device), &table, offset, offset + 1, rotate)
        })
        .await;
        let d = max_diff(&a, &b);
        eprintln!("rope_into (rotate {rotate}): {d:.1e}");
        assert!(d < 1e-6, "rope_into (rotate {rotate}) differs by {d}");
        assert_eq!(a[..offset * hd], cache[..offset * hd], "positions before the offset are kept");
    }

    for (batch, heads, kv_heads, hd, len_q, len_k, cap, bias_rows) in
        [(2, 6, 2, 16, 3, 270, 300, 2), (1, 9, 3, 64, 1, 40, 64, 1), (3, 4, 4, 64, 2, 2, 8, 3)]
    {
        let q = uniform(batch * heads * len_q * hd, 2.0, rng);
        let k = uniform(batch * kv_heads * cap * hd, 2.0, rng);
        let v = uniform(batch * kv_heads * cap * hd, 2.0, rng);
        let mut bias = vec![0.0; bias_rows * len_q * len_k];
        for (i, b) in bias.iter_mut().enumerate() {
            if i % 7 == 3 || (i / len_k) % len_q == 0 && bias_rows > 1 && i / (len_q * len_k) == 1 {
                *b = MASKED; // some keys hidden; the second row's first query sees none
            }
        }
        let (a, b) = both(|| {
            let (k, v) = (tensor(k.clone(), [batch, kv_heads, cap, hd], device), tensor(v.clone(), [batch, kv_heads, cap, hd], device));
            let bias = tensor(bias.clone(), [bias_rows, 1, len_q, len_k], device);
            cached_attention(tensor(q.clone(), [batch, heads, len_q, hd], device), &k, &v, &bias, len_k)
        })
        .await;
        let d = max_diff(&a, &b);
        eprintln!("cached_attention b{batch} h{heads}/{kv_heads} d{hd} q{len_q} k{len_k}: {d:.1e}");
        assert!(d < 1e-5, "cached_attention [{batch}, {heads}/{kv_heads}, {hd}, q {len_q}, k {len_k}] differs by {d}");
        assert!(a.iter().all(|x| x.is_finite()));
    }
}

/// A decode step's queries, keys and values in one dispatch against the norm, projections and
/// `rope_into` they replace: queries into a fresh tensor, keys (rotated) and values (not) into
/// a cache at an offset whose other positions must stay exactly as they were; biases on all
/// three, none or some; one and several positions per batch row (decode-like and prefill-like),
/// one and two row groups (10 rows), head sizes 8, 16 and 64, grouped and plain heads, pair
/// groups that span heads and the three projections. The software variant takes at most 4 rows
/// (`LINEAR_ROWS_MAX_SOFTWARE`), so only the 1- and 4-row cases run it; the others compare burn
/// with burn there.
async fn norm_linear_qkv_matches(device: &Device, rng: &mut Rng) {
    // Which of q, k and v have a bias: all (Qwen2), none (Llama), or some (the others' part of
    // the joined bias row is zeros).
    for (batch, len, k, heads, kv_heads, hd, cap, offset, biases) in [
        (2, 3, 50, 3, 1, 8, 12, 5, [true; 3]),
        (1, 1, 576, 9, 3, 64, 40, 17, [false; 3]),
        (2, 2, 64, 4, 2, 16, 6, 4, [true, false, true]),
        (5, 2, 40, 2, 2, 8, 7, 3, [false, true, false]),
    ] {
        let x = uniform(batch * len * k, 2.0, rng);
        let norm = RmsNorm { gamma: Param::from_tensor(tensor(uniform(k, 1.5, rng), [k], device)), epsilon: 1e-5 };
        let proj = |n: usize, with_bias: bool, rng: &mut Rng| Linear {
            weight: Param::from_tensor(tensor(uniform(k * n, 0.3, rng), [k, n], device)),
            bias: with_bias.then(|| Param::from_tensor(tensor(uniform(n, 1.0, rng), [n], device))),
        };
        let (wq, wk, wv) = (proj(heads * hd, biases[0], rng), proj(kv_heads * hd, biases[1], rng), proj(kv_heads * hd, biases[2], rng));
        let table = RopeTable {
            cos: tensor(uniform(cap * hd / 2, 1.0, rng), [cap, hd / 2], device),
            sin: tensor(uniform(cap * hd / 2, 1.0, rng), [cap, hd / 2], device),
        };
        let cache = uniform(batch * kv_heads * cap * hd, 1.0, rng);
        for software in [false, true] {
            sgpo::kernels::set_software_adapter(software);
            let run = || {
                let kc = tensor(cache.clone(), [batch, kv_heads, cap, hd], device);
                let vc = tensor(cache.clone(), [batch, kv_heads, cap, hd], device);
                let x = tensor(x.clone(), [batch, len, k], device);
                let [q, kc, vc] = norm_linear_qkv(x, &norm, [&wq, &wk, &wv], (kc, vc), &mut Default::default(), &table, offset);
                Tensor::cat(vec![q.reshape([-1]), kc.reshape([-1]), vc.reshape([-1])], 0)
            };
            let (a, b) = both(run).await;
            let d = max_diff(&a, &b);
            eprintln!("norm_linear_qkv b{batch} len{len} k{k} h{heads}/{kv_heads} d{hd} (biases {biases:?}, software variant {software}): {d:.1e}");
            assert!(d < 1e-4, "norm_linear_qkv b{batch} len{len} k{k} (software variant {software}) differs by {d}");
            let q_len = batch * heads * len * hd;
            for (name, written) in [("keys", &a[q_len..q_len + cache.len()]), ("values", &a[q_len + cache.len()..])] {
                for (i, (new, old)) in written.iter().zip(&cache).enumerate() {
                    let position = (i / hd) % cap;
                    if !(offset..offset + len).contains(&position) {
                        assert_eq!(new, old, "{name} cache at position {position} (element {i}) changed; only {offset}..{} are written", offset + len);
                    }
                }
            }
        }
        sgpo::kernels::set_software_adapter(false);
    }
}

/// The GPU sampler draws the host sampler's tokens for the same logits, seed and row, under
/// greedy, plain temperature, top-k and top-p (and both), vocabularies from 7 to 49152. Exact
/// agreement, on these inputs: the thresholds and the hash are integer work and agree exactly;
/// the Gumbel scores use the GPU's `log`, which may differ from the host's in the last bits, so
/// two scores closer than that could order differently, and top-p compares float sums added in
/// another order: a row whose kept mass crosses `top_p` within rounding could keep one token
/// more or less. Neither happens on these rows; the test would say which row if it did.
async fn sampler_matches_the_host(device: &Device, rng: &mut Rng) {
    use sgpo::generate::{SamplingConfig, sample_row};
    let configs = [
        SamplingConfig::greedy(1),
        SamplingConfig::sampled(1, 1.0),
        SamplingConfig { max_new_tokens: 1, temperature: 0.7, top_k: 40, top_p: 1.0 },
        SamplingConfig { max_new_tokens: 1, temperature: 1.0, top_k: 0, top_p: 0.9 },
        SamplingConfig { max_new_tokens: 1, temperature: 1.3, top_k: 5, top_p: 0.5 },
    ];
    for (rows, vocab) in [(9, 7), (5, 300), (4, 1000), (2, 49_152)] {
        let logits = uniform(rows * vocab, 6.0, rng);
        for cfg in &configs {
            for seed in [1u64, 0xdead_beef_0123_4567] {
                let t = tensor(logits.clone(), [rows, vocab], device);
                let gpu = readback::ints(sgpo::kernels::sample_tokens(t, cfg, seed).await.unwrap()).await.unwrap();
                let host: Vec<i64> = (0..rows).map(|r| sample_row(&logits[r * vocab..(r + 1) * vocab], cfg, seed, r as u32) as i64).collect();
                assert_eq!(gpu, host, "[{rows}, {vocab}], {cfg:?}, seed {seed:#x}");
            }
        }
    }
    eprintln!("sampler: GPU and host drew the same ids");
}

/// AdamW's one-pass update against the rule in burn ops and against the rule worked out on
/// the host: the weight and both moments after it, with decay and without, clipped by the norm
/// the step's report holds on the device and not (no clip, or a norm within it), at a first
/// step (large bias corrections) and a later one, second moments where `eps` decides the step,
/// for sizes below, at and above a workgroup and past one grid row of workgroups; and a report
/// whose loss or norm is not finite leaves weight and moments exactly as they were.
async fn adamw_matches(device: &Device, rng: &mut Rng) {
    // (values, keep, step, the scales of gradient, first and second moment, clip, the
    // report's loss and squared gradient norm)
    let cases = [
        (7, 1.0, 1, 0.1, 0.01, 1e-4, 1.0, 2.5, 0.25),
        (256, 0.999, 3, 0.1, 0.01, 1e-4, 1.0, 2.5, 7.3),
        (1000, 0.99, 1, 1e-9, 1e-9, 1e-17, 0.0, 2.5, 9.0),
        (300, 0.99, 2, 0.1, 0.01, 1e-4, 1.0, f32::NAN, 4.0),
        (300, 0.99, 2, 0.1, 0.01, 1e-4, 1.0, 2.5, f32::INFINITY),
        (16_777_500, 0.999, 50, 0.1, 0.01, 1e-4, 2.0, 2.5, 16.0),
    ];
    for (n, keep, step, g_scale, m_scale, v_scale, max_norm, loss, squares) in cases {
        // Past one grid row natively only: the browser tests are an unoptimised wasm build, where
        // drawing and checking 16.8M values on the host takes minutes; the dispatch geometry is
        // the same code on both.
        if cfg!(target_arch = "wasm32") && n > 65_535 * 256 {
            continue;
        }
        let (w, g, m) = (uniform(n, 1.0, rng), uniform(n, g_scale, rng), uniform(n, m_scale, rng));
        let v: Vec<f32> = uniform(n, v_scale, rng).iter().map(|x| x.abs()).collect();
        let (beta1, beta2, lr, eps) = (0.9f32, 0.999f32, 3e-4f32, 1e-8f32);
        let (bias1, bias2) = (1.0 - beta1.powi(step), 1.0 - beta2.powi(step));
        let rule = AdamWRule { beta1, beta2, lr, keep, bias1, bias2, eps, max_norm };
        // The report as a step leaves it: loss, squared norm, then the step's metrics.
        let report = tensor(vec![loss, squares, 0.5, -0.5], [4], device);
        let mut outs = Vec::new();
        // A second handle on the weight, as a frozen reference model holds one: the update
        // must leave what it reads unchanged (the CPU twin writes in place only when nothing
        // else holds the buffer).
        let shared = tensor(w.clone(), [n], device);
        for kernels in [true, false] {
            sgpo::kernels::set_enabled(kernels);
            let t = |values: &Vec<f32>| tensor(values.clone(), [n], device);
            outs.push(adamw(shared.clone(), t(&g), t(&m), t(&v), report.clone(), rule));
        }
        sgpo::kernels::set_enabled(true);
        assert!(host(shared).await == w, "adamw wrote into a weight another handle still reads");
        let finite = loss.is_finite() && squares.is_finite();
        let norm = squares.sqrt();
        let grad_scale = if max_norm > 0.0 && norm > max_norm { max_norm / (norm + 1e-6) } else { 1.0 };
        let mut expected = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            if !finite {
                expected.0.push(w[i]);
                expected.1.push(m[i]);
                expected.2.push(v[i]);
                continue;
            }
            let g = g[i] * grad_scale;
            let first = beta1 * m[i] + (1.0 - beta1) * g;
            let second = beta2 * v[i] + (1.0 - beta2) * (g * g);
            let delta = (first / bias1) / ((second / bias2).sqrt() + eps);
            expected.0.push(w[i] * keep - delta * lr);
            expected.1.push(first);
            expected.2.push(second);
        }
        for (path, (weight, first, second)) in ["kernel", "burn ops"].into_iter().zip(outs) {
            let (weight, first, second) = (host(weight).await, host(first).await, host(second).await);
            if !finite {
                assert!(weight == w && first == m && second == v, "adamw ({path}): a report of loss {loss}, squared norm {squares} changed the parameter");
                continue;
            }
            let (dw, dm, dv) = (max_diff(&weight, &expected.0), max_diff(&first, &expected.1), max_diff(&second, &expected.2));
            eprintln!("adamw ({path}, {device:?}), {n} values, keep {keep}, step {step}, gradient x {grad_scale}: weight differs by {dw:.1e}, moments by {dm:.1e} / {dv:.1e}");
            assert!(dw < 1e-6 && dm < 1e-8 && dv < 1e-10, "adamw ({path}), {n} values: weight {dw}, first {dm}, second {dv}");
        }
        if finite {
            let moved = max_diff(&expected.0, &w);
            assert!(moved > 1e-6, "the update moved the weights ({moved})");
        }
    }
}

/// RMSNorm, SwiGLU and RoPE under autodiff against burn's ops: the values, and the gradients
/// of every input (the norm's gains included) under a weighted sum of the output; one row and
/// enough rows for several blocks of the gains' sum, widths below and above a vector's.
async fn norm_and_gate_gradients_match(device: &Device, rng: &mut Rng) {
    let device = device.clone().autodiff();
    for (rows, width) in [(1, 7), (6, 300), (130, 64), (300, 24)] {
        let (x, gamma, weights) = (uniform(rows * width, 3.0, rng), uniform(width, 1.5, rng), uniform(rows * width, 1.0, rng));
        // The GPU's variant and the software adapters' (on the CPU backend both are the twin).
        for software in [false, true] {
            sgpo::kernels::set_software_adapter(software);
            let ((fused, plain), (fused_grad, plain_grad)) = both_with_gradient(|| {
                let x = tensor(x.clone(), [1, rows, width], &device).require_grad();
                let norm = RmsNorm { gamma: Param::from_tensor(tensor(gamma.clone(), [width], &device).require_grad()), epsilon: 1e-5 };
                let y = rms_norm(x.clone(), &norm);
                let grads = (y.clone() * tensor(weights.clone(), [1, rows, width], &device)).sum().backward();
                let (dx, dgamma) = (x.grad(&grads).expect("x gets a gradient"), norm.gamma.grad(&grads).expect("the gains get a gradient"));
                (y, Tensor::cat(vec![dx.reshape([rows * width]), dgamma], 0))
            })
            .await;
            let (d, dg) = (max_diff(&fused, &plain), max_diff(&fused_grad, &plain_grad));
            let scale = plain_grad.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            eprintln!("rms_norm with gradients [{rows}, {width}] ({device:?}, software variant {software}): values differ by {d:.1e}, gradients by {dg:.1e} of {scale:.0}");
            assert!(d < 1e-5, "rms_norm [{rows}, {width}] (software variant {software}): values differ by {d}");
            assert!(dg / scale < 1e-5, "rms_norm [{rows}, {width}] (software variant {software}): gradients differ by {dg} of {scale}");
        }
        sgpo::kernels::set_software_adapter(false);

        let (gate, up) = (uniform(rows * width, 6.0, rng), uniform(rows * width, 2.0, rng));
        let ((fused, plain), (fused_grad, plain_grad)) = both_with_gradient(|| {
            let gate = tensor(gate.clone(), [1, rows, width], &device).require_grad();
            let up = tensor(up.clone(), [1, rows, width], &device).require_grad();
            let y = swiglu(gate.clone(), up.clone());
            let grads = (y.clone() * tensor(weights.clone(), [1, rows, width], &device)).sum().backward();
            let (d_gate, d_up) = (gate.grad(&grads).expect("the gate gets a gradient"), up.grad(&grads).expect("up gets a gradient"));
            (y, Tensor::cat(vec![d_gate, d_up], 0))
        })
        .await;
        let (d, dg) = (max_diff(&fused, &plain), max_diff(&fused_grad, &plain_grad));
        eprintln!("swiglu with gradients [{rows}, {width}] ({device:?}): values differ by {d:.1e}, gradients by {dg:.1e}");
        assert!(d < 1e-5, "swiglu [{rows}, {width}]: values differ by {d}");
        assert!(dg < 1e-5, "swiglu [{rows}, {width}]: gradients differ by {dg}");
    }
    // RoPE's rotation of heads split from a projection (a strided view, as the model makes them),
    // and of heads stored as they are rotated (`split: false`).
    for (b, len, heads, hd, split) in [(2, 5, 3, 8, true), (1, 40, 2, 64, true), (2, 7, 2, 16, false)] {
        let (x, weights) = (uniform(b * len * heads * hd, 2.0, rng), uniform(b * len * heads * hd, 1.0, rng));
        let angles = |rng: &mut Rng| tensor(uniform(len * hd / 2, 1.0, rng), [1, 1, len, hd / 2], &device);
        let (cos, sin) = (angles(rng), angles(rng));
        let ((fused, plain), (fused_grad, plain_grad)) = both_with_gradient(|| {
            let (x, y) = if split {
                let x = tensor(x.clone(), [b, len, heads, hd], &device).require_grad();
                (x.clone(), rope(x.swap_dims(1, 2), &cos, &sin))
            } else {
                let x = tensor(x.clone(), [b, heads, len, hd], &device).require_grad();
                (x.clone(), rope(x, &cos, &sin))
            };
            let grads = (y.clone() * tensor(weights.clone(), [b, heads, len, hd], &device)).sum().backward();
            (y, x.grad(&grads).expect("x gets a gradient"))
        })
        .await;
        let (d, dg) = (max_diff(&fused, &plain), max_diff(&fused_grad, &plain_grad));
        eprintln!("rope with gradients [{b}, {heads}, {len}, {hd}] ({device:?}): values differ by {d:.1e}, gradients by {dg:.1e}");
        assert!(d < 1e-6 && dg < 1e-6, "rope [{b}, {heads}, {len}, {hd}]: values differ by {d}, gradients by {dg}");
    }
}

/// The tiled matrix product against burn's matmul, values and both operands' gradients: every
/// way of reading the operands (as stored, or transposed where they lie, the backward's two
/// products included), sizes below, at and across the 64 x 64 tiles and the 16-deep steps of
/// k, several matrices at once; then through its callers, a linear layer with its bias on many
/// rows (training's projections) and the tied output head, each with their gradients.
async fn matmul_matches(device: &Device, rng: &mut Rng) {
    let device = device.clone().autodiff();
    // Relative to the largest value: sums of k products, rounded in another order.
    let check = |what: String, (fused, plain): (Vec<f32>, Vec<f32>)| {
        let scale = plain.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let d = max_diff(&fused, &plain);
        eprintln!("{what}: {d:.1e} of {scale:.1}");
        assert!(d / scale < 2e-6, "{what} differs by {d} of {scale}");
    };
    for [batch, m, k, n] in [[1, 5, 7, 3], [2, 70, 33, 130], [1, 64, 16, 64], [3, 129, 576, 65]] {
        let (a, b, weights) = (uniform(batch * m * k, 1.0, rng), uniform(batch * k * n, 1.0, rng), uniform(batch * m * n, 1.0, rng));
        for transpose_b in [false, true] {
            let b_shape = if transpose_b { [batch, n, k] } else { [batch, k, n] };
            let (values, grads) = both_with_gradient(|| {
                let a = tensor(a.clone(), [batch, m, k], &device).require_grad();
                let b = tensor(b.clone(), b_shape, &device).require_grad();
                let c = matmul(a.clone(), b.clone(), transpose_b);
                let grads = (c.clone() * tensor(weights.clone(), [batch, m, n], &device)).sum().backward();
                let (d_a, d_b) = (a.grad(&grads).expect("a gets a gradient"), b.grad(&grads).expect("b gets a gradient"));
                (c, Tensor::cat(vec![d_a.reshape([batch * m * k]), d_b.reshape([batch * k * n])], 0))
            })
            .await;
            check(format!("matmul [{batch}, {m}, {k}] x {b_shape:?} (b transposed {transpose_b})"), values);
            check(format!("matmul [{batch}, {m}, {k}] x {b_shape:?} (b transposed {transpose_b}): gradients"), grads);
        }
    }
    let (rows, k, n) = (200, 96, 80);
    let (x, w, bias, weights) = (uniform(rows * k, 2.0, rng), uniform(k * n, 0.2, rng), uniform(n, 1.0, rng), uniform(rows * n, 1.0, rng));
    let (values, grads) = both_with_gradient(|| {
        let x = tensor(x.clone(), [2, rows / 2, k], &device).require_grad();
        let layer = Linear { weight: Param::from_tensor(tensor(w.clone(), [k, n], &device).require_grad()), bias: Some(Param::from_tensor(tensor(bias.clone(), [n], &device).require_grad())) };
        let y = linear(x.clone(), &layer);
        let grads = (y.clone() * tensor(weights.clone(), [2, rows / 2, n], &device)).sum().backward();
        let dx = x.grad(&grads).expect("x gets a gradient").reshape([rows * k]);
        let dw = layer.weight.grad(&grads).expect("the weight gets a gradient").reshape([k * n]);
        let db = layer.bias.as_ref().and_then(|b| b.grad(&grads)).expect("the bias gets a gradient");
        (y, Tensor::cat(vec![dx, dw, db], 0))
    })
    .await;
    check(format!("linear [{rows}, {k}] x [{k}, {n}] with bias"), values);
    check(format!("linear [{rows}, {k}] x [{k}, {n}] with bias: gradients"), grads);
    let (vocab, d) = (300, 64);
    let (hidden, table, weights) = (uniform(rows * d, 2.0, rng), uniform(vocab * d, 0.5, rng), uniform(rows * vocab, 1.0, rng));
    let (values, grads) = both_with_gradient(|| {
        let hidden = tensor(hidden.clone(), [rows, d], &device).require_grad();
        let table = tensor(table.clone(), [vocab, d], &device).require_grad();
        let logits = tied_head(hidden.clone(), table.clone());
        let grads = (logits.clone() * tensor(weights.clone(), [rows, vocab], &device)).sum().backward();
        let (dh, dt) = (hidden.grad(&grads).expect("hidden gets a gradient"), table.grad(&grads).expect("the table gets a gradient"));
        (logits, Tensor::cat(vec![dh.reshape([rows * d]), dt.reshape([vocab * d])], 0))
    })
    .await;
    check(format!("tied head [{rows}, {d}] x [{vocab}, {d}]^T"), values);
    check(format!("tied head [{rows}, {d}] x [{vocab}, {d}]^T: gradients"), grads);
    // Attention's products: scores from the keys as stored, then the weighted sum of values.
    let ([b, h, t, hd], scale) = ([2, 3, 70, 16], 0.25f32);
    let (q, k, v, weights) = (uniform(b * h * t * hd, 1.0, rng), uniform(b * h * t * hd, 1.0, rng), uniform(b * h * t * hd, 1.0, rng), uniform(b * h * t * hd, 1.0, rng));
    let (values, grads) = both_with_gradient(|| {
        let [q, k, v] = [&q, &k, &v].map(|x| tensor(x.clone(), [b, h, t, hd], &device).require_grad());
        let scores = matmul4(q.clone(), k.clone(), true).mul_scalar(scale);
        let out = matmul4(scores, v.clone(), false);
        let grads = (out.clone() * tensor(weights.clone(), [b, h, t, hd], &device)).sum().backward();
        let grad = |x: &Tensor<4>| x.grad(&grads).expect("q, k and v get gradients").reshape([b * h * t * hd]);
        (out, Tensor::cat(vec![grad(&q), grad(&k), grad(&v)], 0))
    })
    .await;
    check(format!("attention's products [{b}, {h}, {t}, {hd}]"), values);
    check(format!("attention's products [{b}, {h}, {t}, {hd}]: gradients"), grads);
    // Grouped heads (6 query heads over 2 key/value heads) against keys and values repeated per
    // query head, values and gradients, with the kernels as switched (on).
    let (kv, t) = (2, 9);
    let (q, k, v, weights) = (uniform(b * 6 * t * hd, 1.0, rng), uniform(b * kv * t * hd, 1.0, rng), uniform(b * kv * t * hd, 1.0, rng), uniform(b * 6 * t * hd, 1.0, rng));
    let attend = |repeat: bool| {
        let q = tensor(q.clone(), [b, 6, t, hd], &device).require_grad();
        let [k, v] = [&k, &v].map(|x| tensor(x.clone(), [b, kv, t, hd], &device).require_grad());
        let each = |x: Tensor<4>| if repeat { x.unsqueeze_dim::<5>(2).expand([b, kv, 3, t, hd]).reshape([b, 6, t, hd]) } else { x };
        let scores = matmul4(q.clone(), each(k.clone()), true).mul_scalar(scale);
        let out = matmul4(scores, each(v.clone()), false);
        let grads = (out.clone() * tensor(weights.clone(), [b, 6, t, hd], &device)).sum().backward();
        let grad = |x: &Tensor<4>| x.grad(&grads).expect("q, k and v get gradients").reshape([-1]);
        (out, Tensor::cat(vec![grad(&q), grad(&k), grad(&v)], 0))
    };
    let ((grouped, grouped_grads), (repeated, repeated_grads)) = (attend(false), attend(true));
    check(format!("grouped heads' products [{b}, 6/{kv}, {t}, {hd}]"), (host(grouped).await, host(repeated).await));
    check(format!("grouped heads' products [{b}, 6/{kv}, {t}, {hd}]: gradients"), (host(grouped_grads).await, host(repeated_grads).await));
    let plain_2d = both(|| matmul2(tensor(hidden.clone(), [rows, d], &device), tensor(table.clone(), [vocab, d], &device), true)).await;
    check(format!("matmul2 [{rows}, {d}] x [{vocab}, {d}]^T without autodiff"), plain_2d);
}

/// Attention's weights from scores and mask (forward), and the scores' gradient under a
/// weighted sum of the weights (backward), against burn's scale, add and softmax: the causal
/// mask shared by the batch and a padded one per batch row (a query whose keys are all masked
/// included), keys below, at and above 256, and many rows of three keys.
async fn attention_softmax_matches(device: &Device, rng: &mut Rng) {
    let device = device.clone().autodiff();
    for ([b, h, q, k], per_row) in [([2, 3, 5, 5], false), ([2, 2, 4, 7], true), ([1, 2, 3, 256], true), ([2, 1, 3, 300], false), ([1, 1, 66_000, 3], false)] {
        let scores = uniform(b * h * q * k, 6.0, rng);
        let bias_rows = if per_row { b } else { 1 };
        let mut bias = vec![0.0f32; bias_rows * q * k];
        for (i, value) in bias.iter_mut().enumerate() {
            let (row, query, key) = (i / (q * k), i / k % q, i % k);
            // Causal over the last q of k keys (where q <= k); per batch row, the first
            // `row + 1` keys padding, and in batch row 1 every key of the first query.
            let future = q <= k && key + q > k + query;
            let padded = per_row && (key <= row || (row == 1 && query == 0));
            if future || padded {
                *value = MASKED;
            }
        }
        let weights = uniform(b * h * q * k, 1.0, rng);
        let scale = 0.125f32;
        let ((fused, plain), (fused_grad, plain_grad)) = both_with_gradient(|| {
            let x = Tensor::<4>::from_data(TensorData::new(scores.clone(), [b, h, q, k]), &device).require_grad();
            let mask = Tensor::<4>::from_data(TensorData::new(bias.clone(), [bias_rows, 1, q, k]), &device);
            let w = Tensor::<4>::from_data(TensorData::new(weights.clone(), [b, h, q, k]), &device);
            let p = attention_softmax(x.clone(), mask, scale);
            let grads = (p.clone() * w).sum().backward();
            (p, x.grad(&grads).expect("the scores get a gradient"))
        })
        .await;
        let (d, dg) = (max_diff(&fused, &plain), max_diff(&fused_grad, &plain_grad));
        eprintln!("attention_softmax [{b}, {h}, {q}, {k}] ({device:?}): weights differ by {d:.1e}, gradients by {dg:.1e}");
        assert!(d < 1e-6, "[{b}, {h}, {q}, {k}]: weights differ by {d}");
        assert!(dg < 1e-6, "[{b}, {h}, {q}, {k}]: gradients differ by {dg}");
        for row in fused.chunks(k) {
            let total: f32 = row.iter().sum();
            assert!((total - 1.0).abs() < 1e-5, "a row of weights sums to {total}");
        }
    }
}

/// The gradients' squared sum (clipping's norm), kernel or CPU twin, against f64 and burn's
/// square and sum: five tensors at once and each alone, sizes below, at and across the kernel's
/// 4096-value chunk of one workgroup; integers, whose sum f32 holds exactly in any order; none.
async fn squared_sum_matches(device: &Device, rng: &mut Rng) {
    let sizes = [1, 300, 4096, 4097, 100_000];
    let xs: Vec<Vec<f32>> = sizes.iter().map(|&n| uniform(n, 2.0, rng)).collect();
    let exact = |xs: &[Vec<f32>]| xs.iter().flatten().map(|v| (*v as f64) * (*v as f64)).sum::<f64>();
    for some in [&xs[..], &xs[0..1], &xs[1..2], &xs[3..4], &xs[4..5]] {
        let tensors = || some.iter().map(|x| tensor(x.clone(), [x.len()], device)).collect::<Vec<_>>();
        let (fused, plain) = both(|| squared_sum(&tensors()).expect("tensors given")).await;
        let expected = exact(some);
        let sizes: Vec<usize> = some.iter().map(Vec::len).collect();
        eprintln!("squared_sum of {sizes:?} values ({device:?}): {} (kernel) vs {} (burn) vs {expected} (f64)", fused[0], plain[0]);
        assert!(((fused[0] as f64) - expected).abs() <= 1e-5 * expected, "squared_sum of {sizes:?}: {} vs {expected}", fused[0]);
        assert!(((plain[0] as f64) - expected).abs() <= 1e-4 * expected, "burn's sum of {sizes:?}: {} vs {expected}", plain[0]);
    }
    let ints: Vec<f32> = (0..50_000).map(|i| (i % 7) as f32 - 3.0).collect();
    let (fused, _) = both(|| squared_sum(&[tensor(ints.clone(), [50_000], device), tensor(ints[..9].to_vec(), [9], device)]).expect("tensors given")).await;
    assert_eq!(fused[0], ints.iter().chain(&ints[..9]).map(|v| v * v).sum::<f32>());
    assert!(squared_sum(&[]).is_none());
}

/// The fused log-softmax + gather (forward: log-probs; backward: the logits' gradient under a
/// weighted sum of them, as the SFT and DPO losses take it) gives what burn's log_softmax and
/// gather give, for vocabularies below, at and above the workgroup width, and for more rows
/// than one grid dimension holds.
async fn token_logprobs_match(device: &Device, rng: &mut Rng) {
    let device = device.clone().autodiff();
    for (b, t, v) in [(2, 5, 300), (1, 3, 7), (3, 2, 256), (2, 4, 1000), (1, 66_000, 3)] {
        let logits = uniform(b * t * v, 8.0, rng);
        let targets: Vec<i32> = (0..b * t).map(|i| if i % 5 == 0 { v as i32 - 1 } else { rng.below(v) as i32 }).collect();
        let weights = uniform(b * t, 1.0, rng);
        let ((fused, plain), (fused_grad, plain_grad)) = both_with_gradient(|| {
            let x = Tensor::<3>::from_data(TensorData::new(logits.clone(), [b, t, v]), &device).require_grad();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(targets.clone(), [b, t]), &device);
            let w = Tensor::<2>::from_data(TensorData::new(weights.clone(), [b, t]), &device);
            let lp = token_logprobs(x.clone(), ids);
            let grads = (lp.clone() * w).sum().backward();
            (lp, x.grad(&grads).expect("the logits get a gradient"))
        })
        .await;
        let (d, dg) = (max_diff(&fused, &plain), max_diff(&fused_grad, &plain_grad));
        eprintln!("token_logprobs [{b}, {t}, {v}] ({device:?}): log-probs differ by {d:.1e}, gradients by {dg:.1e}");
        assert!(d < 1e-5, "[{b}, {t}, {v}]: log-probs differ by {d}");
        assert!(dg < 1e-6, "[{b}, {t}, {v}]: gradients differ by {dg}");
        assert!(fused.iter().all(|x| x.is_finite() && *x <= 0.0));
    }
}

/// The CPU's products from packed weights (`packed.rs`: 9 to 16 rows, CPUs with AVX-512)
/// against burn's: a projection with its bias and a residual, the tied head from its table
/// packed transposed, and a tiny model's cached decode of twelve rows, whose cache packs every
/// weight, against the same decode through burn's ops. Elsewhere weights are not packed.
async fn packed_products_match(device: &Device, rng: &mut Rng) {
    if !packing_applies(device) {
        assert!(pack(tensor(vec![0.0; 32], [2, 16], device), false).is_none(), "nothing is packed where packing does not apply");
        eprintln!("packed products: not on {device:?} here (no AVX-512, or not the CPU backend)");
        return;
    }
    let relative = |(a, b): (Vec<f32>, Vec<f32>)| max_diff(&a, &b) / b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (rows, k, n) in [(9, 576, 192), (12, 40, 48), (16, 96, 1536)] {
        let x = uniform(rows * k, 2.0, rng);
        let layer = Linear { weight: Param::from_tensor(tensor(uniform(k * n, 0.3, rng), [k, n], device)), bias: Some(Param::from_tensor(tensor(uniform(n, 1.0, rng), [n], device))) };
        let residual = uniform(rows * n, 1.0, rng);
        let packed = pack(layer.weight.val(), false).expect("a weight of whole blocks is packed");
        assert_eq!(packed.dims(), [n / 16, k, 16]);
        let added = |packed: Option<&Tensor<3>>| linear_decoding(tensor(x.clone(), [1, rows, k], device), &layer, packed, Some(tensor(residual.clone(), [1, rows, n], device)));
        let d = relative(both(|| added(Some(&packed))).await);
        eprintln!("packed linear_add [{rows}, {k}] x [{k}, {n}]: {d:.1e}");
        assert!(d < 1e-5, "packed linear_add [{rows}, {k}] x [{k}, {n}] differs by {d} (relative)");
        // Outside 9 to 16 rows the packed weight is passed over: the same bits as without it.
        let few = |packed: Option<&Tensor<3>>| linear_decoding(tensor(x[..8 * k].to_vec(), [1, 8, k], device), &layer, packed, None);
        assert_eq!(host(few(Some(&packed))).await, host(few(None)).await, "8 rows take the row-major product");
    }
    let (rows, d, vocab) = (11, 64, 320);
    let hidden = uniform(rows * d, 2.0, rng);
    let table = tensor(uniform(vocab * d, 0.5, rng), [vocab, d], device);
    let packed = pack(table.clone(), true).expect("the table is packed");
    let diff = relative(both(|| tied_head_decoding(tensor(hidden.clone(), [rows, d], device), table.clone(), Some(&packed))).await);
    eprintln!("packed tied head [{rows}, {d}] x [{vocab}, {d}]^T: {diff:.1e}");
    assert!(diff < 1e-5, "packed tied head differs by {diff} (relative)");
    // Twelve rows of a tiny model (every width a multiple of 16), prefill and three steps, with
    // the head tied and, with attention biases, untied.
    let tied = sgpo::config::ModelConfig::tiny(256);
    let untied = sgpo::config::ModelConfig { tie_embeddings: false, attention_bias: true, ..tied.clone() };
    for config in [tied, untied] {
        let model = config.init(3, device);
        let prompts: Vec<Vec<i32>> = (0..12).map(|r| (0..5).map(|i| ((r * 7 + i * 3) % 256) as i32).collect()).collect();
        let steps: Vec<Vec<i32>> = (0..3).map(|s| (0..12).map(|r| ((r * 5 + s * 11) % 256) as i32).collect()).collect();
        let pads: Vec<usize> = (0..12).map(|r| r % 3).collect();
        let mut cache = sgpo::model::KvCache::new(8);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(prompts.concat(), [12, 5]), device);
        drop(model.last_logits(ids, sgpo::model::padded_bias(&vec![vec![true; 5]; 12], 5, device), Some(&mut cache)));
        assert!(cache.is_packed(), "a cache for twelve rows packs the weights");
        let decode = || async { model.forced_decode_logits(&prompts, &pads, &steps, device).await.unwrap() };
        sgpo::kernels::set_enabled(true);
        let packed = decode().await;
        sgpo::kernels::set_enabled(false);
        let plain = decode().await;
        sgpo::kernels::set_enabled(true);
        let diff = relative((packed, plain));
        eprintln!("tiny model (tied head {}), cached decode of 12 rows from packed weights: {diff:.1e}", config.tie_embeddings);
        assert!(diff < 1e-5, "the cached decode from packed weights differs by {diff} (relative)");
    }
}
