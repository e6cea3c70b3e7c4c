//! Reading tensors back to the host. Always asynchronous: WebGPU has no blocking read, and
//! native callers block on the same futures, so one code path serves both.

use burn::tensor::{Int, Tensor};

use crate::error::{Error, Result};

pub async fn floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t.into_data_async().await.map_err(|e| Error::Readback(format!("{e:?}")))?;
    Ok(data.iter::<f32>().collect())
}

pub async fn scalar(t: Tensor<1>) -> Result<f32> {
    Ok(floats(t).await?[0])
}

pub async fn ints<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<i64>> {
    let data = t.into_data_async().await.map_err(|e| Error::Readback(format!("{e:?}")))?;
    Ok(data.iter::<i64>().collect())
}
