//! `igpt pretrain`, `igpt finetune`, `igpt init`, `igpt import-hf`: making checkpoints.

use super::args::{set_threads, ModelArgs};
use anyhow::{ensure, Result};
use igpt::data::palette;
use igpt::io::checkpoint::Checkpoint;
use igpt::io::meta::{AdamConfig, FinetuneArgs as FinetuneRun, PretrainArgs as PretrainRun};
use igpt::io::probe_head::ProbeHead;
use igpt::nn::device::DeviceKind;
use igpt::nn::Objective;
use igpt::train::{finetune, pretrain};
use igpt_core::Preset;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PretrainArgs {
    /// Dataset: CIFAR-10 batches, IDX files or class folders (train split; the test split
    /// is the validation set).
    #[arg(long)]
    pub data: PathBuf,
    /// Palette file; its size is the model's k.
    #[arg(long)]
    pub palette: PathBuf,
    /// Model shape: a preset (default fw) and overrides.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training objective.
    #[arg(long, value_enum, default_value = "ar")]
    pub objective: Objective,
    /// Total optimizer steps.
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Peak learning rate (linear warmup, then cosine decay to 0).
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// Decoupled weight decay on block projections and the head (the paper used 0).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Clip the global gradient norm (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Seed of the weights, data order and BERT masks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Validate, log, plot and checkpoint every N steps.
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    /// Validation images from the test split (0: none).
    #[arg(long, default_value_t = 1000)]
    pub val_images: usize,
    /// Use only the first N training images (0: all).
    #[arg(long, default_value_t = 0)]
    pub train_images: usize,
    /// Run folder: checkpoint.safetensors, log.csv, loss.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out (same arguments) from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop (with a checkpoint) after this step, as an interruption would.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the dfdx model runs: cpu (fused kernels) or cuda (needs a build with
    /// --features cuda).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceKind,
}

#[derive(clap::Args)]
pub struct FinetuneArgs {
    /// Pretrained checkpoint (with its palette).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Dataset: the train split (90% fit, 10% validation), the test split at the end.
    #[arg(long)]
    pub data: PathBuf,
    /// Most optimizer steps.
    #[arg(long, default_value_t = 2000)]
    pub steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Peak learning rate of the transformer (about 10x below pretraining).
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Warmup steps (default: 5% of --steps).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// The class head's learning rate as a multiple of --lr (the head starts at zero).
    #[arg(long, default_value_t = 1.0)]
    pub head_lr_scale: f64,
    /// Weight of the generative loss: loss = w · L_gen + L_clf (0: classification only).
    #[arg(long, default_value_t = 1.0)]
    pub gen_weight: f64,
    /// Decoupled weight decay on block projections and the heads.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Validation accuracy every N steps.
    #[arg(long, default_value_t = 200)]
    pub eval_every: u64,
    /// Stop after this many evaluations without improvement.
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
    /// Use only the first N training images (0: all).
    #[arg(long, default_value_t = 0)]
    pub train_images: usize,
    /// Use only the first N test images (0: all).
    #[arg(long, default_value_t = 0)]
    pub test_images: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder: checkpoint.safetensors (the best model, with score.weight),
    /// state.safetensors (for --resume), log.csv, loss.png, accuracy.png, finetune.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the fine-tuning run in --out (same arguments) from its state.
    #[arg(long)]
    pub resume: bool,
    /// Stop (with a state checkpoint) after this step, as an interruption would.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the dfdx model runs: cpu (fused kernels) or cuda (needs a build with
    /// --features cuda).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceKind,
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// Palette file; its size is the model's k.
    #[arg(long)]
    pub palette: PathBuf,
    /// Model shape: a preset (default fw) and overrides.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Seed of the weights (the paper's initialisation).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write a seeded random probe head (probe-head.json format) here.
    #[arg(long)]
    pub probe_head: Option<PathBuf>,
    /// Layer of that probe head (default: the middle block).
    #[arg(long)]
    pub probe_layer: Option<usize>,
    /// Classes of that probe head.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
}

#[derive(clap::Args)]
pub struct ImportHfArgs {
    /// The HF config.json.
    #[arg(long)]
    pub config: PathBuf,
    /// The HF model.safetensors.
    #[arg(long)]
    pub weights: PathBuf,
    /// Attach this palette file (its size must equal vocab_size - 1).
    #[arg(long)]
    pub palette: Option<PathBuf>,
    /// Output checkpoint.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn pretrain_cmd(a: PretrainArgs) -> Result<()> {
    set_threads(a.threads)?;
    let pal = palette::load(&a.palette)?;
    if let Some(v) = a.model.vocab {
        ensure!(
            v == pal.len(),
            "--vocab {v} but {} has {} colours",
            a.palette.display(),
            pal.len()
        );
    }
    let mut margs = a.model.clone();
    margs.vocab = Some(pal.len());
    let model = margs.config(Preset::Fw)?;
    let cfg = PretrainRun {
        data: a.data.clone(),
        model,
        objective: a.objective,
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        warmup: a.warmup,
        adam: AdamConfig {
            weight_decay: a.weight_decay,
            clip: a.clip,
            ..AdamConfig::default()
        },
        seed: a.seed,
        eval_every: a.eval_every,
        val_images: a.val_images,
        train_images: a.train_images,
    };
    let s = igpt::on_device!(a.device, cfg.seed, |dev| pretrain::pretrain_on(
        &dev,
        &cfg,
        &pal,
        &a.out,
        a.resume,
        a.stop_after,
        true
    ))?;
    println!(
        "{}: step {}, train {:.4} bits/dim, validation {:.4} bits/dim, {:.1} s",
        pretrain::checkpoint_path(&a.out).display(),
        s.steps,
        s.train_bpd,
        s.val_bpd,
        s.seconds
    );
    Ok(())
}

pub fn finetune_cmd(a: FinetuneArgs) -> Result<()> {
    set_threads(a.threads)?;
    let cfg = FinetuneRun {
        checkpoint: a.checkpoint.clone(),
        data: a.data.clone(),
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        warmup: a.warmup.unwrap_or((a.steps / 20).max(1)),
        head_lr_scale: a.head_lr_scale,
        gen_weight: a.gen_weight,
        adam: AdamConfig {
            weight_decay: a.weight_decay,
            ..AdamConfig::default()
        },
        eval_every: a.eval_every,
        patience: a.patience,
        train_images: a.train_images,
        test_images: a.test_images,
        seed: a.seed,
    };
    let s = igpt::on_device!(a.device, cfg.seed, |dev| finetune::finetune_on(
        &dev,
        &cfg,
        &a.out,
        a.resume,
        a.stop_after,
        true
    ))?;
    println!(
        "{}: {} steps, best validation accuracy {:.2}% (step {}), test accuracy {:.2}%",
        finetune::checkpoint_path(&a.out).display(),
        s.steps_run,
        100.0 * s.val_accuracy,
        s.best_step,
        100.0 * s.test_accuracy
    );
    Ok(())
}

pub fn import_hf_cmd(a: ImportHfArgs) -> Result<()> {
    igpt::io::guard::ensure_distinct(
        [&a.out],
        [&a.config, &a.weights]
            .into_iter()
            .chain(a.palette.as_ref()),
    )?;
    let mut ck = igpt::io::hf::import_files(&a.config, &a.weights)?;
    if let Some(p) = &a.palette {
        let pal = palette::load(p)?;
        ensure!(
            pal.len() == ck.config.vocab,
            "{}: {} colours, the model has {}",
            p.display(),
            pal.len(),
            ck.config.vocab
        );
        ck.palette = Some(pal);
    }
    ck.save(&a.out)?;
    let c = ck.config;
    println!(
        "{}: {} layers, width {}, {} heads, {}x{}, k {}{}",
        a.out.display(),
        c.layers,
        c.width,
        c.heads,
        c.side,
        c.side,
        c.vocab,
        ck.params.score.as_ref().map_or(String::new(), |s| format!(
            ", class head of {} labels",
            s.rows
        ))
    );
    Ok(())
}

pub fn init_cmd(a: InitArgs) -> Result<()> {
    igpt::io::guard::ensure_distinct(
        [&a.out].into_iter().chain(a.probe_head.as_ref()),
        [&a.palette],
    )?;
    let pal = palette::load(&a.palette)?;
    let mut model = a.model.clone();
    model.vocab = Some(pal.len());
    let c = super::args::allocatable(model.config(Preset::Fw)?)?;
    let dev = dfdx::prelude::Cpu::default();
    let gpt: igpt::nn::Gpt<f32, _> = igpt::nn::Gpt::init(&dev, c, None, a.seed);
    let ck = Checkpoint::from_model(&gpt, Some(pal));
    ck.save(&a.out)?;
    println!(
        "{}: seeded {} layers, width {}, {} heads, {}x{}, k {} ({} parameters)",
        a.out.display(),
        c.layers,
        c.width,
        c.heads,
        c.side,
        c.side,
        c.vocab,
        c.param_count()
    );
    if let Some(path) = &a.probe_head {
        let layer = a.probe_layer.unwrap_or(c.layers / 2);
        ensure!(
            layer <= c.layers,
            "--probe-layer {layer}: the model has 0..={}",
            c.layers
        );
        ensure!(
            (1..=256).contains(&a.classes),
            "--classes must be in 1..=256"
        );
        ProbeHead::seeded(c.width, layer, a.classes, a.seed).save(path)?;
        println!(
            "{}: seeded probe head on layer {layer}, {} classes",
            path.display(),
            a.classes
        );
    }
    Ok(())
}
