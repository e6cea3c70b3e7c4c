//! AdamW, with burn's update rule and our own state. Owning the moments lets a checkpoint read
//! them back asynchronously (burn 0.22 serialises its optimiser with blocking reads, which
//! WebGPU cannot do, so a browser run used to resume with fresh moments) and key them by
//! parameter path rather than by burn's in-process parameter ids.
//!
//! Update, per parameter with a gradient `g` at step `t` (as burn's `AdamW`):
//! `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g^2`,
//! `w = w (1 - lr wd) - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)`,
//! except that vectors (RMSNorm gains) are not decayed, as in nanoGPT and TRL: decay pulls a
//! gain towards 0, which is not a simpler model but a differently scaled one.

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::config::OptimConfig;
use crate::error::{Error, Result};
use crate::kernels::{self, AdamWRule};
use crate::model::NamedTensor;
use crate::model::export::safetensors_with;

/// The `format` the saved state declares; anything else is refused.
const FORMAT: &str = "sgpo-adamw-1";
const EPSILON: f32 = 1e-8;

/// One parameter's moments, flattened (the update is elementwise), and its step count.
#[derive(Clone)]
struct Moments {
    first: Tensor<1>,
    second: Tensor<1>,
    time: i32,
}

#[derive(Clone)]
pub struct AdamW {
    beta1: f32,
    beta2: f32,
    weight_decay: f32,
    /// Global gradient-norm clip (0: none).
    max_norm: f32,
    /// By parameter path (`blocks.0.attention.wq.weight`).
    moments: BTreeMap<String, Moments>,
}

impl AdamW {
    pub fn new(config: &OptimConfig) -> Self {
        let (beta1, beta2, weight_decay, max_norm) = (config.beta1, config.beta2, config.weight_decay, config.grad_clip);
        Self { beta1, beta2, weight_decay, max_norm, moments: BTreeMap::new() }
    }

    /// Apply one update with learning rate `lr` to every parameter of `module` that `grads`
    /// holds a gradient for; the others (frozen weights) are left as they are. `report` is the
    /// step's `[loss, squared sum of the gradients, ..]` on the device: the gradients are
    /// clipped to the configured global norm by it, and a step whose loss or norm is not finite
    /// changes nothing (see [`kernels::adamw`]), all without the host reading it.
    pub fn step<M: Module>(&mut self, lr: f64, report: Tensor<1>, module: M, mut grads: GradientsParams) -> M {
        module.map(&mut Update { optim: self, grads: &mut grads, lr, report, path: Vec::new() })
    }

    /// The state as safetensors bytes: `PATH.exp_avg` and `PATH.exp_avg_sq` (F32, flat), each
    /// parameter's step count in the metadata. Read back asynchronously, so the browser saves it too.
    pub async fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors = Vec::with_capacity(2 * self.moments.len());
        let mut info = HashMap::from([("format".to_string(), FORMAT.to_string())]);
        for (path, m) in &self.moments {
            for (suffix, t) in [("exp_avg", &m.first), ("exp_avg_sq", &m.second)] {
                tensors.push(NamedTensor { name: format!("{path}.{suffix}"), shape: t.dims().to_vec(), values: t.clone() });
            }
            info.insert(format!("{path}.step"), m.time.to_string());
        }
        safetensors_with(tensors, info).await
    }

    /// The state `to_bytes` wrote; `file` names the bytes in errors. The moments wait on the
    /// host and move to their parameter's device at its first update.
    pub fn from_bytes(config: &OptimConfig, bytes: &[u8], file: &str) -> Result<Self> {
        let bad = |why: String| Error::checkpoint(file, why);
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a readable optimiser state: {e}")))?;
        let info = header.metadata().clone().unwrap_or_default();
        if info.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!("not an sgpo AdamW state (format {:?}, expected {FORMAT:?})", info.get("format"))));
        }
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a readable optimiser state: {e}")))?;
        let read = |name: &str| -> Result<Tensor<1>> {
            let view = tensors.tensor(name).map_err(|e| bad(format!("{name}: {e}")))?;
            if view.dtype() != Dtype::F32 {
                return Err(bad(format!("{name}: {:?}, expected F32", view.dtype())));
            }
            let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let n = values.len();
            Ok(Tensor::from_data(TensorData::new(values, [n]), &Device::flex()))
        };
        let mut optim = Self::new(config);
        for (key, steps) in &info {
            let Some(path) = key.strip_suffix(".step") else { continue };
            let time = steps.parse().map_err(|_| bad(format!("{key} = {steps:?} is not a step count")))?;
            let (first, second) = (read(&format!("{path}.exp_avg"))?, read(&format!("{path}.exp_avg_sq"))?);
            optim.moments.insert(path.to_string(), Moments { first, second, time });
        }
        Ok(optim)
    }

}

struct Update<'a> {
    optim: &'a mut AdamW,
    grads: &'a mut GradientsParams,
    lr: f64,
    report: Tensor<1>,
    path: Vec<String>,
}

impl ModuleMapper for Update<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else { return param };
        let path = self.path.join(".");
        let AdamW { beta1, beta2, weight_decay, max_norm, .. } = *self.optim;
        let (lr, report) = (self.lr, self.report.clone());
        let moments = &mut self.optim.moments;
        param.map(|tensor| {
            let (shape, require_grad) = (tensor.shape(), tensor.is_require_grad());
            let n = shape.num_elements();
            let grad = grad.reshape([n]);
            let on_device = |t: Tensor<1>| if t.device() == grad.device() { t } else { t.to_device(&grad.device()) };
            // A parameter's first update starts from zero moments, which is the rule's own start.
            let (first, second, time) = match moments.remove(&path) {
                Some(m) => {
                    // The kernel reads as many moments as the weight has values, unchecked.
                    let saved = (m.first.dims()[0], m.second.dims()[0]);
                    assert_eq!(saved, (n, n), "the optimiser state of {path} has {saved:?} moments for {n} weights");
                    (on_device(m.first), on_device(m.second), m.time + 1)
                }
                None => (Tensor::zeros([n], &grad.device()), Tensor::zeros([n], &grad.device()), 1),
            };
            let decay = if D == 1 { 0.0 } else { lr * weight_decay as f64 };
            let rule = AdamWRule {
                beta1,
                beta2,
                lr: lr as f32,
                keep: (1.0 - decay) as f32,
                bias1: 1.0 - beta1.powi(time),
                bias2: 1.0 - beta2.powi(time),
                eps: EPSILON,
                max_norm,
            };
            let report = on_device(report);
            let (weights, first, second) = kernels::adamw(tensor.inner().reshape([n]), grad, first, second, report, rule);
            moments.insert(path, Moments { first, second, time });
            let updated = Tensor::from_inner(weights.reshape(shape));
            if require_grad { updated.require_grad() } else { updated }
        })
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::tensor::{Device, Tensor};

    use super::*;
    use crate::train::autodiff;

    #[derive(Module, Debug)]
    struct Two {
        gain: Param<Tensor<1>>,
        weight: Param<Tensor<2>>,
    }

    /// A step's report as the trainers leave it on the device, `[loss, squared gradient sum]`,
    /// outside the autodiff graph as theirs is.
    fn report(loss: f32, squares: f32, device: &Device) -> Tensor<1> {
        Tensor::<1>::from_data(TensorData::new(vec![loss, squares], [2]), device).inner()
    }

    /// Two updates with constant gradients, the second clipped to about half (a reported norm of
    /// 2 against a clip of 1), follow the rule worked out by hand: moments, bias corrections by
    /// step count, decay on the matrix only.
    #[test]
    fn two_steps_follow_the_rule() {
        let device = autodiff(&Device::flex());
        let mut two = Two {
            gain: Param::from_tensor(Tensor::<1>::ones([3], &device).require_grad()),
            weight: Param::from_tensor(Tensor::<2>::ones([2, 3], &device).require_grad()),
        };
        let config = OptimConfig { weight_decay: 0.5, grad_clip: 1.0, ..OptimConfig::default() };
        let (b1, b2, lr, wd) = (config.beta1, config.beta2, 0.1f32, 0.5f32);
        let mut optim = AdamW::new(&config);
        // d loss / d gain = 2, d loss / d weight = -3, at every step.
        let (mut gain, mut weight, mut m, mut v) = ([1.0f32; 2], [1.0f32; 2], [0.0f32; 2], [0.0f32; 2]);
        for step in 1..=2 {
            let loss = two.gain.val().sum().mul_scalar(2.0) + two.weight.val().sum().mul_scalar(-3.0);
            let grads = GradientsParams::from_grads(loss.backward(), &two);
            // Norms of 0.5 (within the clip) and 2 as the report says (not the gradients' own).
            let (squares, grad_scale) = if step == 1 { (0.25, 1.0) } else { (4.0, 1.0 / (2.0 + 1e-6)) };
            two = optim.step(lr as f64, report(1.0, squares, &device), two, grads);
            for (i, g) in [2.0f32 * grad_scale, -3.0 * grad_scale].into_iter().enumerate() {
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                let delta = (m[i] / (1.0 - b1.powi(step))) / ((v[i] / (1.0 - b2.powi(step))).sqrt() + EPSILON);
                if i == 0 {
                    gain[0] -= lr * delta;
                } else {
                    weight[0] = weight[0] * (1.0 - lr * wd) - lr * delta;
                }
            }
        }
        let values = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
        for got in values(two.gain.val()) {
            assert!((got - gain[0]).abs() < 1e-6, "gain {got} vs {}", gain[0]);
        }
        for got in values(two.weight.val().reshape([6])) {
            assert!((got - weight[0]).abs() < 1e-6, "weight {got} vs {}", weight[0]);
        }
        assert!(gain[0] < 0.81 && weight[0] > 1.09, "both moved by about 2 lr, in opposite directions");
    }

    /// With a zero gradient the update is decay alone: the matrix shrinks by `1 - lr wd`, the
    /// gain (a vector) keeps its value.
    #[test]
    fn weight_decay_spares_vectors() {
        let device = autodiff(&Device::flex());
        let two = Two {
            gain: Param::from_tensor(Tensor::<1>::ones([3], &device).require_grad()),
            weight: Param::from_tensor(Tensor::<2>::ones([2, 3], &device).require_grad()),
        };
        let loss = (two.gain.val().sum() + two.weight.val().sum()).mul_scalar(0.0);
        let grads = GradientsParams::from_grads(loss.backward(), &two);
        let config = OptimConfig { weight_decay: 0.5, ..OptimConfig::default() };
        let two = AdamW::new(&config).step(0.1, report(0.0, 0.0, &device), two, grads);
        let values = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(values(two.gain.val()), vec![1.0; 3]);
        for w in values(two.weight.val().reshape([6])) {
            assert!((w - 0.95).abs() < 1e-6, "{w}");
        }
    }

    /// A step whose report holds a NaN loss or an infinite norm changes neither weights nor
    /// moments (its step count still advances: only a run that stops at the next read gets
    /// there, since a run that skips such steps reads each one before applying it).
    #[test]
    fn a_step_reported_not_finite_changes_nothing() {
        let device = autodiff(&Device::flex());
        let fresh = || Two {
            gain: Param::from_tensor(Tensor::<1>::ones([3], &device).require_grad()),
            weight: Param::from_tensor(Tensor::<2>::ones([2, 3], &device).require_grad()),
        };
        let values = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
        let step = |optim: &mut AdamW, two: Two, report: Tensor<1>| {
            let loss = two.gain.val().sum().mul_scalar(2.0) + two.weight.val().sum().mul_scalar(-3.0);
            let grads = GradientsParams::from_grads(loss.backward(), &two);
            optim.step(0.1, report, two, grads)
        };
        let config = OptimConfig::default();
        let mut optim = AdamW::new(&config);
        let mut two = fresh();
        for bad in [report(f32::NAN, 1.0, &device), report(1.0, f32::INFINITY, &device)] {
            two = step(&mut optim, two, bad);
            assert_eq!(values(two.gain.val()), vec![1.0; 3]);
            assert_eq!(values(two.weight.val().reshape([6])), vec![1.0; 6]);
        }
        for (path, m) in &optim.moments {
            assert!(values(m.first.clone()).iter().chain(&values(m.second.clone())).all(|&x| x == 0.0), "{path}: moments moved");
        }
        let after = step(&mut optim, two, report(1.0, 0.25, &device));
        assert!(values(after.gain.val())[0] < 1.0, "the finite step moved the gain");
    }
}
