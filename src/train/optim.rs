//! The optimiser side of every trainer: AdamW from its config, the learning-rate schedule,
//! global-norm gradient clipping, and the optimiser state in and out of checkpoints.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};

use super::adamw::AdamW;
use crate::checkpoint::OPTIMIZER_FILE;
use crate::config::OptimConfig;
use crate::error::{Error, Result};
use crate::kernels;
use crate::model::Model;
use crate::readback;

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

/// Sum of squared gradients over every parameter, on the device.
struct GradSquares<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for GradSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let n = g.shape().num_elements();
            let s = kernels::squared_sum(g.reshape([n]));
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

/// What a step reports, and the clipping factor its update applies.
pub struct StepRead {
    pub loss: f32,
    /// The gradients' global L2 norm, before clipping.
    pub grad_norm: f32,
    /// The values of the tensors the step asked for, in order, concatenated.
    pub also: Vec<f32>,
    /// `max_norm / (norm + 1e-6)` where the norm exceeds `max_norm`, else 1: the factor
    /// [`AdamW::step`] multiplies the gradients by (in the update's own pass).
    pub grad_scale: f32,
}

/// What a step reports, read back from the device in one piece (the step's only wait for it):
/// its `loss`, the gradients' global L2 norm, then the values of `also`. A step whose loss or
/// norm is not finite is refused (named by `stage` and `step`) before anything is applied;
/// otherwise the factor that clips the gradients to a norm of `max_norm` (0: no clipping) comes
/// back with them.
pub async fn read_step(
    model: &Model,
    grads: &GradientsParams,
    loss: Tensor<1>,
    also: Vec<Tensor<1>>,
    max_norm: f32,
    (stage, step): (&str, usize),
) -> Result<StepRead> {
    let loss = loss.inner();
    let mut squares = GradSquares { grads, total: None };
    model.visit(&mut squares);
    let squares = squares.total.unwrap_or_else(|| Tensor::zeros([1], &loss.device()));
    let reported = [loss, squares].into_iter().chain(also.into_iter().map(|t| t.inner())).collect();
    let mut read = readback::floats(Tensor::cat(reported, 0)).await?;
    let also = read.split_off(2);
    let (loss, grad_norm) = (read[0], read[1].sqrt());
    Error::check_finite(stage, step, loss, grad_norm)?;
    let grad_scale = if max_norm > 0.0 && grad_norm > max_norm { max_norm / (grad_norm + 1e-6) } else { 1.0 };
    Ok(StepRead { loss, grad_norm, also, grad_scale })
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
