//! Our WGSL kernels (`shaders/`) against the plain burn composition each replaces, on burn's
//! wgpu backend (lavapipe on CI): values, and gradients where they train. One test function:
//! the kernels switch is process-wide, and tests in one binary run in parallel.

use burn::tensor::{Device, DeviceKind, Int, Tensor, TensorData};

use sgpo::rng::Rng;
use sgpo::kernels::token_logprobs;

fn uniform(n: usize, scale: f32, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| (2.0 * rng.next_f32() - 1.0) * scale).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The fused log-softmax + gather (forward: log-probs; backward: the logits' gradient under a
/// weighted sum of them, as the SFT and DPO losses take it) gives what burn's log_softmax and
/// gather give, for vocabularies below, at and above the workgroup width, and for more rows
/// than one grid dimension holds.
#[test]
fn kernels_match_the_burn_ops_they_replace() {
    sgpo::device::probe_wgpu().expect("no wgpu adapter: install a Vulkan driver (CI installs mesa-vulkan-drivers for lavapipe)");
    let device = Device::wgpu(DeviceKind::DefaultDevice).autodiff();
    let mut rng = Rng::new(5);
    for (b, t, v) in [(2, 5, 300), (1, 3, 7), (3, 2, 256), (2, 4, 1000), (1, 66_000, 3)] {
        let logits = uniform(b * t * v, 8.0, &mut rng);
        let targets: Vec<i32> = (0..b * t).map(|i| if i % 5 == 0 { v as i32 - 1 } else { rng.below(v) as i32 }).collect();
        let weights = uniform(b * t, 1.0, &mut rng);
        let run = |kernels: bool| -> (Vec<f32>, Vec<f32>) {
            sgpo::kernels::set_enabled(kernels);
            let x = Tensor::<3>::from_data(TensorData::new(logits.clone(), [b, t, v]), &device).require_grad();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(targets.clone(), [b, t]), &device);
            let w = Tensor::<2>::from_data(TensorData::new(weights.clone(), [b, t]), &device);
            let lp = token_logprobs(x.clone(), ids);
            let grads = (lp.clone() * w).sum().backward();
            let grad = x.grad(&grads).expect("the logits get a gradient");
            (lp.into_data().iter::<f32>().collect(), grad.into_data().iter::<f32>().collect())
        };
        let (fused, fused_grad) = run(true);
        let (plain, plain_grad) = run(false);
        sgpo::kernels::set_enabled(true);
        let (d, dg) = (max_diff(&fused, &plain), max_diff(&fused_grad, &plain_grad));
        eprintln!("[{b}, {t}, {v}]: log-probs differ by {d:.1e}, gradients by {dg:.1e}");
        assert!(d < 1e-5, "[{b}, {t}, {v}]: log-probs differ by {d}");
        assert!(dg < 1e-6, "[{b}, {t}, {v}]: gradients differ by {dg}");
        assert!(fused.iter().all(|x| x.is_finite() && *x <= 0.0));
    }
}
