//! `igpt probe`, `igpt sample`: evaluating a representation, sampling and completing
//! images.

use super::args::set_threads;
use anyhow::{ensure, Context, Result};
use igpt::eval::sample;
use igpt::io::checkpoint::Checkpoint;
use igpt::nn::device::DeviceKind;
use igpt::nn::Objective;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// Checkpoint (from pretrain or import-hf with a palette); optional with --raw-pixels
    /// (then --side is required).
    #[arg(long, required_unless_present = "raw_pixels")]
    pub checkpoint: Option<PathBuf>,
    /// Dataset: the train split fits the probe, the test split measures it.
    #[arg(long)]
    pub data: PathBuf,
    /// Layers to probe: `all` or numbers (0..=L; L is the final norm).
    #[arg(long, default_value = "all", num_args = 1..)]
    pub layers: Vec<String>,
    /// Fit on only N training images per class (low-data probe).
    #[arg(long)]
    pub labels_per_class: Option<usize>,
    /// Probe only the raw pixels (the baseline), same code path: at the model's
    /// resolution with --checkpoint, at --side without.
    #[arg(long, conflicts_with_all = ["with_raw_pixels", "concat", "concat_layers"])]
    pub raw_pixels: bool,
    /// Also probe the raw pixels beside the layers, on the same images (one probe.json
    /// holds both; probe.png draws them as a flat line).
    #[arg(long)]
    pub with_raw_pixels: bool,
    /// Resolution of the raw pixels (default: the model's; required for --raw-pixels
    /// without --checkpoint).
    #[arg(long)]
    pub side: Option<usize>,
    /// Channels of the raw pixels, 1 or 3 (default: the palette's with a checkpoint, the
    /// dataset's without).
    #[arg(long)]
    pub channels: Option<usize>,
    /// Also probe the best single layer's features concatenated with up to K layers on
    /// each side (the paper's variant); its head goes to probe-head-concat.json.
    #[arg(long, conflicts_with = "concat_layers")]
    pub concat: Option<usize>,
    /// Also probe these layers' features concatenated, e.g. 2,3,4.
    #[arg(long, value_delimiter = ',')]
    pub concat_layers: Option<Vec<usize>>,
    /// Use only the first N training images (0: all).
    #[arg(long, default_value_t = 0)]
    pub train_images: usize,
    /// Use only the first N test images (0: all).
    #[arg(long, default_value_t = 0)]
    pub test_images: usize,
    /// L2 strengths (on the mean loss; scikit-learn's C = 1/(l2·n)) to choose from by
    /// validation log-loss; the grid widens by factors of 10 past an edge. One value
    /// fixes the L2. Default: 0.1,0.01,0.001,0.0001,0.00001.
    #[arg(long, value_delimiter = ',')]
    pub l2: Option<Vec<f64>>,
    /// Folds of the cross-validation that chooses the L2 (below --cv-below training
    /// images; from it on, a held-out 10%).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Cross-validate below this many training images.
    #[arg(long, default_value_t = 10_000)]
    pub cv_below: usize,
    /// Most extensions of the L2 grid by a factor of 10 past each edge.
    #[arg(long, default_value_t = 3)]
    pub widen: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Output folder: probe.json, probe-head.json, probe-head-concat.json, probe.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the feature extraction runs: cpu (fused kernels) or cuda (needs a build
    /// with --features cuda); the logistic regressions run on the CPU.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceKind,
}

#[derive(clap::Args)]
pub struct SampleArgs {
    /// Checkpoint with a palette (an AR model).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Unconditional samples to draw.
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// Softmax temperature (0: greedy).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Sample only among the K most likely colours.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Complete these images instead: each row shows the kept top rows, completions and
    /// the original (as tokens).
    #[arg(long, num_args = 1..)]
    pub complete: Vec<PathBuf>,
    /// Complete the first N test images of this dataset (with --complete-test).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// How many test images of --data to complete.
    #[arg(long, default_value_t = 0)]
    pub complete_test: usize,
    /// Rows of each image to keep when completing.
    #[arg(long, default_value_t = 7)]
    pub keep_rows: usize,
    /// Completions per image.
    #[arg(long, default_value_t = 4)]
    pub completions: usize,
    /// Output PNG grid.
    #[arg(long)]
    pub out: PathBuf,
    /// cpu: the KV-cached f32 host path; cuda: the dfdx model on the GPU, rerunning the
    /// forward pass over the prefix for each pixel (dfdx has no KV cache).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceKind,
}

pub fn probe_cmd(a: ProbeArgs) -> Result<()> {
    use igpt::eval::probe::{self, Concat, ProbeConfig, ProbeSpec};
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
    let defaults = ProbeConfig::default();
    let cfg = ProbeConfig {
        l2_grid: a.l2.unwrap_or(defaults.l2_grid.clone()),
        folds: a.folds,
        cv_below: a.cv_below,
        widen: a.widen,
        ..defaults
    };
    cfg.validate()?;
    ensure!(a.batch > 0, "--batch must be positive");
    if a.checkpoint.is_none() {
        ensure!(
            a.side.is_some(),
            "--raw-pixels without --checkpoint needs --side"
        );
        ensure!(
            a.layers.iter().all(|l| l == "all"),
            "--layers needs --checkpoint"
        );
    }
    let concat = match (a.concat, a.concat_layers) {
        (Some(k), _) => Some(Concat::Around(k)),
        (None, Some(ls)) => Some(Concat::Layers(ls)),
        (None, None) => None,
    };
    let spec = ProbeSpec {
        checkpoint: a.checkpoint.clone(),
        data: a.data,
        layers,
        labels_per_class: a.labels_per_class,
        raw_pixels: a.raw_pixels,
        with_raw_pixels: a.with_raw_pixels,
        side: a.side,
        channels: a.channels,
        concat,
        limit: (a.train_images, a.test_images),
        out: a.out.clone(),
        batch: a.batch,
        cfg,
    };
    // Without a checkpoint nothing runs on a model device.
    let o = match a.checkpoint {
        Some(_) => igpt::on_device!(a.device, 0, |dev| probe::run_spec_on(&dev, &spec, true))?,
        None => probe::run_spec(&spec, true)?,
    };
    let line = |name: String, r: &probe::LayerResult, extra: String| {
        println!(
            "{name}: test accuracy {:.2}% (L2 {:e}, validation loss {:.4}, accuracy {:.2}%{extra})",
            100.0 * r.test_accuracy,
            r.l2,
            r.val_loss,
            100.0 * r.val_accuracy
        )
    };
    for (l, r) in &o.layers {
        line(format!("layer {l}"), r, String::new());
    }
    if let Some(b) = o.best {
        let (l, r) = &o.layers[b];
        println!(
            "best single layer (the headline, by validation accuracy): layer {l}, test accuracy {:.2}%",
            100.0 * r.test_accuracy
        );
    }
    if let Some((ls, r)) = &o.concat {
        line(
            format!(
                "concat {}",
                igpt::io::probe_head::ProbeLayer::Concat(ls.clone())
            ),
            r,
            String::new(),
        );
    }
    if let Some((r, (side, channels))) = &o.raw {
        line(
            "raw pixels".into(),
            r,
            format!("; {side}x{side}x{channels}"),
        );
    }
    println!("results: {}", a.out.join("probe.json").display());
    Ok(())
}

#[derive(clap::Args)]
pub struct ScalingArgs {
    /// Run folders (from `igpt pretrain`, each probed into its probe/ folder).
    #[arg(long, num_args = 1.., required = true)]
    pub runs: Vec<PathBuf>,
    /// Output folder: scaling.png, scaling-by-layer.png, scaling.md.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn scaling_cmd(a: ScalingArgs) -> Result<()> {
    use igpt::eval::scaling;
    let runs = a
        .runs
        .iter()
        .map(|d| scaling::load_run(d))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}", a.out.display()))?;
    let rows = scaling::table(&runs);
    let mut md = rows.join("\n");
    md.push('\n');
    // The plots and the table, all or none.
    igpt::io::write_together(|| {
        scaling::plot(
            &runs,
            &a.out.join("scaling.png"),
            &a.out.join("scaling-by-layer.png"),
        )?;
        igpt::io::write_atomic(&a.out.join("scaling.md"), md.as_bytes())
    })?;
    for r in &rows {
        println!("{r}");
    }
    println!(
        "plots: {}, {}",
        a.out.join("scaling.png").display(),
        a.out.join("scaling-by-layer.png").display()
    );
    Ok(())
}

pub fn sample_cmd(a: SampleArgs) -> Result<()> {
    igpt::io::guard::ensure_distinct(
        [&a.out],
        [&a.checkpoint]
            .into_iter()
            .chain(&a.complete)
            .chain(a.data.as_ref()),
    )?;
    ensure!(
        a.temperature.is_finite() && (0.0..=100.0).contains(&a.temperature),
        "--temperature {} is out of range (0..=100; 0: greedy)",
        a.temperature
    );
    ensure!(
        (1..=4096).contains(&a.n),
        "--n {} is out of range (1..=4096)",
        a.n
    );
    ensure!(
        (1..=256).contains(&a.completions),
        "--completions {} is out of range (1..=256)",
        a.completions
    );
    ensure!(
        a.complete_test <= 4096 && a.complete.len() <= 4096,
        "at most 4096 images to complete"
    );
    let ck = Checkpoint::load(&a.checkpoint)?;
    let pal = ck.palette_or_err(&a.checkpoint)?;
    if ck.objective() == Objective::Bert {
        anyhow::bail!(
            "{}: a BERT model does not sample left to right",
            a.checkpoint.display()
        );
    }
    let side = ck.config.side;
    let n = side * side;
    ensure!(a.top_k != Some(0), "--top-k must be positive");
    let completing = !a.complete.is_empty() || a.complete_test > 0;
    let (prefixes, originals) = if !completing {
        ensure!(a.n > 0, "--n must be positive");
        (vec![Vec::new(); a.n], Vec::new())
    } else {
        let test = match a.complete_test {
            0 => None,
            count => Some((
                a.data
                    .as_ref()
                    .context("--complete-test needs --data")?
                    .as_path(),
                count,
            )),
        };
        sample::completion_prefixes(&pal, side, &a.complete, test, a.keep_rows, a.completions)?
    };
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(a.seed);
    let t0 = std::time::Instant::now();
    let out = match a.device {
        DeviceKind::Cpu => {
            let w = igpt::nn::kv::Weights::new(ck.config, &ck.params);
            sample::generate(&w, &prefixes, a.temperature, a.top_k, &mut rng)?
        }
        DeviceKind::Cuda => igpt::on_device!(DeviceKind::Cuda, a.seed, |dev| {
            let gpt: igpt::nn::Gpt<f32, _> = ck.model(&dev)?;
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
