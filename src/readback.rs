//! Reading tensors back to the host. Always asynchronous: WebGPU has no blocking read, and
//! native callers block on the same futures, so one code path serves both.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};

pub async fn floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t.into_data_async().await.map_err(|e| Error::Readback(format!("{e:?}")))?;
    Ok(data.iter::<f32>().collect())
}

/// Integer ids, as i64 whatever the backend's int type.
pub async fn ints<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<i64>> {
    let data = t.into_data_async().await.map_err(|e| Error::Readback(format!("{e:?}")))?;
    Ok(data.convert::<i64>().iter::<i64>().collect())
}

pub async fn scalar(t: Tensor<1>) -> Result<f32> {
    Ok(floats(t).await?[0])
}

/// The largest absolute difference between two read-back lists of the same length, infinite
/// where either side has a NaN (`f32::max` would drop it and let a broken computation pass):
/// how the device check and the parity tests compare two backends' values.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "comparing {} values with {}", a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
}

/// A copy of `module` whose every float parameter lives on burn's CPU backend, read back
/// asynchronously. burn's record serialisation reads tensors synchronously, which WebGPU
/// cannot do; on the copy it is a plain memory read, so checkpoints work in the browser too.
pub async fn host_copy<M: Module>(module: &M) -> Result<M> {
    host_copy_where(module, "").await
}

/// As [`host_copy`], for the parameters whose path (`blocks.0.adapters.q.a`) contains
/// `part` only; the others stay where they are (and must not be serialised).
pub async fn host_copy_where<M: Module>(module: &M, part: &str) -> Result<M> {
    struct Path<'a> {
        names: Vec<String>,
        part: &'a str,
    }
    impl Path<'_> {
        fn selected(&self) -> bool {
            self.part.is_empty() || self.names.join(".").contains(self.part)
        }
    }
    struct Collect<'a>(Path<'a>, Vec<Tensor<1>>);
    impl ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.names.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.names.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.0.selected() {
                self.1.push(param.val().flatten(0, D - 1));
            }
        }
    }
    struct Replace<'a>(Path<'a>, std::vec::IntoIter<Vec<f32>>);
    impl ModuleMapper for Replace<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.names.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.names.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if !self.0.selected() {
                return param;
            }
            let values = self.1.next().expect("the mapper visits the parameters the visitor saw");
            param.map(|t| {
                let shape = t.shape();
                Tensor::from_data(TensorData::new(values, shape), &Device::flex())
            })
        }
    }
    let mut collect = Collect(Path { names: Vec::new(), part }, Vec::new());
    module.visit(&mut collect);
    let mut values = Vec::with_capacity(collect.1.len());
    for t in collect.1 {
        values.push(floats(t).await?);
    }
    Ok(module.clone().map(&mut Replace(Path { names: Vec::new(), part }, values.into_iter())))
}

#[cfg(test)]
mod tests {
    use super::max_diff;

    #[test]
    fn max_diff_is_the_largest_gap_and_infinite_on_a_nan() {
        assert_eq!(max_diff(&[1.0, 2.0, -3.0], &[1.5, 2.0, -1.0]), 2.0);
        assert_eq!(max_diff(&[1.0, f32::NAN, 2.0], &[1.0, 2.0, 2.5]), f32::INFINITY, "a NaN after smaller gaps");
        assert_eq!(max_diff(&[f32::NAN, 1.0], &[0.0, 1.0]), f32::INFINITY, "a NaN first");
    }
}
