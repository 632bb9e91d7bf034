//! The `igpt` command line: parses arguments and dispatches to the library. Every error
//! is printed as one line naming the file and the problem, with exit code 1.

mod cli;

use anyhow::{ensure, Context, Result};
use clap::{Parser, Subcommand};
use cli::args::ModelArgs;
use igpt::data::palette;
use igpt::data::{self, Split};
use igpt::io::checkpoint::Checkpoint;
use igpt::nn::device::DeviceKind;
use igpt::nn::Objective;
use igpt::train::pretrain::{self, PretrainConfig};
use igpt::train::AdamConfig;
use igpt_core::{Config, Preset};
use std::path::PathBuf;

/// iGPT in Rust: generative pretraining from pixels, int8 inference on microcontrollers.
#[derive(Parser)]
#[command(name = "igpt", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fit, import or show a colour palette.
    #[command(subcommand)]
    Palette(PaletteCmd),
    /// Print each image's token ids, one image per line, in the order given.
    Tokenize(TokenizeArgs),
    /// Parameters, multiply-accumulates per image, f32 and int8 sizes of a model shape.
    Info(InfoArgs),
    /// Summarise a dataset: image count, size and images per class.
    Data(DataArgs),
    /// Convert a HuggingFace ImageGPT checkpoint (config.json + model.safetensors).
    ImportHf(ImportHfArgs),
    /// Generative pretraining (AR next-pixel or BERT masked-pixel) with checkpoints.
    Pretrain(PretrainArgs),
    /// Linear probes on every layer's average-pooled features (or on raw pixels).
    Probe(ProbeArgs),
    /// Sample images (KV-cached), or complete images from their top rows.
    Sample(SampleArgs),
    /// Fine-tune a pretrained model on L_gen + L_clf with a class head, early stopping.
    Finetune(FinetuneArgs),
    /// The whole pipeline on an embedded Fashion-MNIST subset: palette, pretraining, probes,
    /// int8 export and classification, samples; prints a summary table.
    Demo(DemoArgs),
    /// Write a seeded, untrained checkpoint (and optionally a seeded probe head): shapes
    /// for benchmarks and firmware tests without training.
    Init(InitArgs),
    /// Write an int8 model file (postcard, CRC-32) for igpt-core and firmware.
    Export(ExportArgs),
    /// Write test vectors for firmware: test images' tokens, labels and the host core's
    /// int8 prediction for each.
    ExportVectors(VectorsArgs),
    /// Classify image files with an int8 model file (igpt-core's path).
    Classify(ClassifyArgs),
    /// int8 probe accuracy on a test split; with --checkpoint also f32, agreement and NLL.
    Eval(EvalArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "igpt-demo")]
    out: PathBuf,
    /// Use this dataset instead of the embedded 2,000 + 500 image subset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// A tiny model on part of the subset: under a minute.
    #[arg(long)]
    quick: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(clap::Args)]
struct InitArgs {
    /// Palette file; its size is the model's k.
    #[arg(long)]
    palette: PathBuf,
    /// Model shape: a preset (default fw) and overrides.
    #[command(flatten)]
    model: ModelArgs,
    /// Seed of the weights (the paper's initialisation).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output checkpoint.
    #[arg(long)]
    out: PathBuf,
    /// Also write a seeded random probe head (probe-head.json format) here.
    #[arg(long)]
    probe_head: Option<PathBuf>,
    /// Layer of that probe head (default: the middle block).
    #[arg(long)]
    probe_layer: Option<usize>,
    /// Classes of that probe head.
    #[arg(long, default_value_t = 10)]
    classes: usize,
}

#[derive(clap::Args)]
struct VectorsArgs {
    /// int8 model file with a probe head.
    #[arg(long)]
    model: PathBuf,
    /// Dataset (test split; resized to the model's side).
    #[arg(long)]
    data: PathBuf,
    /// Images, from the first of the test split.
    #[arg(long, default_value_t = 20)]
    count: usize,
    /// Output vectors file (format in FORMAT.md).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// Checkpoint (with its palette).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Probe head written by `igpt probe` (probe-head.json).
    #[arg(long)]
    probe: Option<PathBuf>,
    /// Keep only the blocks the probe needs (no next-token head): a smaller file.
    #[arg(long)]
    upto_probe_layer: bool,
    /// Output model file.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct ClassifyArgs {
    /// int8 model file with a probe head.
    #[arg(long)]
    model: PathBuf,
    /// Image files (any size; centre-cropped and resized to the model's side).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// int8 model file with a probe head.
    #[arg(long)]
    model: PathBuf,
    /// Dataset (its test split is evaluated).
    #[arg(long)]
    data: PathBuf,
    /// The f32 checkpoint the file was exported from: adds f32 accuracy, agreement, NLL.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Use only the first N test images (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Test images for the bits/dim comparison (AR models with a head).
    #[arg(long, default_value_t = 1000)]
    nll_images: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(clap::Args)]
struct BenchInferArgs {
    /// int8 model file with a probe head.
    #[arg(long)]
    model: PathBuf,
    /// Random images to time.
    #[arg(long, default_value_t = 64)]
    images: usize,
    /// Images per f32 forward (the f32 side is batched; the core runs one at a time).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Alternating int8 / f32 rounds; each side keeps its best.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(clap::Args)]
struct FinetuneArgs {
    /// Pretrained checkpoint (with its palette).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset: the train split (90% fit, 10% validation), the test split at the end.
    #[arg(long)]
    data: PathBuf,
    /// Most optimizer steps.
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Peak learning rate (about 10x below pretraining).
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    /// Validation accuracy every N steps.
    #[arg(long, default_value_t = 200)]
    eval_every: u64,
    /// Stop after this many evaluations without improvement.
    #[arg(long, default_value_t = 3)]
    patience: usize,
    /// Use only the first N training images (0: all).
    #[arg(long, default_value_t = 0)]
    train_images: usize,
    /// Use only the first N test images (0: all).
    #[arg(long, default_value_t = 0)]
    test_images: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder: checkpoint.safetensors (with score.weight), finetune.json.
    #[arg(long)]
    out: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where the dfdx model runs: cpu (fused kernels) or cuda (needs a build with
    /// --features cuda).
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
}

#[derive(clap::Args)]
struct SampleArgs {
    /// Checkpoint with a palette (an AR model).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Unconditional samples to draw.
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Softmax temperature (0: greedy).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Sample only among the K most likely colours.
    #[arg(long)]
    top_k: Option<usize>,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Complete these images instead: each row shows the kept top rows, completions and
    /// the original (as tokens).
    #[arg(long, num_args = 1..)]
    complete: Vec<PathBuf>,
    /// Complete the first N test images of this dataset (with --complete-test).
    #[arg(long)]
    data: Option<PathBuf>,
    /// How many test images of --data to complete.
    #[arg(long, default_value_t = 0)]
    complete_test: usize,
    /// Rows of each image to keep when completing.
    #[arg(long, default_value_t = 7)]
    keep_rows: usize,
    /// Completions per image.
    #[arg(long, default_value_t = 4)]
    completions: usize,
    /// Output PNG grid.
    #[arg(long)]
    out: PathBuf,
    /// cpu: the KV-cached f32 host path; cuda: the dfdx model on the GPU, rerunning the
    /// forward pass over the prefix for each pixel (dfdx has no KV cache).
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// Checkpoint (from pretrain or import-hf with a palette).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset: the train split fits the probe, the test split measures it.
    #[arg(long)]
    data: PathBuf,
    /// Layers to probe: `all` or numbers (0..=L; L is the final norm).
    #[arg(long, default_value = "all", num_args = 1..)]
    layers: Vec<String>,
    /// Fit on only N training images per class (low-data probe).
    #[arg(long)]
    labels_per_class: Option<usize>,
    /// Probe the raw pixels at the model's resolution (the baseline), same code path.
    #[arg(long)]
    raw_pixels: bool,
    /// Use only the first N training images (0: all).
    #[arg(long, default_value_t = 0)]
    train_images: usize,
    /// Use only the first N test images (0: all).
    #[arg(long, default_value_t = 0)]
    test_images: usize,
    /// L2 strengths to choose from on a 10% validation split.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.1,0.01,0.001,0.0001,0.00001"
    )]
    l2: Vec<f64>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Output folder: probe.json, probe-head.json, probe.png.
    #[arg(long)]
    out: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where the feature extraction runs: cpu (fused kernels) or cuda (needs a build
    /// with --features cuda); the logistic regressions run on the CPU.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
}

#[derive(Subcommand)]
enum BenchCmd {
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
struct ImportHfArgs {
    /// The HF config.json.
    #[arg(long)]
    config: PathBuf,
    /// The HF model.safetensors.
    #[arg(long)]
    weights: PathBuf,
    /// Attach this palette file (its size must equal vocab_size - 1).
    #[arg(long)]
    palette: Option<PathBuf>,
    /// Output checkpoint.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct PretrainArgs {
    /// Dataset: CIFAR-10 batches, IDX files or class folders (train split; the test split
    /// is the validation set).
    #[arg(long)]
    data: PathBuf,
    /// Palette file; its size is the model's k.
    #[arg(long)]
    palette: PathBuf,
    /// Model shape: a preset (default fw) and overrides.
    #[command(flatten)]
    model: ModelArgs,
    /// Training objective.
    #[arg(long, value_enum, default_value = "ar")]
    objective: Objective,
    /// Total optimizer steps.
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Peak learning rate (linear warmup, then cosine decay to 0).
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Decoupled weight decay on block projections and the head (the paper used 0).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Clip the global gradient norm (0: off).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Seed of the weights, data order and BERT masks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Validate, log, plot and checkpoint every N steps.
    #[arg(long, default_value_t = 100)]
    eval_every: u64,
    /// Validation images from the test split (0: none).
    #[arg(long, default_value_t = 1000)]
    val_images: usize,
    /// Use only the first N training images (0: all).
    #[arg(long, default_value_t = 0)]
    train_images: usize,
    /// Run folder: checkpoint.safetensors, log.csv, loss.png.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out (same arguments) from its checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stop (with a checkpoint) after this step, as an interruption would.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where the dfdx model runs: cpu (fused kernels) or cuda (needs a build with
    /// --features cuda).
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
}

#[derive(clap::Args)]
struct BenchTrainArgs {
    /// Model shape (default: 4 layers, width 128, 4 heads, 16x16, k 512).
    #[command(flatten)]
    model: ModelArgs,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Run the plain dfdx compositions instead of the fused CPU kernels.
    #[arg(long)]
    reference: bool,
    /// Where the dfdx model runs: cpu (fused kernels) or cuda (needs a build with
    /// --features cuda).
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
}

#[derive(clap::Args)]
struct BenchParityArgs {
    /// HF ImageGPT fixture folder (every case with input_ids and expected outputs).
    #[arg(long, default_value = "../shared/fixtures/hf-imagegpt")]
    fixtures: PathBuf,
    /// The device checked against the fixtures and the CPU reference path.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
}

#[derive(Subcommand)]
enum PaletteCmd {
    /// k-means palette from a dataset's pixels (k-means++ start, Lloyd iterations).
    Fit(FitArgs),
    /// Import OpenAI's kmeans_centers.npy (k x 3 floats in [-1, 1]).
    Import(ImportArgs),
    /// Write a swatch PNG of a palette file.
    Show(ShowArgs),
    /// The uniform grid palette: `levels` values per channel (8 levels, RGB: 512 colours).
    Grid(GridArgs),
}

#[derive(clap::Args)]
struct GridArgs {
    /// Channels: 1 (grey) or 3 (RGB).
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// Values per channel.
    #[arg(long, default_value_t = 8)]
    levels: usize,
    /// Output palette file.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct FitArgs {
    /// Dataset: CIFAR-10 batches, IDX files or class folders (file or folder).
    #[arg(long)]
    data: PathBuf,
    /// Which split to sample pixels from.
    #[arg(long, value_enum, default_value = "train")]
    split: Split,
    /// Number of colours (1..=512).
    #[arg(long, default_value_t = 512)]
    k: usize,
    /// Channels: 1 (grey) or 3 (RGB); default: the dataset's.
    #[arg(long)]
    channels: Option<usize>,
    /// Resize images to side x side before sampling pixels (the model resolution).
    #[arg(long)]
    side: Option<usize>,
    /// Pixels sampled for the fit.
    #[arg(long, default_value_t = 1_000_000)]
    sample: usize,
    /// Most Lloyd iterations.
    #[arg(long, default_value_t = 50)]
    iters: usize,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output palette file.
    #[arg(long)]
    out: PathBuf,
    /// Also write a swatch PNG here.
    #[arg(long)]
    swatch: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ImportArgs {
    /// OpenAI's kmeans_centers.npy.
    #[arg(long)]
    npy: PathBuf,
    /// Output palette file.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct ShowArgs {
    /// Palette file.
    palette: PathBuf,
    /// Output swatch PNG.
    #[arg(long)]
    out: PathBuf,
    /// Colours per row.
    #[arg(long, default_value_t = 32)]
    cols: usize,
    /// Pixels per colour square.
    #[arg(long, default_value_t = 16)]
    cell: usize,
}

#[derive(clap::Args)]
struct TokenizeArgs {
    /// Palette file.
    #[arg(long)]
    palette: PathBuf,
    /// Centre-crop to a square and area-resize to side x side first; without it every
    /// image must already have one common size.
    #[arg(long)]
    side: Option<usize>,
    /// Write what the model sees (decoded tokens, enlarged) as one PNG row.
    #[arg(long)]
    preview: Option<PathBuf>,
    /// Image files (any format the image crate reads: PNG, JPEG, BMP, GIF, TIFF, WebP, PNM).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(clap::Args)]
struct DataArgs {
    /// Dataset: CIFAR-10 batches, IDX files or class folders (file or folder).
    #[arg(long)]
    data: PathBuf,
    /// Which split.
    #[arg(long, value_enum, default_value = "train")]
    split: Split,
}

fn main() {
    igpt::io::keep_freed_memory();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        // One line: the context chain joined with ": ".
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let device = match &cli.cmd {
        Cmd::Pretrain(a) => a.device,
        Cmd::Finetune(a) => a.device,
        Cmd::Probe(a) => a.device,
        Cmd::Sample(a) => a.device,
        Cmd::Bench(BenchCmd::Train(a)) => a.device,
        Cmd::Bench(BenchCmd::Parity(a)) => a.device,
        _ => DeviceKind::Cpu,
    };
    device.check()?;
    match cli.cmd {
        Cmd::Palette(PaletteCmd::Fit(a)) => palette_fit(a),
        Cmd::Palette(PaletteCmd::Import(a)) => {
            let p = palette::import_npy(&a.npy)?;
            palette::save(&a.out, &p)?;
            println!(
                "{}: {} colours, {} channels",
                a.out.display(),
                p.len(),
                p.channels()
            );
            Ok(())
        }
        Cmd::Palette(PaletteCmd::Show(a)) => {
            ensure!(
                a.cols > 0 && a.cell > 0,
                "--cols and --cell must be positive"
            );
            let p = palette::load(&a.palette)?;
            palette::write_swatch(&a.out, &p, a.cols, a.cell)?;
            println!(
                "{}: {} colours, {} channels; swatch written to {}",
                a.palette.display(),
                p.len(),
                p.channels(),
                a.out.display()
            );
            Ok(())
        }
        Cmd::Tokenize(a) => tokenize(a),
        Cmd::ImportHf(a) => {
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
                ck.score.as_ref().map_or(String::new(), |s| format!(
                    ", class head of {} labels",
                    s.rows
                ))
            );
            Ok(())
        }
        Cmd::Pretrain(a) => pretrain_cmd(a),
        Cmd::Sample(a) => sample_cmd(a),
        Cmd::Finetune(a) => {
            set_threads(a.threads)?;
            let cfg = igpt::train::finetune::FinetuneConfig {
                checkpoint: a.checkpoint,
                data: a.data,
                steps: a.steps,
                batch: a.batch,
                lr: a.lr,
                eval_every: a.eval_every,
                patience: a.patience.max(1),
                limit: (a.train_images, a.test_images),
                seed: a.seed,
                out: a.out.clone(),
            };
            let s = igpt::on_device!(
                a.device,
                cfg.seed,
                |dev| igpt::train::finetune::finetune_on(&dev, &cfg, true)
            )?;
            println!(
                "{}: {} steps, best validation accuracy {:.2}%, test accuracy {:.2}%",
                igpt::train::finetune::checkpoint_path(&a.out).display(),
                s.steps,
                100.0 * s.val_accuracy,
                100.0 * s.test_accuracy
            );
            Ok(())
        }
        Cmd::Probe(a) => {
            set_threads(a.threads)?;
            let layers = if a.layers.iter().any(|l| l == "all") {
                None
            } else {
                Some(
                    a.layers
                        .iter()
                        .map(|l| {
                            l.parse::<usize>()
                                .with_context(|| format!("--layers {l}: not a layer number"))
                        })
                        .collect::<Result<Vec<_>>>()?,
                )
            };
            ensure!(
                !a.l2.is_empty() && a.l2.iter().all(|v| *v >= 0.0),
                "--l2 needs non-negative values"
            );
            let run = igpt::eval::probe::ProbeRun {
                checkpoint: a.checkpoint,
                data: a.data,
                layers,
                labels_per_class: a.labels_per_class,
                raw_pixels: a.raw_pixels,
                limit: (a.train_images, a.test_images),
                out: a.out.clone(),
                batch: a.batch.max(1),
                cfg: igpt::eval::probe::ProbeConfig {
                    l2_grid: a.l2,
                    ..Default::default()
                },
            };
            let results = igpt::on_device!(a.device, 0, |dev| igpt::eval::probe::run_on(
                &dev, &run, true
            ))?;
            for (l, r) in &results {
                let name = if *l == usize::MAX {
                    "raw pixels".to_string()
                } else {
                    format!("layer {l}")
                };
                println!(
                    "{name}: test accuracy {:.2}% (L2 {:e})",
                    100.0 * r.test_accuracy,
                    r.l2
                );
            }
            println!("results: {}", a.out.join("probe.json").display());
            Ok(())
        }
        Cmd::Export(a) => export_cmd(a),
        Cmd::Init(a) => init_cmd(a),
        Cmd::Demo(a) => {
            set_threads(a.threads)?;
            let cfg = igpt::demo::DemoConfig {
                out: a.out.clone(),
                data: a.data,
                quick: a.quick,
            };
            let s = igpt::demo::run(&cfg, true)?;
            print!("{}", igpt::demo::table(&s, &a.out));
            Ok(())
        }
        Cmd::ExportVectors(a) => vectors_cmd(a),
        Cmd::Palette(PaletteCmd::Grid(a)) => {
            ensure!((1..=256).contains(&a.levels), "--levels must be in 1..=256");
            let p = palette::uniform_grid(a.channels, a.levels)?;
            palette::save(&a.out, &p)?;
            println!(
                "{}: {} colours, {} channels",
                a.out.display(),
                p.len(),
                p.channels()
            );
            Ok(())
        }
        Cmd::Classify(a) => classify_cmd(a),
        Cmd::Eval(a) => eval_cmd(a),
        Cmd::Bench(BenchCmd::Infer(a)) => bench_infer_cmd(a),
        Cmd::Bench(BenchCmd::Parity(a)) => {
            let checks = igpt::on_device!(a.device, 0, |dev| {
                println!(
                    "bench parity on {}: fixtures {}",
                    a.device.name(),
                    a.fixtures.display()
                );
                igpt::eval::parity::parity(&dev, &a.fixtures)
            })?;
            igpt::eval::parity::report(&checks)
        }
        Cmd::Bench(BenchCmd::Train(a)) => {
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
            println!("model_tflops={:.3}", (six_n + attn) * tps / 1e12);
            println!("tokens_per_s={tps:.1}");
            Ok(())
        }
        Cmd::Info(a) => info(a),
        Cmd::Data(a) => {
            let ds = data::load(&a.data, a.split, None)?;
            println!(
                "{} ({:?}): {} images of {}x{}x{}, {} classes",
                a.data.display(),
                a.split,
                ds.len(),
                ds.width,
                ds.height,
                ds.channels,
                ds.classes.len()
            );
            for (name, n) in ds.classes.iter().zip(ds.class_counts()) {
                println!("  {name:<14} {n}");
            }
            Ok(())
        }
    }
}

fn sample_cmd(a: SampleArgs) -> Result<()> {
    use igpt::eval::sample;
    let ck = Checkpoint::load(&a.checkpoint)?;
    let pal = ck
        .palette
        .clone()
        .with_context(|| format!("{}: the checkpoint has no palette", a.checkpoint.display()))?;
    if ck
        .train
        .as_ref()
        .is_some_and(|t| t.args.contains("\"objective\":\"Bert\""))
    {
        anyhow::bail!(
            "{}: a BERT model does not sample left to right",
            a.checkpoint.display()
        );
    }
    let (side, c) = (ck.config.side, pal.channels());
    let n = side * side;
    ensure!(a.top_k != Some(0), "--top-k must be positive");
    let mut prefixes: Vec<Vec<u16>> = Vec::new();
    let mut originals: Vec<Vec<u16>> = Vec::new();
    let completing = !a.complete.is_empty() || a.complete_test > 0;
    if !completing {
        ensure!(a.n > 0, "--n must be positive");
        prefixes = vec![Vec::new(); a.n];
    } else {
        ensure!(
            a.keep_rows > 0 && a.keep_rows < side,
            "--keep-rows must be in 1..{side}"
        );
        ensure!(a.completions > 0, "--completions must be positive");
        for path in &a.complete {
            let img = data::read_image(path)?;
            let px = data::convert_channels(
                &data::square_resize(&img.rgb, img.width, img.height, 3, side),
                3,
                c,
            )?;
            let mut t = vec![0u16; n];
            pal.tokenize(&px, &mut t)
                .with_context(|| format!("{}: cannot tokenize", path.display()))?;
            originals.push(t);
        }
        if a.complete_test > 0 {
            let d = a.data.as_ref().context("--complete-test needs --data")?;
            originals.extend(igpt::train::pretrain::tokenize_split(
                d,
                data::Split::Test,
                &pal,
                side,
                a.complete_test,
            )?);
        }
        for t in &originals {
            for _ in 0..a.completions {
                prefixes.push(t[..a.keep_rows * side].to_vec());
            }
        }
    }
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(a.seed);
    let t0 = std::time::Instant::now();
    let out = match a.device {
        DeviceKind::Cpu => {
            let w = sample::Weights::new(&ck);
            sample::generate(&w, &prefixes, a.temperature, a.top_k, &mut rng)?
        }
        DeviceKind::Cuda => igpt::on_device!(DeviceKind::Cuda, a.seed, |dev| {
            let gpt: igpt::nn::Gpt<f32, _> = ck.model(&dev);
            sample::generate_full(&gpt, &prefixes, a.temperature, a.top_k, &mut rng)
        })?,
    };
    let secs = t0.elapsed().as_secs_f64();
    sample::draw_grid(&ck, &out, &prefixes, &originals, a.completions, &a.out)?;
    let generated: usize = prefixes.iter().map(|p| n - p.len()).sum();
    println!(
        "{}: {} images, {} sampled tokens in {:.2} s ({:.0} tokens/s, {})",
        a.out.display(),
        out.len(),
        generated,
        secs,
        generated as f64 / secs.max(1e-9),
        match a.device {
            DeviceKind::Cpu => "KV cache",
            DeviceKind::Cuda => "full forward per pixel on cuda",
        }
    );
    Ok(())
}

fn export_cmd(a: ExportArgs) -> Result<()> {
    let ck = Checkpoint::load(&a.checkpoint)?;
    let head = match &a.probe {
        Some(p) => Some(igpt::int8::export::ProbeHead::load(p, ck.config.width)?),
        None => None,
    };
    let (bytes, r) = igpt::int8::export::export(&ck, head.as_ref(), a.upto_probe_layer)
        .with_context(|| a.checkpoint.display().to_string())?;
    igpt::io::write_atomic(&a.out, &bytes)?;
    let c = ck.config;
    println!(
        "{}: {} bytes ({:.3} of the model's {} f32 bytes), {} of {} blocks{}{}",
        a.out.display(),
        r.bytes,
        r.bytes as f64 / r.f32_bytes as f64,
        r.f32_bytes,
        r.stored_layers,
        c.layers,
        head.as_ref().map_or(String::new(), |h| format!(
            ", probe on layer {} ({} classes)",
            h.layer,
            h.classes.len()
        )),
        if r.stored_layers == c.layers {
            ", next-token head"
        } else {
            ""
        },
    );
    if let Some((name, abs, rel)) = r.worst() {
        println!(
            "worst quantization error: {name}: max |w - q*s| = {abs:.3e} ({:.2}% of its max |w|)",
            100.0 * rel
        );
    }
    Ok(())
}

fn init_cmd(a: InitArgs) -> Result<()> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let pal = palette::load(&a.palette)?;
    let mut model = a.model.clone();
    model.vocab = Some(pal.len());
    let c = model.config(Preset::Fw)?;
    let dev = dfdx::prelude::Cpu::default();
    let gpt: igpt::nn::Gpt<f32, _> = igpt::nn::Gpt::init(&dev, c, a.seed);
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
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed ^ 0x9e37);
        let normal = rand_distr::Normal::new(0.0f32, 1.0 / (c.width as f32).sqrt())
            .context("normal distribution")?;
        let head = serde_json::json!({
            "layer": layer.to_string(),
            "classes": (0..a.classes).map(|i| format!("class {i}")).collect::<Vec<_>>(),
            "mean": vec![0.0f32; c.width],
            "std": vec![1.0f32; c.width],
            "weight": (0..a.classes * c.width).map(|_| normal.sample(&mut rng)).collect::<Vec<f32>>(),
            "bias": vec![0.0f32; a.classes],
            "seeded": true,
        });
        igpt::io::write_atomic(path, head.to_string().as_bytes())?;
        println!(
            "{}: seeded probe head on layer {layer}, {} classes",
            path.display(),
            a.classes
        );
    }
    Ok(())
}

fn vectors_cmd(a: VectorsArgs) -> Result<()> {
    let bytes = igpt::int8::export::read_model(&a.model)?;
    let model = igpt_core::Model::parse(&bytes)?;
    let c = *model.config();
    ensure!(a.count > 0, "--count must be positive");
    let ds = data::load(&a.data, Split::Test, Some(c.side))?
        .truncate(a.count)
        .with_channels(model.palette().channels())?;
    let mut buf = igpt::int8::run::Buffers::new(&c);
    let packed = igpt::int8::kernels::Packed::new(&model)?;
    let mut ops = packed.ops();
    let mut out = Vec::new();
    out.extend_from_slice(b"IGPTVEC1");
    out.extend_from_slice(&(ds.len() as u32).to_le_bytes());
    out.extend_from_slice(&(c.seq_len() as u32).to_le_bytes());
    let mut correct = 0;
    for i in 0..ds.len() {
        let mut t = vec![0u16; c.seq_len()];
        model.palette().tokenize(ds.image(i), &mut t)?;
        let mut s = buf.scratch(&c)?;
        // The host's vector kernels: the firmware runs the portable path and checks the
        // two agree bit for bit.
        let p = igpt::int8::run::classify(&model, &mut ops, &t, &mut s)?;
        for v in &t {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let label = ds.labels[i];
        correct += (p.class == label as usize) as usize;
        out.extend_from_slice(&label.to_le_bytes());
        out.extend_from_slice(&(p.class as u16).to_le_bytes());
        out.extend_from_slice(
            &p.probs
                .get(p.class)
                .copied()
                .unwrap_or(0.0)
                .to_bits()
                .to_le_bytes(),
        );
    }
    let crc = igpt_core::crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    igpt::io::write_atomic(&a.out, &out)?;
    println!(
        "{}: {} images, host int8 accuracy {}/{}",
        a.out.display(),
        ds.len(),
        correct,
        ds.len()
    );
    Ok(())
}

fn classify_cmd(a: ClassifyArgs) -> Result<()> {
    let bytes = igpt::int8::export::read_model(&a.model)?;
    let model = igpt_core::Model::parse(&bytes)?;
    let c = *model.config();
    let mut buf = igpt::int8::run::Buffers::new(&c);
    let packed = igpt::int8::kernels::Packed::new(&model)?;
    let mut ops = packed.ops();
    for path in &a.images {
        let tokens = igpt::int8::run::image_tokens(&model, path)?;
        let mut s = buf.scratch(&c)?;
        let p = igpt::int8::run::classify(&model, &mut ops, &tokens, &mut s)
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
        let name = model.class_name(p.class);
        println!(
            "{}: class {} {} (p = {:.3})",
            path.display(),
            p.class,
            if name.is_empty() { "-" } else { name },
            p.probs.get(p.class).copied().unwrap_or(0.0)
        );
    }
    Ok(())
}

fn eval_cmd(a: EvalArgs) -> Result<()> {
    set_threads(a.threads)?;
    let bytes = igpt::int8::export::read_model(&a.model)?;
    let model = igpt_core::Model::parse(&bytes)?;
    let ck = match &a.checkpoint {
        Some(p) => Some(Checkpoint::load(p)?),
        None => None,
    };
    let r = igpt::int8::run::eval(&model, &a.data, ck.as_ref(), a.limit, a.nll_images, true)?;
    println!("images={}", r.images);
    println!("int8_accuracy={:.4}", r.int8_accuracy);
    if let (Some(f), Some(g)) = (r.f32_accuracy, r.agreement) {
        println!("f32_accuracy={f:.4}");
        println!("accuracy_drop_points={:.2}", 100.0 * (f - r.int8_accuracy));
        println!("agreement={g:.4}");
    }
    if let Some((b8, b32)) = r.bits {
        println!("int8_bits_per_dim={b8:.4}");
        if let Some(b) = b32 {
            println!("f32_bits_per_dim={b:.4}");
            println!("nll_increase_percent={:.2}", 100.0 * (b8 / b - 1.0));
        }
    }
    Ok(())
}

fn bench_infer_cmd(a: BenchInferArgs) -> Result<()> {
    use rand::{Rng, SeedableRng};
    ensure!(a.images > 0, "--images must be positive");
    set_threads(Some(1))?;
    let bytes = igpt::int8::export::read_model(&a.model)?;
    let model = igpt_core::Model::parse(&bytes)?;
    let c = *model.config();
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
    let kernels = if r.simd {
        "host AVX-512 VNNI kernels"
    } else {
        "portable kernels: this CPU has no AVX-512 VNNI"
    };
    println!(
        "int8 igpt-core:  {:8.2} images/s (one image at a time, {kernels}; best of {} rounds)",
        r.int8,
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
    println!("speedup={:.2}", r.speedup());
    Ok(())
}

fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        ensure!(t > 0, "--threads must be positive");
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("cannot set the thread count")?;
    }
    Ok(())
}

fn pretrain_cmd(a: PretrainArgs) -> Result<()> {
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
    let cfg = PretrainConfig {
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

fn check_side(side: Option<usize>) -> Result<()> {
    if let Some(s) = side {
        ensure!(
            (1..=igpt_core::config::MAX_SIDE).contains(&s),
            "--side {s} is out of range (1..={})",
            igpt_core::config::MAX_SIDE
        );
    }
    Ok(())
}

fn palette_fit(a: FitArgs) -> Result<()> {
    check_side(a.side)?;
    ensure!(a.sample > 0, "--sample must be positive");
    let ds = data::load(&a.data, a.split, a.side)?;
    let channels = a.channels.unwrap_or(ds.channels);
    ensure!(
        channels == 1 || channels == 3,
        "--channels {channels}: a palette has 1 or 3"
    );
    let ds = ds.with_channels(channels)?;
    let opts = palette::FitOptions {
        k: a.k,
        iters: a.iters,
        sample: a.sample,
        seed: a.seed,
    };
    let (p, stats) = palette::fit(&ds.pixels, channels, opts, true)?;
    palette::save(&a.out, &p)?;
    println!(
        "{}: {} colours x {} channels from {} pixels of {} images, {} iterations, {} re-seeded, mse per channel {:.3}",
        a.out.display(),
        p.len(),
        channels,
        stats.pixels,
        ds.len(),
        stats.iters,
        stats.reseeded,
        stats.mse
    );
    if let Some(s) = a.swatch {
        palette::write_swatch(&s, &p, 32, 16)?;
        println!("swatch: {}", s.display());
    }
    Ok(())
}

fn tokenize(a: TokenizeArgs) -> Result<()> {
    check_side(a.side)?;
    let pal = palette::load(&a.palette)?;
    let c = pal.channels();
    let mut first: Option<(usize, usize, &PathBuf)> = None;
    let mut decoded: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut lines = String::new();
    for path in &a.images {
        let img = data::read_image(path)?;
        let (w, h, rgb) = match a.side {
            Some(s) => (
                s,
                s,
                data::square_resize(&img.rgb, img.width, img.height, 3, s),
            ),
            None => {
                if let Some((fw, fh, fp)) = first {
                    ensure!(
                        (img.width, img.height) == (fw, fh),
                        "{}: image is {}x{} but {} is {fw}x{fh}; images of one size are required (pass --side to resize)",
                        path.display(),
                        img.width,
                        img.height,
                        fp.display()
                    );
                }
                (img.width, img.height, img.rgb)
            }
        };
        first.get_or_insert((w, h, path));
        let n = w * h;
        ensure!(
            n <= igpt_core::config::MAX_SEQ_LEN,
            "{}: {w}x{h} is {n} pixels, more than a model reads ({}); pass --side",
            path.display(),
            igpt_core::config::MAX_SEQ_LEN
        );
        let px = data::convert_channels(&rgb, 3, c)?;
        let mut tokens = vec![0u16; n];
        pal.tokenize(&px, &mut tokens)
            .with_context(|| format!("{}: cannot tokenize", path.display()))?;
        let line: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        lines.push_str(&line.join(" "));
        lines.push('\n');
        if a.preview.is_some() {
            let mut out = vec![0u8; n * c];
            pal.decode_tokens(&tokens, &mut out)?;
            decoded.push((w, h, data::convert_channels(&out, c, 3)?));
        }
    }
    print!("{lines}");
    if let Some(p) = &a.preview {
        write_preview(p, &decoded)?;
        eprintln!("preview: {}", p.display());
    }
    Ok(())
}

/// Lays decoded images in one row, each enlarged by pixel repetition to about 128 pixels.
fn write_preview(path: &std::path::Path, images: &[(usize, usize, Vec<u8>)]) -> Result<()> {
    let (w, h) = (images[0].0, images[0].1);
    let scale = (128 / w.max(h)).max(1);
    let gap = 4;
    let (cw, ch) = (w * scale, h * scale);
    let total_w = images.len() * cw + (images.len() - 1) * gap;
    let mut out = vec![255u8; total_w * ch * 3];
    for (i, (_, _, rgb)) in images.iter().enumerate() {
        let x0 = i * (cw + gap);
        for y in 0..ch {
            for x in 0..cw {
                let s = ((y / scale) * w + x / scale) * 3;
                let d = (y * total_w + x0 + x) * 3;
                out[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
            }
        }
    }
    igpt::io::write_png(path, total_w, ch, 3, &out)
}

fn human(n: u64, unit: &str) -> String {
    let f = n as f64;
    let (v, p) = if f >= 1e12 {
        (f / 1e12, "T")
    } else if f >= 1e9 {
        (f / 1e9, "G")
    } else if f >= 1e6 {
        (f / 1e6, "M")
    } else if f >= 1e3 {
        (f / 1e3, "k")
    } else {
        (f, "")
    };
    format!("{v:.2} {p}{unit}")
}

fn bytes(n: u64) -> String {
    let f = n as f64;
    if f >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", f / (1024.0 * 1024.0 * 1024.0))
    } else if f >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", f / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", f / 1024.0)
    }
}

fn info(a: InfoArgs) -> Result<()> {
    let rows: Vec<(String, Config)> = if a.model.is_empty() {
        Preset::ALL
            .iter()
            .map(|&p| (p.name().to_string(), Config::preset(p)))
            .collect()
    } else {
        let name = a.model.preset.clone().unwrap_or_else(|| "custom".into());
        vec![(name, a.model.config(Preset::Test)?)]
    };
    println!(
        "{:<7} {:>6} {:>6} {:>5} {:>5} {:>4} {:>12} {:>14} {:>11} {:>11}",
        "shape", "layers", "width", "heads", "side", "k", "params", "MACs/image", "f32", "int8"
    );
    for (name, c) in rows {
        println!(
            "{:<7} {:>6} {:>6} {:>5} {:>5} {:>4} {:>12} {:>14} {:>11} {:>11}",
            name,
            c.layers,
            c.width,
            c.heads,
            format!("{0}x{0}", c.side),
            c.vocab,
            human(c.param_count(), ""),
            human(c.macs_per_image(), "MAC"),
            bytes(c.f32_bytes()),
            bytes(c.int8_bytes()),
        );
    }
    println!("MACs/image: a full forward pass with the next-token head, causal attention counted exactly.");
    println!("int8: weights int8 with one f32 scale per output row, norm gains f32 (estimate; no header).");
    Ok(())
}
