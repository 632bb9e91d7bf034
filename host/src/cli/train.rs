//! `igpt pretrain`, `igpt finetune`, `igpt init`, `igpt import-hf`: making checkpoints.

use super::args::{set_threads, ModelArgs};
use anyhow::{ensure, Result};
use igpt::data::palette;
use igpt::io::checkpoint::Checkpoint;
use igpt::io::meta::{
    AdamConfig, FinetuneArgs as FinetuneRun, PretrainArgs as PretrainRun, Schedule,
};
use igpt::io::probe_head::ProbeHead;
use igpt::nn::device::DeviceKind;
use igpt::nn::Objective;
use igpt::train::distributed::{self, Collective, DataParallel};
use igpt::train::trainer::Throughput;
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
    /// Worker threads per process (default: all cores; under MPI, the cores this rank may
    /// use divided by the ranks on its machine).
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
    /// After the warmup: cosine decay to 0 at --steps, or constant (the paper's
    /// fine-tuning: no decay, early stopping at the best validation accuracy).
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: Schedule,
    /// Augment the training images: a random shift of up to one pixel (the uncovered
    /// edge takes the background colour) and a random horizontal flip, before tokenizing.
    #[arg(long)]
    pub augment: bool,
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
    /// Worker threads per process (default: all cores; under MPI, the cores this rank may
    /// use divided by the ranks on its machine).
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
pub struct StripArgs {
    /// The checkpoint (a pretraining or fine-tuning one, with or without training state).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output: the same weights, shape, palette and run arguments, without the optimizer
    /// moments and loop state (about a third of the size; it cannot be resumed). Strip a
    /// finished run: the recorded arguments give the planned steps, not the last one.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct ImportHfArgs {
    /// An HF model folder: reads DIR/config.json, DIR/model.safetensors and, when
    /// present, the clusters of DIR/preprocessor_config.json.
    #[arg(long, conflicts_with_all = ["config", "weights"])]
    pub dir: Option<PathBuf>,
    /// The HF config.json.
    #[arg(long, required_unless_present = "dir")]
    pub config: Option<PathBuf>,
    /// The HF model.safetensors (F32, F16 or BF16).
    #[arg(long, required_unless_present = "dir")]
    pub weights: Option<PathBuf>,
    /// Attach this palette: a palette file, or HF's preprocessor_config.json (its
    /// clusters); its size must equal vocab_size - 1.
    #[arg(long)]
    pub palette: Option<PathBuf>,
    /// Output checkpoint.
    #[arg(long)]
    pub out: PathBuf,
}

/// The thread count of a process: `--threads`, or under MPI (several ranks) the cores
/// this rank may use shared among the ranks on its machine.
fn rank_threads(threads: Option<usize>, comm: &dyn Collective) -> Option<usize> {
    threads.or_else(|| {
        (comm.size() > 1).then(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / comm.local_size().max(1)).max(1)
        })
    })
}

/// After a run: on rank 0 the throughput line (with the allreduce's share of the step
/// time, least and most over the ranks), and under MPI every rank's parameter
/// fingerprint (collective: every rank calls it).
fn report(comm: &dyn Collective, t: &Throughput, steps: u64, fingerprint: Option<u64>) {
    let share = |x: f64| if t.step_s > 0.0 { x / t.step_s } else { 0.0 };
    let all = comm.all_gather_f64(&[share(t.reduce_s), share(t.stage_s)]);
    let reduce: Vec<f64> = all.iter().step_by(2).copied().collect();
    let stage: Vec<f64> = all.iter().skip(1).step_by(2).copied().collect();
    let lo_hi = |v: &[f64]| {
        (
            100.0 * v.iter().copied().fold(f64::INFINITY, f64::min),
            100.0 * v.iter().copied().fold(0.0, f64::max),
        )
    };
    if comm.is_root() {
        let (r0, r1) = lo_hi(&reduce);
        let (s0, s1) = lo_hi(&stage);
        println!(
            "throughput: {:.1} tokens/s over {} steps ({:.1} ms per step; the first step, evaluation and checkpoints excluded); {} rank(s) x {} thread(s); allreduce {r0:.1}-{r1:.1}% and gradient staging {s0:.1}-{s1:.1}% of the step time (least-most over the ranks)",
            t.tokens_per_s,
            t.steps,
            1e3 * t.step_s / t.steps.max(1) as f64,
            comm.size(),
            rayon::current_num_threads(),
        );
    }
    if let Some(f) = fingerprint {
        println!(
            "{}: parameters after step {steps}: fingerprint {f:016x}",
            comm.describe()
        );
    }
}

pub fn pretrain_cmd(a: PretrainArgs) -> Result<()> {
    let comm = distributed::world()?;
    distributed::or_abort(&*comm, || pretrain_rank(a, &*comm))
}

fn pretrain_rank(a: PretrainArgs, comm: &dyn Collective) -> Result<()> {
    set_threads(rank_threads(a.threads, comm))?;
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
    let s = igpt::on_device!(a.device, cfg.seed, |dev| pretrain::pretrain_parallel(
        &dev,
        &cfg,
        &pal,
        &a.out,
        a.resume,
        a.stop_after,
        true,
        &mut DataParallel::new(comm)
    ))?;
    if comm.is_root() {
        println!(
            "{}: step {}, train {:.4} bits/dim, validation {:.4} bits/dim, {:.1} s",
            pretrain::checkpoint_path(&a.out).display(),
            s.steps,
            s.train_bpd,
            s.val_bpd,
            s.seconds
        );
    }
    report(comm, &s.throughput, s.steps, s.fingerprint);
    Ok(())
}

pub fn finetune_cmd(a: FinetuneArgs) -> Result<()> {
    let comm = distributed::world()?;
    distributed::or_abort(&*comm, || finetune_rank(a, &*comm))
}

fn finetune_rank(a: FinetuneArgs, comm: &dyn Collective) -> Result<()> {
    set_threads(rank_threads(a.threads, comm))?;
    let cfg = FinetuneRun {
        checkpoint: a.checkpoint.clone(),
        data: a.data.clone(),
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        warmup: a.warmup.unwrap_or((a.steps / 20).max(1)),
        schedule: a.schedule,
        augment: a.augment,
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
    let s = igpt::on_device!(a.device, cfg.seed, |dev| finetune::finetune_parallel(
        &dev,
        &cfg,
        &a.out,
        a.resume,
        a.stop_after,
        true,
        &mut DataParallel::new(comm)
    ))?;
    if comm.is_root() {
        println!(
            "{}: {} steps, best validation accuracy {:.2}% (step {}), test accuracy {:.2}%",
            finetune::checkpoint_path(&a.out).display(),
            s.steps_run,
            100.0 * s.val_accuracy,
            s.best_step,
            100.0 * s.test_accuracy
        );
    }
    report(comm, &s.throughput, s.steps_run, s.fingerprint);
    Ok(())
}

pub fn import_hf_cmd(a: ImportHfArgs) -> Result<()> {
    let (config, weights, palette) = import_hf_inputs(&a);
    igpt::io::guard::ensure_distinct(
        [&a.out],
        [&config, &weights].into_iter().chain(palette.as_ref()),
    )?;
    igpt::io::check_output(&a.out)?;
    let mut ck = igpt::io::hf::import_files(&config, &weights)?;
    if let Some(p) = &palette {
        let pal = if p.extension().is_some_and(|e| e == "json") {
            igpt::io::hf::palette_file(p)?
        } else {
            palette::load(p)?
        };
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

/// `import-hf`'s config, weights and palette paths: the flags, or `--dir`'s files (its
/// preprocessor_config.json when present and no `--palette` is given).
fn import_hf_inputs(a: &ImportHfArgs) -> (PathBuf, PathBuf, Option<PathBuf>) {
    match &a.dir {
        Some(dir) => {
            let pre = dir.join("preprocessor_config.json");
            let palette = a.palette.clone().or_else(|| pre.is_file().then_some(pre));
            (
                dir.join("config.json"),
                dir.join("model.safetensors"),
                palette,
            )
        }
        None => (
            a.config.clone().unwrap_or_default(),
            a.weights.clone().unwrap_or_default(),
            a.palette.clone(),
        ),
    }
}

pub fn strip_cmd(a: StripArgs) -> Result<()> {
    igpt::io::guard::ensure_distinct([&a.out], [&a.checkpoint])?;
    igpt::io::check_output(&a.out)?;
    let mut ck = Checkpoint::load(&a.checkpoint)?;
    let step = ck.state.take().map(|s| s.step);
    ck.save(&a.out)?;
    let size = |p: &PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    println!(
        "{}: weights only ({} parameters{}), {} bytes (was {})",
        a.out.display(),
        ck.config.param_count(),
        step.map_or(String::new(), |s| format!(", after step {s}")),
        size(&a.out),
        size(&a.checkpoint)
    );
    Ok(())
}

pub fn init_cmd(a: InitArgs) -> Result<()> {
    igpt::io::guard::ensure_distinct(
        [&a.out].into_iter().chain(a.probe_head.as_ref()),
        [&a.palette],
    )?;
    for out in [&a.out].into_iter().chain(a.probe_head.as_ref()) {
        igpt::io::check_output(out)?;
    }
    let pal = palette::load(&a.palette)?;
    if let Some(v) = a.model.vocab {
        ensure!(
            v == pal.len(),
            "--vocab {v} but {} has {} colours",
            a.palette.display(),
            pal.len()
        );
    }
    let mut model = a.model.clone();
    model.vocab = Some(pal.len());
    let c = super::args::allocatable(model.config(Preset::Fw)?)?;
    let layer = a.probe_layer.unwrap_or(c.layers / 2);
    if a.probe_head.is_some() {
        ensure!(
            layer <= c.layers,
            "--probe-layer {layer}: the model has 0..={}",
            c.layers
        );
        ensure!(
            (1..=igpt_core::format::MAX_CLASSES).contains(&a.classes),
            "--classes {}: must be in 1..={}",
            a.classes,
            igpt_core::format::MAX_CLASSES
        );
    } else {
        ensure!(a.probe_layer.is_none(), "--probe-layer needs --probe-head");
    }
    let dev = dfdx::prelude::Cpu::default();
    let gpt: igpt::nn::Gpt<f32, _> = igpt::nn::Gpt::init(&dev, c, None, a.seed);
    let ck = Checkpoint::from_model(&gpt, Some(pal));
    let head = a
        .probe_head
        .as_ref()
        .map(|p| (p, ProbeHead::seeded(c.width, layer, a.classes, a.seed)));
    // Both files or neither.
    igpt::io::write_together(|| {
        ck.save(&a.out)?;
        head.as_ref().map_or(Ok(()), |(p, h)| h.save(p))
    })?;
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
    if let Some((path, _)) = &head {
        println!(
            "{}: seeded probe head on layer {layer}, {} classes",
            path.display(),
            a.classes
        );
    }
    Ok(())
}
