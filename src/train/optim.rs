//! The optimiser side of every trainer: AdamW from its config, the learning-rate schedule,
//! each step's report (loss and gradient norm, for clipping and the logs), and the optimiser
//! state in and out of checkpoints.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};

use super::adamw::AdamW;
use crate::checkpoint::OPTIMIZER_FILE;
use crate::config::OptimConfig;
use crate::error::{Error, Result};
use crate::kernels;
use crate::model::Model;

/// The device gradients are recorded on: the one place a trainer turns `device` into burn's
/// autodiff device (the same device when it already is one).
pub fn autodiff(device: &Device) -> Device {
    device.clone().autodiff()
}

impl OptimConfig {
    /// Linear warm-up, then cosine decay to `min_lr_ratio * lr` at `total` steps.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let min = self.lr * self.min_lr_ratio;
        min + (self.lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }

    pub fn init(&self) -> AdamW {
        AdamW::new(self)
    }
}

/// Every parameter's gradient, flattened, in the model's order.
struct FlatGradients<'a> {
    grads: &'a GradientsParams,
    flat: Vec<Tensor<1>>,
}

impl ModuleVisitor for FlatGradients<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let n = g.shape().num_elements();
            self.flat.push(g.reshape([n]));
        }
    }
}

/// A step's report, where the step computed it: `[loss, squared sum of every gradient, the
/// values of also..]`, outside the autodiff graph. Its update reads it there (clipping's norm,
/// and nothing changes when the loss or norm is not finite: [`AdamW::step`]); the host reads
/// it later, a few steps together ([`super::StepReports`]).
pub fn step_report(model: &Model, grads: &GradientsParams, loss: Tensor<1>, also: Vec<Tensor<1>>) -> Tensor<1> {
    let loss = loss.inner();
    let mut gradients = FlatGradients { grads, flat: Vec::new() };
    model.visit(&mut gradients);
    let squares = kernels::squared_sum(&gradients.flat).unwrap_or_else(|| Tensor::zeros([1], &loss.device()));
    Tensor::cat([loss, squares].into_iter().chain(also.into_iter().map(|t| t.inner())).collect(), 0)
}

/// A saved optimiser state (`optimizer.safetensors`), which a resumed run needs: AdamW's moments
/// restarted from zero would take steps far larger than the run was taking.
pub fn load_optimizer(config: &OptimConfig, bytes: Option<&[u8]>) -> Result<AdamW> {
    match bytes {
        Some(bytes) => AdamW::from_bytes(config, bytes, OPTIMIZER_FILE),
        None => Err(Error::checkpoint(
            OPTIMIZER_FILE,
            "missing from the checkpoint, so the run cannot resume exactly (checkpoints written before \
             sgpo kept its own AdamW hold burn's optimizer.bpk, which is not read; the checkpoint's \
             model.bpk can still start a new run)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let o = OptimConfig { lr: 1.0, warmup_steps: 10, min_lr_ratio: 0.1, ..Default::default() };
        assert!((o.lr_at(0, 100) - 0.1).abs() < 1e-12);
        assert!((o.lr_at(9, 100) - 1.0).abs() < 1e-12);
        assert!((o.lr_at(10, 100) - 1.0).abs() < 1e-12);
        assert!((o.lr_at(55, 100) - 0.55).abs() < 1e-9);
        assert!((o.lr_at(100, 100) - 0.1).abs() < 1e-12);
        assert!(o.lr_at(30, 100) > o.lr_at(60, 100));
    }
}
