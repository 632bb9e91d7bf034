//! `igpt bench train | infer | parity`: training throughput, int8 against f32 inference,
//! and the model on a device against the HF fixtures.

use super::args::{set_threads, ModelArgs};
use anyhow::{ensure, Result};
use igpt::nn::device::DeviceKind;
use igpt::train::pretrain;
use igpt_core::Preset;
use std::path::PathBuf;

/// Runs a `bench` subcommand.
pub fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Train(a) => train_cmd(a),
        BenchCmd::Infer(a) => bench_infer_cmd(a),
        BenchCmd::Parity(a) => parity_cmd(a),
    }
}

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Training throughput (forward + backward + AdamW) on random tokens; the last line
    /// is `tokens_per_s=<number>`.
    Train(BenchTrainArgs),
    /// Probe inference, one thread: igpt-core int8 vs the f32 dfdx forward of the same
    /// weights; the last line is `speedup=<number>`.
    Infer(BenchInferArgs),
    /// The model on a device against the HF fixtures (hidden states, probe features,
    /// logits: 1e-4) and the CPU reference (logits 1e-4, AR loss 2e-5, gradients 1e-4
    /// relative); the last line is `parity=PASS` (or an error).
    Parity(BenchParityArgs),
}

#[derive(clap::Args)]
pub struct BenchTrainArgs {
    /// Model shape (default: 4 layers, width 128, 4 heads, 16x16, k 512).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run the plain dfdx compositions instead of the fused CPU kernels.
    #[arg(long)]
    pub reference: bool,
    /// Where the dfdx model runs: cpu (fused kernels) or cuda (needs a build with
    /// --features cuda).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceKind,
}

#[derive(clap::Args)]
pub struct BenchInferArgs {
    /// int8 model file with a probe head.
    #[arg(long)]
    pub model: PathBuf,
    /// Random images to time.
    #[arg(long, default_value_t = 64)]
    pub images: usize,
    /// Images per f32 forward (the f32 side is batched; the core runs one at a time).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Alternating int8 / f32 rounds; each side keeps its best.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

#[derive(clap::Args)]
pub struct BenchParityArgs {
    /// HF ImageGPT fixture folder (every case with input_ids and expected outputs).
    #[arg(long, default_value = "tests/fixtures/hf-imagegpt")]
    pub fixtures: PathBuf,
    /// The device checked against the fixtures and the CPU reference path.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceKind,
}

pub fn bench_infer_cmd(a: BenchInferArgs) -> Result<()> {
    use rand::{Rng, SeedableRng};
    ensure!(a.images > 0, "--images must be positive");
    set_threads(Some(1))?;
    let bytes = igpt::int8::export::read_model(&a.model)?;
    let model = igpt_core::Model::parse(&bytes)?;
    let c = *model.config();
    ensure!(
        (1..=1_000_000).contains(&a.batch) && (1..=1000).contains(&a.rounds),
        "--batch must be in 1..=1000000 and --rounds in 1..=1000"
    );
    // The images (u16 tokens, with the Vec per image), and the f32 forward's activations
    // of one batch (about 16 values per width per position).
    let per_image = (c.seq_len() * 2 + 24) as u64;
    let batch_bytes = a.batch.min(a.images) as u64 * c.seq_len() as u64 * c.width as u64 * 64;
    igpt::io::ensure_memory(
        (a.images as u64)
            .saturating_mul(per_image)
            .saturating_add(batch_bytes),
        "lower --images or --batch",
    )
    .map_err(|e| anyhow::anyhow!("--images {}: {e}", a.images))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let images: Vec<Vec<u16>> = (0..a.images)
        .map(|_| {
            (0..c.seq_len())
                .map(|_| rng.gen_range(0..c.vocab as u16))
                .collect()
        })
        .collect();
    let r = igpt::int8::run::bench(&model, &images, a.batch, a.rounds)?;
    let (layer, classes) = model.probe().unwrap_or((0, 0));
    println!(
        "bench infer: {}x{}, width {}, probe layer {layer} ({} MMAC per image), {} images, 1 thread",
        c.side,
        c.side,
        c.width,
        c.probe_macs(layer, classes) / 1_000_000,
        a.images
    );
    let chosen = match std::env::var(igpt::int8::kernels::KERNELS_ENV) {
        Ok(v) if !v.trim().is_empty() => {
            format!("forced by {}={v}", igpt::int8::kernels::KERNELS_ENV)
        }
        _ => format!(
            "the best this CPU runs; {}=portable|avx2|avxvnni|avx512 forces one",
            igpt::int8::kernels::KERNELS_ENV
        ),
    };
    println!(
        "kernels={} ({}; {chosen})",
        r.kernels.name(),
        r.kernels.describe()
    );
    println!(
        "int8 igpt-core:  {:8.2} images/s (one image at a time, {} kernels; best of {} rounds)",
        r.int8,
        r.kernels.name(),
        a.rounds.max(1)
    );
    println!(
        "int8 portable:   {:8.2} images/s (the same forward with igpt-core's portable kernels)",
        r.int8_portable
    );
    println!(
        "f32 dfdx:        {:8.2} images/s (batch {}; best of {} rounds, alternating with int8)",
        r.f32_batched,
        a.batch,
        a.rounds.max(1)
    );
    println!("f32 dfdx:        {:8.2} images/s (batch 1)", r.f32_single);
    if let (Some(i), Some(f), Some(x)) = (r.int8_cpu, r.f32_batched_cpu, r.cpu_speedup()) {
        println!(
            "per CPU-second:  int8 {i:.2}, f32 batch {} {f:.2} images; ratio {x:.2} (time waiting for a core left out)",
            a.batch
        );
    }
    println!("speedup={:.2}", r.speedup());
    Ok(())
}

pub fn parity_cmd(a: BenchParityArgs) -> Result<()> {
    let checks = igpt::on_device!(a.device, 0, |dev| {
        println!(
            "bench parity on {}: fixtures {}",
            a.device.name(),
            a.fixtures.display()
        );
        igpt::eval::parity::parity(&dev, &a.fixtures)
    })?;
    let (lines, verdict) = igpt::eval::parity::report(&checks);
    for l in lines {
        println!("{l}");
    }
    verdict
}

pub fn train_cmd(a: BenchTrainArgs) -> Result<()> {
    set_threads(a.threads)?;
    let mut model = a.model.clone();
    if model.preset.is_none() {
        model.layers = model.layers.or(Some(4));
        model.width = model.width.or(Some(128));
        model.heads = model.heads.or(Some(4));
        model.side = model.side.or(Some(16));
        model.vocab = model.vocab.or(Some(512));
    }
    let c = model.config(Preset::Test)?;
    ensure!(
        (1..=igpt::io::meta::MAX_BATCH).contains(&a.batch) && (1..=100_000).contains(&a.steps),
        "--batch must be in 1..={} and --steps in 1..=100000",
        igpt::io::meta::MAX_BATCH
    );
    igpt::io::ensure_memory(
        igpt::nn::memory::training_bytes(&c, a.batch),
        "lower --batch",
    )?;
    let tps = igpt::on_device!(a.device, 0, |dev| pretrain::bench_train(
        &dev,
        c,
        a.batch,
        a.steps,
        !a.reference,
        true
    ))?;
    println!(
        "bench train{}{}: {} layers, width {}, {} heads, {}x{} ({} tokens), k {}, batch {}, {} steps, {} threads",
        if a.reference { " (reference dfdx ops)" } else { "" },
        if a.device == DeviceKind::Cuda { " on cuda" } else { "" },
        c.layers,
        c.width,
        c.heads,
        c.side,
        c.side,
        c.seq_len(),
        c.vocab,
        a.batch,
        a.steps,
        rayon::current_num_threads()
    );
    let (six_n, attn) = igpt::eval::parity::train_flops_per_token(&c);
    println!(
        "train_flops_per_token={:.4e} (6N {six_n:.4e} + attention {attn:.4e})",
        six_n + attn
    );
    if a.device == DeviceKind::Cpu {
        println!("training_isa={}", igpt::nn::kernels::training_isa());
    }
    println!("model_tflops={:.3}", (six_n + attn) * tps / 1e12);
    println!("tokens_per_s={tps:.1}");
    Ok(())
}
