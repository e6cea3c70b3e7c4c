//! Reading tensors back to the host. Always asynchronous: WebGPU has no blocking read, and
//! native callers block on the same futures, so one code path serves both.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};

pub async fn floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t.into_data_async().await.map_err(|e| Error::Readback(format!("{e:?}")))?;
    Ok(data.iter::<f32>().collect())
}

pub async fn scalar(t: Tensor<1>) -> Result<f32> {
    Ok(floats(t).await?[0])
}

/// A copy of `module` whose every float parameter lives on burn's CPU backend, read back
/// asynchronously. burn's record serialisation reads tensors synchronously, which WebGPU
/// cannot do; on the copy it is a plain memory read, so checkpoints work in the browser too.
pub async fn host_copy<M: Module>(module: &M) -> Result<M> {
    struct Collect(Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().flatten(0, D - 1));
        }
    }
    struct Replace(std::vec::IntoIter<Vec<f32>>);
    impl ModuleMapper for Replace {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let values = self.0.next().expect("the mapper visits the parameters the visitor saw");
            param.map(|t| {
                let shape = t.shape();
                Tensor::from_data(TensorData::new(values, shape), &Device::flex())
            })
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    let mut values = Vec::with_capacity(collect.0.len());
    for t in collect.0 {
        values.push(floats(t).await?);
    }
    Ok(module.clone().map(&mut Replace(values.into_iter())))
}
