//! `sgpo bench`: SFT step time and generation tokens/s with and without the KV cache.

use clap::Args;
use pollster::block_on;
use serde::Serialize;

use sgpo::config::SftConfig;
use sgpo::data::{Tokenizer, tasks};
use sgpo::generate::{SamplingConfig, Stop, generate};
use sgpo::metrics::now_seconds;
use sgpo::rng::Rng;
use sgpo::train::SftRun;

use crate::common::DeviceArg;

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "small")]
    preset: String,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Timed SFT steps (after two warm-up steps that compile kernels).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Tokens generated per row in each generation measurement.
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArg,
}

#[derive(Serialize)]
struct Generation {
    prompt_len: usize,
    cache: bool,
    tokens_per_s: f64,
}

#[derive(Serialize)]
struct Report {
    preset: String,
    parameters: usize,
    batch_size: usize,
    sft_step_s: f64,
    sft_tokens_per_s: f64,
    generation: Vec<Generation>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let device = args.device.select()?;
    let examples = tasks::generate(2000, 1);
    let tok = Tokenizer::train_on(&examples, 512)?;
    let config = SftConfig { preset: args.preset.clone(), batch_size: args.batch_size, steps: 1000, ..SftConfig::default() };
    let mut run = SftRun::new(config, tok.clone(), &examples, &device)?;
    // Warm-up steps compile kernels; time the rest.
    for _ in 0..2 {
        block_on(run.step())?;
    }
    let t0 = now_seconds();
    let mut tokens = 0;
    for _ in 0..args.steps {
        tokens += block_on(run.step())?.tokens;
    }
    let dt = now_seconds() - t0;
    let mut report = Report {
        preset: args.preset.clone(),
        parameters: burn::module::Module::num_params(&run.model),
        batch_size: args.batch_size,
        sft_step_s: dt / args.steps.max(1) as f64,
        sft_tokens_per_s: tokens as f64 / dt,
        generation: Vec::new(),
    };
    let model = run.text_model().model;
    let s = tok.special;
    // No id is u32::MAX, so every row generates all its tokens.
    let stop = Stop { end: u32::MAX, pad: s.pad };
    for prompt_len in [16usize, 96] {
        let prompts: Vec<Vec<u32>> = (0..args.batch_size).map(|i| vec![3 + (i as u32 % 3); prompt_len]).collect();
        for cache in [true, false] {
            let mut rng = Rng::new(0);
            block_on(generate(&model, &prompts, &SamplingConfig::greedy(2), stop, &mut rng, cache, &device))?;
            let t0 = now_seconds();
            let out = block_on(generate(&model, &prompts, &SamplingConfig::greedy(args.new_tokens), stop, &mut rng, cache, &device))?;
            let generated: usize = out.iter().map(|o| o.len()).sum();
            report.generation.push(Generation { prompt_len, cache, tokens_per_s: generated as f64 / (now_seconds() - t0) });
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!("device: {device:?}, preset {} ({} parameters), batch {}", report.preset, report.parameters, report.batch_size);
    println!("sft step: {:.3} s ({:.0} tokens/s)", report.sft_step_s, report.sft_tokens_per_s);
    for g in &report.generation {
        println!(
            "generate prompt {:>3} x batch {}: {:>8.1} tokens/s ({} cache)",
            g.prompt_len,
            report.batch_size,
            g.tokens_per_s,
            if g.cache { "with" } else { "no" }
        );
    }
    Ok(())
}
