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
    pub is_wgpu: bool,
}

#[cfg(not(target_arch = "wasm32"))]
pub fn select(choice: DeviceChoice) -> Result<Selected> {
    use burn::tensor::DeviceKind;
    let wgpu = |adapter: &AdapterSummary| Selected {
        device: Device::wgpu(DeviceKind::DefaultDevice),
        description: format!("wgpu: {} ({})", adapter.name, adapter.backend),
        is_wgpu: true,
    };
    let cpu = |why: &str| Selected {
        device: Device::flex(),
        description: format!("cpu (burn Flex){why}"),
        is_wgpu: false,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_adapters_are_recognised() {
        assert!(is_software_adapter("llvmpipe (LLVM 15.0.6, 256 bits)", false));
        assert!(is_software_adapter("SwiftShader Device (Subzero)", false));
        assert!(is_software_adapter("anything", true));
        assert!(!is_software_adapter("NVIDIA H100 80GB HBM3", false));
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert!("gpu".parse::<DeviceChoice>().is_err());
    }
}
