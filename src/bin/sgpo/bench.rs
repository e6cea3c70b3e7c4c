//! `sgpo bench`: the cost of an SFT step and a DPO step (time, peak memory) on full-length
//! rows, with LoRA (ours or burn's built-in) or without; prefill tokens/s; decode tokens/s at
//! batch 1 and 16, with and without the KV cache.

use std::path::PathBuf;

use burn::module::{Lora, Module, ParamGroup};
use burn::tensor::Device;
use clap::Args;
use pollster::block_on;
use serde::Serialize;

use sgpo::config::{LoraConfig, ModelConfig, SftConfig, SgpoConfig};
use sgpo::data::{TokenSeq, Tokenizer, tasks};
use sgpo::generate::{SamplingConfig, Stop, generate};
use sgpo::metrics::{DpoStep, TrainStep, now_seconds};
use sgpo::model::{Model, TextModel};
use sgpo::rng::Rng;
use sgpo::train::{PreferenceTrainer, ScoredPair, SftRun, autodiff};

use crate::common::{DeviceArg, LoraArgs, check_read_every, open_run};

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "small")]
    preset: String,
    /// A model with weights (run, Hugging Face directory, GGUF) instead of a preset.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Rows per SFT step, pairs per DPO step, rows per generation batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Tokens per training row (capped at the model's context).
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Timed steps of each kind (after one warm-up step that compiles kernels).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Tokens generated per row in each decode measurement.
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// Rows per decode measurement.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16])]
    decode_batch: Vec<usize>,
    /// Skip the generation measurements.
    #[arg(long)]
    no_generation: bool,
    /// Skip the SFT and DPO steps (to measure decoding alone).
    #[arg(long, conflicts_with = "no_generation")]
    no_training: bool,
    /// Decode with the KV cache only: skip the decode without it (every step recomputes every
    /// position, the slowest measurement, and not what generation does).
    #[arg(long, conflicts_with = "no_generation")]
    cache_only: bool,
    /// With --lora-rank: burn's built-in LoRA (a reparameterised weight, rebuilt at every
    /// use) instead of ours (adapters beside the frozen weight), to compare the two.
    #[arg(long, requires = "lora_rank")]
    burn_lora: bool,
    /// Plain burn ops instead of our kernels (the WGSL files in shaders/ on wgpu; on the CPU,
    /// the CPU twins of token_logprobs, adamw, attention_softmax and the decode path's
    /// linear_rows, rms_norm, swiglu, rope_into and cached_attention), to measure what they buy.
    #[arg(long)]
    no_kernels: bool,
    /// Plain burn ops instead of these kernels only (comma-separated: token_logprobs,
    /// linear_rows, linear_swiglu, linear_qkv, rms_norm, swiglu, rope_into, cached_attention, sample, adamw,
    /// attention_softmax, matmul).
    #[arg(long, value_delimiter = ',')]
    no_kernel: Vec<sgpo::kernels::Kernel>,
    /// Read the training steps' numbers back every N steps (the trainers' default is 8; 1 waits
    /// for the device after every step, as sgpo did before).
    #[arg(long, default_value_t = sgpo::train::READ_EVERY)]
    read_every: usize,
    /// Only profile a decode step piece by piece (matmuls, head, readback, a whole step), at
    /// each --decode-batch, instead of the measurements above.
    #[arg(long)]
    profile: bool,
    /// Only compare this device's logits with the CPU backend's on the same weights (the
    /// forward, and a cached decode), instead of the measurements above; an error when they
    /// differ by more than 1e-4 times the largest logit.
    #[arg(long, conflicts_with = "profile")]
    check: bool,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    lora: LoraArgs,
    #[command(flatten)]
    device: DeviceArg,
}

/// One kind of training step: its time and the memory it peaked at.
#[derive(Serialize)]
struct StepCost {
    step_s: f64,
    tokens_per_s: f64,
    /// The process's peak resident memory during the timed steps (Linux; weights included).
    host_peak_bytes: Option<u64>,
    /// What the device's allocator held after them (wgpu; its pools keep their peak).
    device_reserved_bytes: Option<u64>,
}

#[derive(Serialize)]
struct Generation {
    batch_size: usize,
    prompt_len: usize,
    cache: bool,
    /// New tokens per second, all rows together.
    tokens_per_s: f64,
}

#[derive(Serialize)]
struct Report {
    preset: String,
    parameters: usize,
    trainable_parameters: usize,
    /// `none`, `ours` or `burn`.
    lora: &'static str,
    /// Whether our kernels were on (on wgpu all of them; on the CPU those with a CPU twin).
    kernels: bool,
    /// The kernels switched off one by one (`--no-kernel`).
    kernels_off: Vec<&'static str>,
    /// Whether this binary was built with burn's autotuned kernels (`--features autotune`).
    autotune: bool,
    /// Whether this binary was built with burn's fusion (`--features fusion`).
    fusion: bool,
    /// Training steps between reads of their numbers (`--read-every`).
    read_every: usize,
    batch_size: usize,
    seq_len: usize,
    sft_step_s: Option<f64>,
    sft: Option<StepCost>,
    dpo: Option<StepCost>,
    /// A forward pass over `batch_size` x `seq_len` prompt tokens, logits included (the mean
    /// of `--steps` passes after one warm-up).
    prefill_tokens_per_s: Option<f64>,
    generation: Vec<Generation>,
}

/// The process's peak resident set since the last reset, from /proc (None elsewhere).
fn host_peak() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Start a new peak-resident measurement (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_host_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The cost per step of `steps` training steps after one to warm up, timed until the last
/// one's numbers are read back (`read_rest`): each returns the tokens of the steps it read.
fn measure(
    device: &Device,
    steps: usize,
    mut step: impl FnMut() -> anyhow::Result<usize>,
    mut read_rest: impl FnMut() -> anyhow::Result<usize>,
) -> anyhow::Result<StepCost> {
    step()?;
    read_rest()?;
    reset_host_peak();
    let t0 = now_seconds();
    let mut tokens = 0;
    for _ in 0..steps.max(1) {
        tokens += step()?;
    }
    tokens += read_rest()?;
    let dt = now_seconds() - t0;
    Ok(StepCost {
        step_s: dt / steps.max(1) as f64,
        tokens_per_s: tokens as f64 / dt,
        host_peak_bytes: host_peak(),
        device_reserved_bytes: device.memory_pool_usage().map(|u| u.bytes_reserved),
    })
}

/// Burn's own LoRA on the same projections: `Module::apply_lora` on their weight paths.
fn burn_lora(model: Model, lora: &LoraConfig, n_layers: usize) -> Model {
    let paths: Vec<String> = (0..n_layers).flat_map(|i| lora.targets.iter().map(move |&t| Model::projection_weight_path(i, t))).collect();
    model.apply_lora(Lora::new(lora.rank, lora.alpha).set_param_group(ParamGroup::from_paths(paths)))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    check_read_every(args.read_every)?;
    let device = args.device.select()?;
    sgpo::kernels::set_enabled(!args.no_kernels);
    for &kernel in &args.no_kernel {
        sgpo::kernels::set_kernel_enabled(kernel, false);
    }
    let train_device = autodiff(&device);
    let start = match &args.model {
        Some(path) => open_run(path, &train_device)?.model,
        None => {
            let tokenizer = Tokenizer::train_on(&tasks::generate(2000, 1), 512)?;
            let config = ModelConfig::preset(&args.preset, tokenizer.vocab_size())?;
            TextModel { model: config.init(1, &train_device), config, tokenizer }
        }
    };
    let lora = args.lora.config()?;
    if lora.is_some() && args.model.is_none() {
        anyhow::bail!("--lora-rank needs --model: adapters train beside the weights of a model that has them");
    }
    let (start, lora_kind) = match (&lora, args.burn_lora) {
        (Some(l), true) => {
            let model = burn_lora(start.model.merged(), l, start.config.n_layers);
            (TextModel { model, ..start }, "burn")
        }
        (Some(_), false) => (start.for_training(lora.clone(), 1)?, "ours"),
        (None, _) => (start.for_training(None, 1)?, "none"),
    };
    let parameters = start.model.num_params();
    // Burn's adapters live inside its reparameterised weights; they have our adapters' shapes.
    let trainable_parameters = match (&lora, args.burn_lora) {
        (Some(l), true) => start.model.clone().with_lora(l, 1).trainable_params(),
        _ => start.model.trainable_params(),
    };
    if args.profile {
        let model = start.model.valid();
        let pieces = crate::profile::decode_step(&model, start.config.d_model, start.config.d_ff, &args.decode_batch, &device)?;
        if args.json {
            println!("{}", serde_json::to_string(&pieces)?);
        }
        return Ok(());
    }
    if args.check {
        let check = crate::check::against_cpu(&start.model.valid(), start.config.vocab_size, &device);
        let crate::check::Check { scale, allowed, forward_max_diff, decode_max_diff, passed } = check;
        if args.json {
            println!("{}", serde_json::to_string(&check)?);
        } else {
            println!("{device:?} against the CPU backend: forward {forward_max_diff:.1e}, cached decode {decode_max_diff:.1e} (largest logit {scale:.2}, allowed {allowed:.1e})");
        }
        anyhow::ensure!(
            passed,
            "the logits on {device:?} differ from the CPU backend's by {forward_max_diff:.1e} (forward) and {decode_max_diff:.1e} (cached decode): more than {allowed:.1e}, {} times the largest logit",
            crate::check::RELATIVE_TOLERANCE
        );
        return Ok(());
    }
    let seq_len = args.seq_len.min(start.config.max_seq_len);
    let vocab = start.tokenizer.vocab_size().min(start.config.vocab_size) as u64;
    let mut rng = Rng::new(7);
    let mut row = || {
        let tokens: Vec<u32> = (0..seq_len).map(|_| (rng.next_u64() % vocab) as u32).collect();
        TokenSeq { tokens, prompt_len: seq_len / 8 }
    };
    let rows: Vec<TokenSeq> = (0..args.batch_size * 4).map(|_| row()).collect();
    let pairs: Vec<ScoredPair> = (0..args.batch_size)
        .map(|_| ScoredPair { chosen: row(), rejected: row(), reference_chosen: 0.0, reference_rejected: 0.0 })
        .collect();
    let pad = start.tokenizer.special.pad;
    let generation_model = start.model.valid();

    let (mut sft, mut dpo) = (None, None);
    if !args.no_training {
        let config = SftConfig { preset: args.preset.clone(), batch_size: args.batch_size, steps: 1000, ..SftConfig::default() };
        let tokens = |read: Vec<TrainStep>| read.iter().map(|m| m.tokens).sum::<usize>();
        let sft_run = std::cell::RefCell::new(SftRun::from_model("sft", config, start.clone(), rows, &device)?);
        sft_run.borrow_mut().set_read_every(args.read_every);
        let step = || Ok(tokens(block_on(sft_run.borrow_mut().step())?));
        let read_rest = || {
            let mut tokens = 0;
            block_on(sft_run.borrow_mut().flush(&mut |m| tokens += m.tokens))?;
            Ok(tokens)
        };
        sft = Some(measure(&device, args.steps, step, read_rest)?);
        drop(sft_run);
        let tokens = |read: Vec<DpoStep>| read.iter().map(|m| m.tokens).sum::<usize>();
        let trainer = std::cell::RefCell::new(PreferenceTrainer::new(start.model, SgpoConfig::default(), pad, &device));
        trainer.borrow_mut().set_read_every(args.read_every);
        let batch: Vec<&ScoredPair> = pairs.iter().collect();
        let step = || Ok(tokens(block_on(trainer.borrow_mut().step(&batch, &[], 1))?));
        let read_rest = || {
            let mut tokens = 0;
            block_on(trainer.borrow_mut().flush(&mut |m| tokens += m.tokens))?;
            Ok(tokens)
        };
        dpo = Some(measure(&device, args.steps, step, read_rest)?);
    }

    let mut report = Report {
        preset: args.model.as_ref().map_or(args.preset.clone(), |p| p.display().to_string()),
        parameters,
        trainable_parameters,
        lora: lora_kind,
        kernels: !args.no_kernels,
        kernels_off: args.no_kernel.iter().map(|k| k.name()).collect(),
        autotune: cfg!(feature = "autotune"),
        fusion: cfg!(feature = "fusion"),
        read_every: args.read_every,
        batch_size: args.batch_size,
        seq_len,
        sft_step_s: sft.as_ref().map(|c| c.step_s),
        sft,
        dpo,
        prefill_tokens_per_s: None,
        generation: Vec::new(),
    };
    if !args.no_generation {
        let prompts: Vec<Vec<u32>> = (0..args.batch_size).map(|_| row().tokens).collect();
        let tokens = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(prompts.concat().iter().map(|&t| t as i32).collect::<Vec<_>>(), [args.batch_size, seq_len]),
            &device,
        );
        let prefill = || block_on(sgpo::readback::floats(generation_model.forward_causal(tokens.clone()).narrow(1, seq_len - 1, 1).reshape([-1])));
        prefill()?;
        let t0 = now_seconds();
        for _ in 0..args.steps.max(1) {
            prefill()?;
        }
        report.prefill_tokens_per_s = Some((args.steps.max(1) * args.batch_size * seq_len) as f64 / (now_seconds() - t0));
    }
    // No id is u32::MAX, so every row generates all its tokens.
    let stop = Stop { end: u32::MAX, pad, suppress: &[] };
    let prompt_len = 16;
    for &batch_size in args.decode_batch.iter().filter(|_| !args.no_generation) {
        let prompts: Vec<Vec<u32>> = (0..batch_size).map(|i| vec![3 + (i as u32 % 3); prompt_len]).collect();
        for cache in [true, false].into_iter().filter(|&c| c || !args.cache_only) {
            let mut rng = Rng::new(0);
            block_on(generate(&generation_model, &prompts, &SamplingConfig::greedy(2), stop, &mut rng, cache, &device))?;
            let t0 = now_seconds();
            let out = block_on(generate(&generation_model, &prompts, &SamplingConfig::greedy(args.new_tokens), stop, &mut rng, cache, &device))?;
            let generated: usize = out.iter().map(|o| o.len()).sum();
            report.generation.push(Generation { batch_size, prompt_len, cache, tokens_per_s: generated as f64 / (now_seconds() - t0) });
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let mib = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.0} MiB", b as f64 / (1 << 20) as f64));
    println!(
        "device: {device:?}, {} ({} parameters, {} trained, LoRA: {}, our kernels {}{}{}), batch {} x {} tokens",
        report.preset,
        report.parameters,
        report.trainable_parameters,
        report.lora,
        match (report.kernels, report.kernels_off.is_empty()) {
            (false, _) => "off".to_string(),
            (true, true) => "on".to_string(),
            (true, false) => format!("on but {}", report.kernels_off.join(", ")),
        },
        if report.autotune { ", burn autotune" } else { "" },
        if report.fusion { ", burn fusion" } else { "" },
        report.batch_size,
        report.seq_len
    );
    for (name, cost) in [("sft step", &report.sft), ("dpo step", &report.dpo)] {
        let Some(cost) = cost else { continue };
        println!(
            "{name}: {:.3} s ({:.0} tokens/s), peak resident {}, device pool {}",
            cost.step_s,
            cost.tokens_per_s,
            mib(cost.host_peak_bytes),
            mib(cost.device_reserved_bytes)
        );
    }
    if let Some(rate) = report.prefill_tokens_per_s {
        println!("prefill {} x {}: {rate:.0} tokens/s", report.batch_size, report.seq_len);
    }
    for g in &report.generation {
        println!(
            "decode batch {:>2} after a {}-token prompt: {:>8.1} tokens/s ({} cache)",
            g.batch_size,
            g.prompt_len,
            g.tokens_per_s,
            if g.cache { "with" } else { "no" }
        );
    }
    Ok(())
}
