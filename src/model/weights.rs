//! Weights in and out: the `model.bpk` bytes a checkpoint holds, the same natively and in the
//! browser. (Loaders of other formats belong beside these.)

use burn::module::{Module, ParamGroup};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};

use super::Model;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::readback;

/// Serialise the weights (read back asynchronously, so this works on WebGPU too).
pub async fn model_bytes(model: &Model) -> Result<Vec<u8>> {
    let bytes = readback::host_copy(model)
        .await?
        .into_record()
        .into_bytes()
        .map_err(|e| Error::Config(format!("cannot serialise the model: {e}")))?;
    Ok(bytes.to_vec())
}

/// Where adapters sit in a model's parameter paths (`blocks.0.adapters.q.a`).
const ADAPTERS: &str = "adapters.";

/// The LoRA adapters alone: the checkpoint of a run that reopens its frozen base from the
/// model file it started from (megabytes instead of the whole model at every save).
pub async fn adapter_bytes(model: &Model) -> Result<Vec<u8>> {
    let bytes = readback::host_copy_where(model, ADAPTERS)
        .await?
        .into_record_group(ParamGroup::from_predicate(ADAPTERS))
        .into_bytes()
        .map_err(|e| Error::Config(format!("cannot serialise the adapters: {e}")))?;
    Ok(bytes.to_vec())
}

/// `model` (its base, and adapters of the saved shape) with the adapters in `bytes`, written by
/// [`adapter_bytes`]; `source` names them in errors.
pub fn load_adapters(model: Model, bytes: &[u8], source: &str) -> Result<Model> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| Error::checkpoint(source, format!("unreadable adapters: {e}")))?;
    if record.is_empty() || !model.has_adapters() {
        return Err(Error::checkpoint(source, "holds no LoRA adapters for this model"));
    }
    model
        .try_load_record(record.allow_partial(true))
        .map_err(|e| Error::checkpoint(source, format!("adapters do not fit the model: {e}")))
}

/// A model of `config` with the weights in `bytes`; `source` names them in errors.
pub fn load_model(config: &ModelConfig, bytes: &[u8], device: &Device, source: &str) -> Result<Model> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| Error::checkpoint(source, format!("unreadable weights: {e}")))?;
    if let Some(lora) = &config.lora
        && record.len() == 2 * lora.targets.len() * config.n_layers
    {
        return Err(Error::checkpoint(
            source,
            "holds only LoRA adapters (a page run on a model file keeps its frozen weights in that file): it opens only together with the model it was trained from",
        ));
    }
    config
        .init(0, device)
        .try_load_record(record)
        .map_err(|e| Error::checkpoint(source, format!("weights do not fit the model config: {e}")))
}
