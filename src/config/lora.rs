//! LoRA's settings: which projections get low-rank adapters, their rank and scale. Part of a
//! model's shape (`ModelConfig::lora`), since a checkpoint's weights include the adapters.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A projection of a transformer block, by the name PEFT's `target_modules` uses without
/// `_proj`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraTarget {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 7] = [Self::Q, Self::K, Self::V, Self::O, Self::Gate, Self::Up, Self::Down];

    /// Hugging Face's module name (`q_proj`, ...), as PEFT's `target_modules` lists it.
    pub fn module(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }

    /// The module's path under a layer (`self_attn.q_proj`, `mlp.up_proj`, ...).
    pub fn path(self) -> String {
        let parent = if matches!(self, Self::Gate | Self::Up | Self::Down) { "mlp" } else { "self_attn" };
        format!("{parent}.{}", self.module())
    }
}

impl std::str::FromStr for LoraTarget {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let name = s.trim().trim_end_matches("_proj");
        Self::ALL
            .into_iter()
            .find(|t| t.module().trim_end_matches("_proj") == name)
            .ok_or_else(|| Error::Config(format!("unknown LoRA target {s:?}; use any of q, k, v, o, gate, up, down")))
    }
}

/// Low-rank adapters `x·A·B·(alpha/rank)` beside frozen projections (A `[in, rank]` drawn, B
/// `[rank, out]` zero, so a fresh adapter changes nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    /// The adapter's output is scaled by `alpha / rank`.
    pub alpha: f64,
    pub targets: Vec<LoraTarget>,
}

impl LoraConfig {
    /// `rank` with the defaults: alpha = 2 x rank, every projection (q, k, v, o, gate, up, down),
    /// the "all linear layers" setting QLoRA found to matter.
    pub fn new(rank: usize) -> Self {
        Self { rank, alpha: 2.0 * rank as f64, targets: LoraTarget::ALL.to_vec() }
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn targets(&self, target: LoraTarget) -> bool {
        self.targets.contains(&target)
    }

    /// Parse a comma-separated target list (`q,v` or `q_proj,v_proj`).
    pub fn parse_targets(list: &str) -> Result<Vec<LoraTarget>> {
        let mut targets: Vec<LoraTarget> = list.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect::<Result<_>>()?;
        targets.sort();
        targets.dedup();
        Ok(targets)
    }
}
