//! Training steps' numbers, read back a few steps at a time. Each step leaves its report on the
//! device (`[loss, squared gradient sum, metrics..]`), which its own update reads there
//! (clipping's norm; a step that is not finite changes nothing); the host reads the reports of
//! several steps in one piece, so the device is not drained after every step, and every step is
//! still recorded with its own exact numbers.

use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::metrics::rate;
use crate::readback;

/// Steps between reads unless a driver says otherwise.
pub const READ_EVERY: usize = 8;

/// A step's numbers as read: its loss, the gradients' global L2 norm before clipping, and the
/// values of the metrics the step asked for, in its order.
pub struct StepValues {
    pub loss: f32,
    pub grad_norm: f32,
    pub also: Vec<f32>,
}

/// A metric record whose numbers are filled in once read.
pub trait Reported {
    /// The stage and step an error about this step names.
    fn stage_step(&self) -> (&str, usize);
    /// Take the step's numbers, and the throughput of the steps read with it.
    fn fill(&mut self, values: StepValues, tokens_per_s: f32);
}

/// The reports not yet read, oldest first.
pub struct StepReports<R> {
    /// Steps between reads; 1 reads each step before it is applied (what skipping a step
    /// that is not finite needs).
    pub read_every: usize,
    pending: Vec<(Tensor<1>, R)>,
    /// When the first unread step began, and the tokens of the unread steps.
    since: f64,
    tokens: usize,
    /// A step read as not finite after steps that were fine: their records went out first,
    /// this is the trainer's next answer.
    failed: Option<Error>,
}

impl<R: Reported> StepReports<R> {
    pub fn new(read_every: usize) -> Self {
        Self { read_every, pending: Vec::new(), since: 0.0, tokens: 0, failed: None }
    }

    /// Nothing waits: no report unread, no error untold.
    pub fn is_clear(&self) -> bool {
        self.pending.is_empty() && self.failed.is_none()
    }

    /// An error a read found and has not told yet (a trainer asks before its next step).
    pub fn check(&mut self) -> Result<()> {
        self.failed.take().map_or(Ok(()), Err)
    }

    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Queue a step's `report` and its record, the step begun at `started` and run over
    /// `tokens`: true when a read is due.
    pub fn push(&mut self, report: Tensor<1>, record: R, started: f64, tokens: usize) -> bool {
        if self.pending.is_empty() {
            (self.since, self.tokens) = (started, 0);
        }
        self.tokens += tokens;
        self.pending.push((report, record));
        self.pending.len() >= self.read_every.max(1)
    }

    /// Every queued report in one read: the records filled in, in step order, each with the
    /// throughput of them all (the steps overlapped on the device, so no one step has a time of
    /// its own). The first step whose loss or gradient norm is not finite is an error naming
    /// it (its update changed nothing): returned now when it is the first step read, else kept
    /// for the next call ([`StepReports::check`]) while the records before it are returned, so
    /// that they are logged. The queue is emptied either way.
    pub async fn read(&mut self) -> Result<Vec<R>> {
        self.check()?;
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let (reports, records): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending).into_iter().unzip();
        let lengths: Vec<usize> = reports.iter().map(|r| r.dims()[0]).collect();
        let mut values = readback::floats(Tensor::cat(reports, 0)).await?.into_iter();
        let tokens_per_s = rate(self.tokens, self.since);
        let mut filled = Vec::with_capacity(records.len());
        for (mut record, len) in records.into_iter().zip(lengths) {
            let mut step: Vec<f32> = values.by_ref().take(len).collect();
            let also = step.split_off(2);
            let (loss, grad_norm) = (step[0], step[1].sqrt());
            let (stage, step) = record.stage_step();
            if let Err(e) = Error::check_finite(stage, step, loss, grad_norm) {
                if filled.is_empty() {
                    return Err(e);
                }
                self.failed = Some(e);
                break;
            }
            record.fill(StepValues { loss, grad_norm, also }, tokens_per_s);
            filled.push(record);
        }
        Ok(filled)
    }

    /// Every queued report read, each record handed to `on_record`; a step read as not finite
    /// is the error, after the records of the steps before it.
    pub async fn flush(&mut self, on_record: &mut dyn FnMut(R)) -> Result<()> {
        self.read().await?.into_iter().for_each(on_record);
        self.check()
    }
}
