//! Weights in and out: the `model.bpk` bytes a checkpoint holds, the same natively and in the
//! browser. (Loaders of other formats belong beside these.)

use burn::module::Module;
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

/// A model of `config` with the weights in `bytes`; `source` names them in errors.
pub fn load_model(config: &ModelConfig, bytes: &[u8], device: &Device, source: &str) -> Result<Model> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| Error::checkpoint(source, format!("unreadable weights: {e}")))?;
    config
        .init(0, device)
        .try_load_record(record)
        .map_err(|e| Error::checkpoint(source, format!("weights do not fit the model config: {e}")))
}
