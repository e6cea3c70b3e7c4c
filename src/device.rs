//! Choosing where tensors live. `wgpu` is the product's path; `auto` takes it when the adapter
//! is a real GPU and falls back to burn's CPU backend (Flex) when the only adapter is a software
//! rasteriser (lavapipe, SwiftShader), which runs the same kernels ~13x slower than Flex.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Auto,
    Wgpu,
    Cpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "wgpu" => Ok(Self::Wgpu),
            "cpu" => Ok(Self::Cpu),
            other => Err(Error::Device(format!("unknown device {other:?}; use auto, wgpu or cpu"))),
        }
    }
}

/// What the wgpu adapter is, as far as `auto` cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub software: bool,
}

/// Software adapters report themselves as CPUs, or by name.
pub fn is_software_adapter(name: &str, is_cpu_type: bool) -> bool {
    let name = name.to_lowercase();
    is_cpu_type || ["llvmpipe", "lavapipe", "swiftshader", "softpipe", "warp"].iter().any(|s| name.contains(s))
}

/// The adapter wgpu would pick by default, if any (native only: the browser asks WebGPU).
#[cfg(not(target_arch = "wasm32"))]
pub fn probe_wgpu() -> Option<AdapterSummary> {
    use burn::tensor::wgpu::wgpu;
    let instance = wgpu::Instance::default();
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let infos: Vec<_> = adapters.iter().map(|a| a.get_info()).collect();
    // Mirror wgpu's default preference: a hardware adapter wins over a software one.
    let summarize = |i: &wgpu::AdapterInfo| AdapterSummary {
        name: i.name.clone(),
        backend: format!("{:?}", i.backend),
        software: is_software_adapter(&i.name, i.device_type == wgpu::DeviceType::Cpu),
    };
    let all: Vec<AdapterSummary> = infos.iter().map(summarize).collect();
    all.iter().find(|a| !a.software).or(all.first()).cloned()
}

/// The device a command runs on, and a line saying why.
pub struct Selected {
    pub device: Device,
    pub description: String,
}

#[cfg(not(target_arch = "wasm32"))]
pub fn select(choice: DeviceChoice) -> Result<Selected> {
    use burn::tensor::DeviceKind;
    let wgpu = |adapter: &AdapterSummary| {
        crate::kernels::set_software_adapter(adapter.software);
        Selected { device: Device::wgpu(DeviceKind::DefaultDevice), description: format!("wgpu: {} ({})", adapter.name, adapter.backend) }
    };
    let cpu = |why: &str| Selected {
        device: Device::flex(),
        description: format!("cpu (burn Flex){why}"),
    };
    match choice {
        DeviceChoice::Cpu => Ok(cpu("")),
        DeviceChoice::Wgpu => match probe_wgpu() {
            Some(a) => Ok(wgpu(&a)),
            None => Err(Error::Device(
                "no wgpu adapter found (install a Vulkan/Metal/DX12 driver, e.g. mesa-vulkan-drivers), or use --device cpu".into(),
            )),
        },
        DeviceChoice::Auto => match probe_wgpu() {
            Some(a) if !a.software => Ok(wgpu(&a)),
            Some(a) => Ok(cpu(&format!(
                "; the only GPU adapter is the software rasteriser {:?}, which is slower than the CPU backend (use --device wgpu to force it)",
                a.name
            ))),
            None => Ok(cpu("; no GPU adapter found")),
        },
    }
}

/// The buffer sizes a GPU device allows (WebGPU's `maxBufferSize` and
/// `maxStorageBufferBindingSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLimits {
    pub max_buffer_size: u64,
    pub max_storage_binding: u64,
}

/// Whether tensors on `device` live on burn's wgpu backend (with or without autodiff), where
/// buffer limits and our WGSL kernels apply.
pub fn is_gpu(device: &Device) -> bool {
    use burn::backend::{DispatchDevice, RuntimeId};
    matches!(device.clone().without_autodiff().as_dispatch(), DispatchDevice::Cube(d) if d.runtime() == RuntimeId::Wgpu)
}

/// Whether tensors on `device` live on burn's CPU backend (Flex), where our kernels' CPU twins
/// apply.
pub fn is_cpu(device: &Device) -> bool {
    matches!(device.clone().without_autodiff().as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}

/// Refuse a model whose largest tensor cannot be bound on this device, before anything is
/// allocated: the alternative is a validation error deep inside a kernel launch.
pub fn check_buffer_limits(model: &str, config: &crate::config::ModelConfig, batch_size: usize, seq_len: usize, limits: BufferLimits) -> Result<()> {
    let (what, bytes) = config.largest_buffer(batch_size, seq_len);
    let limit = limits.max_buffer_size.min(limits.max_storage_binding);
    if bytes > limit {
        let mb = |b: u64| b as f64 / (1 << 20) as f64;
        return Err(Error::Device(format!(
            "{model} with batch {batch_size} x {seq_len} tokens needs a {:.0} MiB buffer ({what}) but this GPU allows {:.0} MiB per buffer: choose a smaller model or batch",
            mb(bytes),
            mb(limit)
        )));
    }
    Ok(())
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    #[test]
    fn software_adapters_are_recognised() {
        assert!(is_software_adapter("llvmpipe (LLVM 15.0.6, 256 bits)", false));
        assert!(is_software_adapter("SwiftShader Device (Subzero)", false));
        assert!(is_software_adapter("anything", true));
        assert!(!is_software_adapter("NVIDIA H100 80GB HBM3", false));
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert!("gpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn presets_that_outgrow_the_device_are_refused_by_name() {
        let webgpu_default = BufferLimits { max_buffer_size: 256 << 20, max_storage_binding: 128 << 20 };
        let tiny = ModelConfig::preset("tiny", 256).unwrap();
        assert!(check_buffer_limits("tiny", &tiny, 8, tiny.max_seq_len, webgpu_default).is_ok());
        let big = ModelConfig::preset("smollm2-135m", 49152).unwrap();
        let e = check_buffer_limits("smollm2-135m", &big, 8, big.max_seq_len, webgpu_default).unwrap_err().to_string();
        assert!(e.contains("smollm2-135m with batch 8 x 2048 tokens") && e.contains("logits") && e.contains("128 MiB"), "{e}");
        assert!(check_buffer_limits("smollm2-135m", &big, 1, 2048, BufferLimits { max_buffer_size: 4 << 30, max_storage_binding: 4 << 30 }).is_ok());
        // Rows as long as a run builds them, not the whole context: 8 x 64 x 49152 logits fit.
        assert!(check_buffer_limits("smollm2-135m", &big, 8, 64, webgpu_default).is_ok());
        // Heads without grouping and a narrow MLP: the decode step's joined q/k/v weight,
        // 4097 x 12288 values, is the largest (the MLP's 4096 x 8192 fit in 128 MiB).
        let wide = ModelConfig::new(256, 4096, 1, 32, 32, 8192);
        let e = check_buffer_limits("wide", &wide, 1, 16, webgpu_default).unwrap_err().to_string();
        assert!(e.contains("joined q/k/v weight") && e.contains("192 MiB"), "{e}");
    }
}
