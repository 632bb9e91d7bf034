//! `igpt export`, `igpt export-vectors`, `igpt classify`, `igpt eval`: the int8 model.

use super::args::set_threads;
use anyhow::{ensure, Context, Result};
use igpt::io::checkpoint::Checkpoint;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Checkpoint (with its palette).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Probe head written by `igpt probe` (probe-head.json). Without it, a fine-tuned
    /// checkpoint's class head is exported (on the final norm, as fine-tuning trained it).
    #[arg(long)]
    pub probe: Option<PathBuf>,
    /// Keep only the blocks the probe needs (no next-token head): a smaller file.
    #[arg(long)]
    pub upto_probe_layer: bool,
    /// Output model file.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct VectorsArgs {
    /// int8 model file with a probe head.
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset (test split; resized to the model's side).
    #[arg(long)]
    pub data: PathBuf,
    /// Images, from the first of the test split.
    #[arg(long, default_value_t = 20)]
    pub count: usize,
    /// Output vectors file (format in FORMAT.md).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct ClassifyArgs {
    /// int8 model file with a probe head.
    #[arg(long)]
    pub model: PathBuf,
    /// Image files (any size; centre-cropped and resized to the model's side).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// int8 model file with a probe head.
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset (its test split is evaluated).
    #[arg(long)]
    pub data: PathBuf,
    /// The f32 checkpoint the file was exported from: adds f32 accuracy, agreement, NLL.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Use only the first N test images (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Test images for the bits/dim comparison (AR models with a head).
    #[arg(long, default_value_t = 1000)]
    pub nll_images: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn export_cmd(a: ExportArgs) -> Result<()> {
    igpt::io::guard::ensure_distinct(
        [&a.out],
        [&a.checkpoint].into_iter().chain(a.probe.as_ref()),
    )?;
    igpt::io::check_output(&a.out)?;
    let ck = Checkpoint::load(&a.checkpoint)?;
    // A probe head given on the command line, else a fine-tuned checkpoint's class head.
    let head = match &a.probe {
        Some(p) => Some(igpt::int8::export::ProbeHead::load(p, ck.config.width)?),
        None => igpt::int8::export::class_head(&ck),
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

pub fn vectors_cmd(a: VectorsArgs) -> Result<()> {
    igpt::io::guard::ensure_distinct([&a.out], [&a.model, &a.data])?;
    igpt::io::check_output(&a.out)?;
    let bytes = igpt::int8::export::read_model(&a.model)?;
    let model = igpt_core::Model::parse(&bytes)?;
    ensure!(a.count > 0, "--count must be positive");
    let (file, correct, count) = igpt::int8::run::test_vectors(&model, &a.model, &a.data, a.count)?;
    igpt::io::write_atomic(&a.out, &file)?;
    println!(
        "{}: {count} images, host int8 accuracy {correct}/{count}",
        a.out.display(),
    );
    Ok(())
}

pub fn classify_cmd(a: ClassifyArgs) -> Result<()> {
    let bytes = igpt::int8::export::read_model(&a.model)?;
    let model = igpt_core::Model::parse(&bytes)?;
    ensure!(
        model.probe().is_some(),
        "{}: the model file has no probe head; export it with `igpt export --probe probe-head.json`",
        a.model.display()
    );
    let c = *model.config();
    let mut buf = igpt::int8::run::Buffers::new(&c);
    let packed = igpt::int8::kernels::Packed::new(&model)?;
    let mut ops = packed.ops();
    for path in &a.images {
        let tokens = igpt::data::tokenize::image(path, model.palette(), c.side)?;
        let mut s = buf.scratch(&c)?;
        let p = igpt::int8::run::classify(&model, &mut ops, &tokens, &mut s)
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
        igpt::int8::run::ensure_finite_probs(&p, &a.model)?;
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

pub fn eval_cmd(a: EvalArgs) -> Result<()> {
    set_threads(a.threads)?;
    let bytes = igpt::int8::export::read_model(&a.model)?;
    let model = igpt_core::Model::parse(&bytes)?;
    ensure!(
        model.probe().is_some(),
        "{}: the model file has no probe head; export it with `igpt export --probe probe-head.json`",
        a.model.display()
    );
    ensure!(
        a.nll_images <= 100_000,
        "--nll-images {} is out of range (0..=100000)",
        a.nll_images
    );
    let ck = match &a.checkpoint {
        Some(p) => {
            let ck = Checkpoint::load(p)?;
            igpt::int8::run::ensure_exported_from(&model, &ck)
                .with_context(|| format!("{} (model file {})", p.display(), a.model.display()))?;
            Some(ck)
        }
        None => None,
    };
    let r = igpt::int8::run::eval(&model, &a.data, ck.as_ref(), a.limit, a.nll_images, true)?;
    check_classes(&model, &a.model, &r.classes, &a.data)?;
    check_eval_finite(&r, &a)?;
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

/// The data's classes must be the model's: the same count, and the same names where both
/// carry real ones (placeholders match any names: a seeded head's `class i`, and the
/// numbers `0`, `1`, .. that IDX files without a known dataset name get).
fn check_classes(
    model: &igpt_core::Model<'_>,
    path: &std::path::Path,
    classes: &[String],
    data: &std::path::Path,
) -> Result<()> {
    let (_, k) = model.probe().context("no probe head")?;
    ensure!(
        classes.len() == k,
        "{}: {} classes, but the probe head of {} has {k}; evaluate on the data it was fitted to",
        data.display(),
        classes.len(),
        path.display()
    );
    let generic =
        |i: usize, n: &str| n.is_empty() || n == format!("class {i}") || n == i.to_string();
    let placeholder = (0..k).all(|i| generic(i, model.class_name(i)))
        || classes.iter().enumerate().all(|(i, n)| generic(i, n));
    if !placeholder {
        for (i, name) in classes.iter().enumerate() {
            ensure!(
                model.class_name(i) == name,
                "{}: class {i} is `{name}`, but {} names it `{}`; evaluate on the data its head was fitted to",
                data.display(),
                path.display(),
                model.class_name(i)
            );
        }
    }
    Ok(())
}

/// Every number `eval` prints is finite, or the command fails naming the file behind it.
fn check_eval_finite(r: &igpt::int8::run::EvalReport, a: &EvalArgs) -> Result<()> {
    let ck = a
        .checkpoint
        .as_deref()
        .unwrap_or(std::path::Path::new("the checkpoint"));
    ensure!(
        r.int8_finite,
        "{}: the model gives non-finite class probabilities (its probe head or weights hold values too large for the arithmetic)",
        a.model.display()
    );
    ensure!(
        r.f32_finite != Some(false),
        "{}: the f32 model and probe head give non-finite class scores",
        ck.display()
    );
    if let Some((b8, b32)) = r.bits {
        ensure!(
            b8.is_finite(),
            "{}: the int8 bits/dim is {b8} (weights too large for the arithmetic)",
            a.model.display()
        );
        if let Some(b) = b32 {
            ensure!(
                b.is_finite(),
                "{}: the f32 bits/dim is {b} (weights too large for the arithmetic)",
                ck.display()
            );
        }
    }
    Ok(())
}
