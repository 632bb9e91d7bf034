//! Linear probes (the paper's evaluation of a representation): features of every layer
//! from one forward pass per image, standardised, then multinomial logistic regression
//! with an L2 penalty solved to convergence by L-BFGS ([`super::logistic`]), the penalty
//! chosen by validation log-loss: 5-fold cross-validation below 10,000 training rows, a
//! held-out 10% above, the grid widened past an edge ([`select`]).
//!
//! Feature of layer l (l < L): the mean over positions of block l's first norm output
//! (`expected.probe_features.<l>` in the HF fixtures); layer L: the mean of the final
//! norm output.
//!
//! Variants, each labelled in `probe.json`: the single layer (the headline protocol: the
//! best layer by validation accuracy, its head in `probe-head.json`), several layers'
//! features concatenated (the paper's variant; `probe-head-concat.json`), and the raw
//! pixels (the baseline; alone, or beside the layers on the same images).

pub mod select;

pub use super::logistic::{fit_logistic, FitReport, Logistic, Standardizer};
pub use select::{
    probe_features, select_l2, stratified_folds, L2Score, LayerResult, ProbeConfig, Selection,
    Validation,
};

use crate::io::probe_head::{ProbeHead, ProbeLayer};
use crate::nn::{Capture, Captures, Gpt, Kernels};
use anyhow::{ensure, Context, Result};
use dfdx::prelude::*;
use std::path::{Path, PathBuf};

/// Features `[layer][image]` (each `d` long) of `images` (token sequences), computed in
/// batches with one forward pass per batch. AR models read `[SOS, x0 .. x(n-2)]` with the
/// causal mask; BERT models read the whole image unmasked without it.
pub fn features<D: Kernels<f32>>(
    gpt: &Gpt<f32, D>,
    images: &[Vec<u16>],
    batch: usize,
    causal: bool,
    show_progress: bool,
) -> Vec<Vec<Vec<f32>>> {
    let bar = crate::progress::bar(images.len() as u64, "features", show_progress);
    let layers = gpt.config.layers + 1;
    let mut out: Vec<Vec<Vec<f32>>> = vec![Vec::with_capacity(images.len()); layers];
    let sos = gpt.config.sos();
    for chunk in images.chunks(batch.max(1)) {
        let ids = crate::data::tokenize::model_ids(chunk, sos, causal);
        let mut caps = Captures::default();
        let cap = Capture {
            hidden: false,
            probe: true,
        };
        let _ = gpt.forward::<NoneTape>(&ids, chunk.len(), causal, None, cap, &mut caps);
        for (l, f) in caps.probe.iter().enumerate() {
            let v = f.as_vec();
            let d = v.len() / chunk.len();
            out[l].extend(v.chunks_exact(d).map(|r| r.to_vec()));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    out
}

/// Layers whose features a concatenated probe reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concat {
    /// The best single layer (by validation) and up to this many layers on each side.
    Around(usize),
    /// These layers, in this order.
    Layers(Vec<usize>),
}

impl Concat {
    /// The layers for a best single layer `best` of a model with layers `0..=last`.
    pub fn layers(&self, best: usize, last: usize) -> Vec<usize> {
        match self {
            Concat::Around(k) => {
                (best.saturating_sub(*k)..=best.saturating_add(*k).min(last)).collect()
            }
            Concat::Layers(ls) => ls.clone(),
        }
    }
}

/// A `probe` of a checkpoint's layers (or of the raw pixels at its resolution): the
/// demo's form. [`ProbeSpec`] has every option; [`run_on`] runs this one through it.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    /// Checkpoint (with its palette).
    pub checkpoint: PathBuf,
    /// Dataset (train split to fit, test split to measure).
    pub data: PathBuf,
    /// Layers to probe (0..=L, L = the final norm); `None`: all.
    pub layers: Option<Vec<usize>>,
    /// Keep only this many training images per class (low-data probes).
    pub labels_per_class: Option<usize>,
    /// Probe the raw pixels at the model's resolution instead of the model's features.
    pub raw_pixels: bool,
    /// Use only the first N training / test images (0: all).
    pub limit: (usize, usize),
    /// Output folder: probe.json, probe-head.json, probe.png.
    pub out: PathBuf,
    /// Images per forward pass.
    pub batch: usize,
    /// Solver settings.
    pub cfg: ProbeConfig,
}

/// Every option of a probe run (`igpt probe`).
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// Checkpoint (with its palette); optional for a raw-pixel probe.
    pub checkpoint: Option<PathBuf>,
    /// Dataset (train split to fit, test split to measure).
    pub data: PathBuf,
    /// Layers to probe (0..=L, L = the final norm); `None`: all.
    pub layers: Option<Vec<usize>>,
    /// Keep only this many training images per class (low-data probes).
    pub labels_per_class: Option<usize>,
    /// Probe only the raw pixels (the baseline), no model layer.
    pub raw_pixels: bool,
    /// Probe the raw pixels too, beside the layers, on the same images.
    pub with_raw_pixels: bool,
    /// Resolution of the raw pixels (default: the model's; required without a checkpoint).
    pub side: Option<usize>,
    /// Channels of the raw pixels, 1 or 3 (default: the palette's with a checkpoint, the
    /// dataset's without).
    pub channels: Option<usize>,
    /// Also probe these layers' features concatenated.
    pub concat: Option<Concat>,
    /// Use only the first N training / test images (0: all).
    pub limit: (usize, usize),
    /// Output folder: probe.json, probe-head.json (probe-head-concat.json), probe.png.
    pub out: PathBuf,
    /// Images per forward pass.
    pub batch: usize,
    /// L2 search and solver settings.
    pub cfg: ProbeConfig,
}

impl From<&ProbeRun> for ProbeSpec {
    fn from(r: &ProbeRun) -> ProbeSpec {
        ProbeSpec {
            checkpoint: Some(r.checkpoint.clone()),
            data: r.data.clone(),
            layers: r.layers.clone(),
            labels_per_class: r.labels_per_class,
            raw_pixels: r.raw_pixels,
            with_raw_pixels: false,
            side: None,
            channels: None,
            concat: None,
            limit: r.limit,
            out: r.out.clone(),
            batch: r.batch,
            cfg: r.cfg.clone(),
        }
    }
}

/// What a probe run measured.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    /// Single layers, in the order probed (empty for a raw-pixel-only run).
    pub layers: Vec<(usize, LayerResult)>,
    /// Index in `layers` of the best single layer (see [`best_layer`]).
    pub best: Option<usize>,
    /// The raw pixels, and their `(side, channels)`.
    pub raw: Option<(LayerResult, (usize, usize))>,
    /// The concatenated layers' probe.
    pub concat: Option<(Vec<usize>, LayerResult)>,
    /// Training images used (after `labels_per_class`).
    pub train_images: usize,
    /// Test images used.
    pub test_images: usize,
}

impl ProbeOutcome {
    /// `(layer, result)` pairs of the single layers, then the raw pixels as layer
    /// `usize::MAX` (what [`run_on`] returns).
    pub fn into_pairs(self) -> Vec<(usize, LayerResult)> {
        let mut v = self.layers;
        v.extend(self.raw.map(|r| (usize::MAX, r.0)));
        v
    }
}

/// The best single layer: the highest validation accuracy, ties to the lower validation
/// loss, then to the earlier entry. Its index in `layers`.
pub fn best_layer(layers: &[(usize, LayerResult)]) -> Option<usize> {
    (0..layers.len()).reduce(|b, i| {
        let (x, y) = (&layers[i].1, &layers[b].1);
        if x.val_accuracy > y.val_accuracy
            || (x.val_accuracy == y.val_accuracy && x.val_loss < y.val_loss)
        {
            i
        } else {
            b
        }
    })
}

/// A split's model tokens and raw pixels (each empty when not needed), labels, class
/// names.
struct SplitData {
    tokens: Vec<Vec<u16>>,
    pixels: Vec<Vec<f32>>,
    labels: Vec<u16>,
    classes: Vec<String>,
}

impl SplitData {
    fn select(&mut self, keep: &[usize]) {
        if !self.tokens.is_empty() {
            self.tokens = keep.iter().map(|&i| self.tokens[i].clone()).collect();
        }
        if !self.pixels.is_empty() {
            self.pixels = keep.iter().map(|&i| self.pixels[i].clone()).collect();
        }
        self.labels = keep.iter().map(|&i| self.labels[i]).collect();
    }
}

fn scaled(p: &[u8]) -> Vec<f32> {
    p.iter().map(|&v| v as f32 / 255.0).collect()
}

/// The raw pixels of a split at `side` (centre crop + area filter, as the tokenizer does)
/// and `channels` (`None`: the dataset's), scaled to [0, 1]. Returns the channels too.
fn pixel_split(
    path: &Path,
    split: crate::data::Split,
    side: usize,
    channels: Option<usize>,
    limit: usize,
) -> Result<(SplitData, usize)> {
    let ds = crate::data::load(path, split, Some(side))?;
    let ds = if limit > 0 { ds.truncate(limit) } else { ds };
    let ds = match channels {
        Some(c) => ds.with_channels(c)?,
        None => ds,
    };
    let c = ds.channels;
    Ok((
        SplitData {
            tokens: Vec::new(),
            pixels: (0..ds.len()).map(|i| scaled(ds.image(i))).collect(),
            labels: ds.labels.clone(),
            classes: ds.classes.clone(),
        },
        c,
    ))
}

/// Loads a split: the tokens at the model's resolution when `model` is given and the
/// layers are probed, the raw pixels at `geometry` when `raw`.
fn load_split(
    spec: &ProbeSpec,
    model: Option<(&igpt_core::Palette, usize)>,
    geometry: (usize, Option<usize>),
    split: crate::data::Split,
    limit: usize,
) -> Result<(SplitData, usize)> {
    let raw = spec.raw_pixels || spec.with_raw_pixels;
    match model {
        Some((palette, side)) if !spec.raw_pixels => {
            let t = crate::data::tokenize::split(&spec.data, split, palette, side, limit)?;
            let same = geometry.0 == side && geometry.1 == Some(palette.channels());
            let mut s = SplitData {
                tokens: t.tokens,
                pixels: Vec::new(),
                labels: t.labels,
                classes: t.classes,
            };
            if raw && same {
                s.pixels = t.pixels.iter().map(|p| scaled(p)).collect();
            } else if raw {
                let (p, _) = pixel_split(&spec.data, split, geometry.0, geometry.1, limit)?;
                ensure!(
                    p.labels == s.labels,
                    "{}: the raw pixels' labels differ from the tokens'",
                    spec.data.display()
                );
                s.pixels = p.pixels;
            }
            Ok((s, geometry.1.unwrap_or(palette.channels())))
        }
        _ => pixel_split(&spec.data, split, geometry.0, geometry.1, limit),
    }
}

/// Runs a probe: per-layer (or raw-pixel) test accuracy, written to `run.out` as JSON,
/// the best layer's head, and a plot of accuracy by layer. Returns `(layer, result)`
/// pairs (layer `usize::MAX` for raw pixels). Features come from the CPU.
pub fn run(r: &ProbeRun, show_progress: bool) -> Result<Vec<(usize, LayerResult)>> {
    run_on(&dfdx::prelude::Cpu::default(), r, show_progress)
}

/// [`run`] with the features computed on any device (`--device`); the logistic
/// regressions run on the CPU.
pub fn run_on<D: crate::nn::device::ModelDevice>(
    dev: &D,
    r: &ProbeRun,
    show_progress: bool,
) -> Result<Vec<(usize, LayerResult)>> {
    Ok(run_spec_on(dev, &ProbeSpec::from(r), show_progress)?.into_pairs())
}

/// [`run_spec_on`] on the CPU.
pub fn run_spec(spec: &ProbeSpec, show_progress: bool) -> Result<ProbeOutcome> {
    run_spec_on(&dfdx::prelude::Cpu::default(), spec, show_progress)
}

fn note(what: &str, r: &LayerResult) -> String {
    format!(
        "{what}: test accuracy {:.2}% (L2 {:.2e} by {}: validation loss {:.4}, accuracy {:.2}%{}; {} L-BFGS iterations, |grad| {:.1e})",
        100.0 * r.test_accuracy,
        r.l2,
        r.selection.validation.describe(),
        r.val_loss,
        100.0 * r.val_accuracy,
        if r.selection.at_edge {
            ", at the edge of the widened grid"
        } else {
            ""
        },
        r.report.iters,
        r.report.grad_norm
    )
}

/// Runs every probe of `spec` (features on `dev`, regressions on the CPU) and writes
/// `probe.json`, `probe-head.json` (the best single layer, or the raw pixels alone),
/// `probe-head-concat.json` (with a concatenation) and `probe.png` (with model layers:
/// test accuracy by layer, the raw pixels as a flat line when measured).
pub fn run_spec_on<D: crate::nn::device::ModelDevice>(
    dev: &D,
    spec: &ProbeSpec,
    show_progress: bool,
) -> Result<ProbeOutcome> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    spec.cfg.validate()?;
    ensure!(spec.batch > 0, "--batch must be positive");
    if let Some(s) = spec.side {
        ensure!((1..=1024).contains(&s), "--side {s}: not in 1..=1024");
    }
    if let Some(c) = spec.channels {
        ensure!(c == 1 || c == 3, "--channels {c}: 1 (grey) or 3 (RGB)");
    }
    ensure!(
        !(spec.raw_pixels && spec.concat.is_some()),
        "--concat probes model layers: not with --raw-pixels"
    );
    match &spec.concat {
        Some(Concat::Around(k)) => ensure!(*k > 0, "--concat must be positive"),
        Some(Concat::Layers(ls)) => {
            ensure!(ls.len() >= 2, "--concat-layers needs at least two layers");
            for (i, l) in ls.iter().enumerate() {
                ensure!(!ls[..i].contains(l), "--concat-layers: layer {l} twice");
            }
        }
        None => {}
    }
    if let Some(k) = spec.labels_per_class {
        ensure!(k > 0, "--labels-per-class must be positive");
    }
    crate::data::ensure_two_splits(&spec.data, "the probe's test accuracy")?;
    // The folder is this process's until the end; its outputs can be written.
    let _lock = crate::io::lock::RunLock::acquire(&spec.out)?;
    for name in OUTPUTS {
        crate::io::check_output(&spec.out.join(name))?;
    }
    let ck = match &spec.checkpoint {
        Some(p) => Some(crate::io::checkpoint::Checkpoint::load(p)?),
        None => {
            ensure!(
                spec.raw_pixels,
                "--checkpoint is needed to probe a model's layers (without one, only --raw-pixels)"
            );
            None
        }
    };
    let model = match (&ck, &spec.checkpoint) {
        (Some(ck), Some(path)) => {
            let palette = ck.palette_or_err(path)?;
            let last = ck.config.layers;
            for &l in spec.layers.iter().flatten() {
                ensure!(l <= last, "--layers {l}: the model has layers 0..={last}");
            }
            if let Some(Concat::Layers(ls)) = &spec.concat {
                for &l in ls {
                    ensure!(
                        l <= last,
                        "--concat-layers {l}: the model has layers 0..={last}"
                    );
                }
            }
            Some((palette, ck.config.side))
        }
        _ => None,
    };
    let geometry = match &model {
        Some((palette, side)) => (
            spec.side.unwrap_or(*side),
            Some(spec.channels.unwrap_or(palette.channels())),
        ),
        None => (
            spec.side
                .context("--raw-pixels without --checkpoint needs --side")?,
            spec.channels,
        ),
    };
    let model_ref = model.as_ref().map(|(p, s)| (p, *s));
    let (mut tr, channels) = load_split(
        spec,
        model_ref,
        geometry,
        crate::data::Split::Train,
        spec.limit.0,
    )?;
    let (te, _) = load_split(
        spec,
        model_ref,
        (geometry.0, Some(channels)),
        crate::data::Split::Test,
        spec.limit.1,
    )?;
    let classes = tr.classes.clone();
    if let Some(k) = spec.labels_per_class {
        let mut order: Vec<usize> = (0..tr.labels.len()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
            spec.cfg.seed ^ 0x1abe1,
        ));
        let mut taken = vec![0usize; classes.len()];
        let keep: Vec<usize> = order
            .into_iter()
            .filter(|&i| {
                let Some(t) = taken.get_mut(tr.labels[i] as usize) else {
                    return false;
                };
                let ok = *t < k;
                *t += ok as usize;
                ok
            })
            .collect();
        tr.select(&keep);
    }
    ensure!(tr.labels.len() >= 2, "too few training images to probe");
    ensure!(
        tr.labels
            .iter()
            .chain(&te.labels)
            .all(|&l| (l as usize) < classes.len()),
        "{}: a label is past the {} classes",
        spec.data.display(),
        classes.len()
    );
    let n_classes = classes.len();
    ensure!(
        n_classes <= igpt_core::format::MAX_CLASSES,
        "{}: {n_classes} classes; a probe head holds at most {} (what an int8 model file can carry)",
        spec.data.display(),
        igpt_core::format::MAX_CLASSES
    );
    ensure!(
        !te.labels.is_empty(),
        "{}: no test images to measure the probe on",
        spec.data.display()
    );
    let mut out = ProbeOutcome {
        layers: Vec::new(),
        best: None,
        raw: None,
        concat: None,
        train_images: tr.labels.len(),
        test_images: te.labels.len(),
    };
    if spec.raw_pixels || spec.with_raw_pixels {
        let res = probe_features(
            &tr.pixels, &tr.labels, &te.pixels, &te.labels, n_classes, &spec.cfg,
        )
        .context("raw-pixel probe")?;
        if show_progress {
            crate::progress::message(note(
                &format!("raw pixels {}x{}x{channels}", geometry.0, geometry.0),
                &res,
            ));
        }
        out.raw = Some((res, (geometry.0, channels)));
    }
    if let (Some(ck), false) = (&ck, spec.raw_pixels) {
        let bert = ck.objective() == crate::nn::Objective::Bert;
        let gpt: Gpt<f32, D> = ck.model(dev)?;
        let t0 = std::time::Instant::now();
        let ftr = features(&gpt, &tr.tokens, spec.batch, !bert, show_progress);
        let fte = features(&gpt, &te.tokens, spec.batch, !bert, show_progress);
        if show_progress {
            crate::progress::message(format!(
                "features of {} + {} images from one forward pass each: {:.1} s",
                tr.tokens.len(),
                te.tokens.len(),
                t0.elapsed().as_secs_f64()
            ));
        }
        let last = ck.config.layers;
        let layers: Vec<usize> = spec.layers.clone().unwrap_or_else(|| (0..=last).collect());
        let bar = crate::progress::bar(layers.len() as u64, "probe", show_progress);
        for &l in &layers {
            let res = probe_features(
                &ftr[l], &tr.labels, &fte[l], &te.labels, n_classes, &spec.cfg,
            )
            .with_context(|| format!("layer {l}"))?;
            crate::progress::note(&bar, show_progress, note(&format!("layer {l}"), &res));
            bar.inc(1);
            out.layers.push((l, res));
        }
        bar.finish_and_clear();
        out.best = best_layer(&out.layers);
        if let (Some(c), Some(b)) = (&spec.concat, out.best) {
            let ls = c.layers(out.layers[b].0, last);
            let cat = |f: &[Vec<Vec<f32>>]| -> Vec<Vec<f32>> {
                (0..f[0].len())
                    .map(|i| ls.iter().flat_map(|&l| f[l][i].iter().copied()).collect())
                    .collect()
            };
            let res = probe_features(
                &cat(&ftr),
                &tr.labels,
                &cat(&fte),
                &te.labels,
                n_classes,
                &spec.cfg,
            )
            .context("concatenated probe")?;
            if show_progress {
                crate::progress::message(note(
                    &format!("layers {} concatenated", ProbeLayer::Concat(ls.clone())),
                    &res,
                ));
            }
            out.concat = Some((ls, res));
        }
    }
    write_outputs(spec, &out, &classes)?;
    Ok(out)
}

fn entry(variant: &str, layer: &ProbeLayer, r: &LayerResult) -> serde_json::Value {
    serde_json::json!({
        "variant": variant,
        "layer": layer.name(),
        "l2": r.l2,
        "val_loss": r.val_loss,
        "val_accuracy": r.val_accuracy,
        "test_accuracy": r.test_accuracy,
        "iters": r.report.iters,
        "grad_norm": r.report.grad_norm,
        "validation": r.selection.validation.describe(),
        "l2_at_edge": r.selection.at_edge,
        "l2_widened": [r.selection.widened.0, r.selection.widened.1],
        "l2_scores": r.selection.scores.iter().map(|s| serde_json::json!({
            "l2": s.l2, "val_loss": s.val_loss, "val_accuracy": s.val_accuracy,
        })).collect::<Vec<_>>(),
    })
}

fn head(layer: ProbeLayer, classes: &[String], r: &LayerResult) -> ProbeHead {
    ProbeHead {
        layer,
        classes: classes.to_vec(),
        mean: r.standardizer.mean.clone(),
        std: r.standardizer.std.clone(),
        weight: r.head.w.clone(),
        bias: r.head.b.clone(),
        seeded: false,
    }
}

/// The files a probe writes in its folder (an earlier probe's that this one does not
/// write are removed, so that none is taken for this probe's).
const OUTPUTS: [&str; 4] = [
    "probe.json",
    "probe-head.json",
    "probe-head-concat.json",
    "probe.png",
];

/// Writes a probe's files together ([`crate::io::write_together`]): a failure replaces
/// none of an earlier probe's.
fn write_outputs(spec: &ProbeSpec, o: &ProbeOutcome, classes: &[String]) -> Result<()> {
    crate::io::write_together(|| {
        for name in OUTPUTS {
            crate::io::remove_output(&spec.out.join(name))?;
        }
        write_probe_files(spec, o, classes)
    })
}

fn write_probe_files(spec: &ProbeSpec, o: &ProbeOutcome, classes: &[String]) -> Result<()> {
    let raw = o.raw.as_ref().map(|(r, (side, channels))| {
        let mut e = entry("raw_pixels", &ProbeLayer::RawPixels, r);
        e["side"] = (*side).into();
        e["channels"] = (*channels).into();
        e
    });
    let singles: Vec<serde_json::Value> = o
        .layers
        .iter()
        .map(|(l, r)| entry("layer", &ProbeLayer::Layer(*l), r))
        .collect();
    let best = o.best.map(|b| &o.layers[b]);
    let concat = o.concat.as_ref().map(|(ls, r)| {
        let mut e = entry("concat", &ProbeLayer::Concat(ls.clone()), r);
        e["layers"] = serde_json::json!(ls);
        e["around"] = serde_json::json!(best.map(|b| b.0));
        e
    });
    let mut variants = Vec::new();
    if let Some((l, r)) = best {
        let mut e = entry("best_layer", &ProbeLayer::Layer(*l), r);
        e["headline"] = true.into();
        variants.push(e);
    }
    variants.extend(concat.clone());
    variants.extend(raw.clone());
    let (best_name, best_acc, layers) = match (best, &o.raw) {
        (Some((l, r)), _) => (l.to_string(), r.test_accuracy, singles),
        (None, Some((r, _))) => (
            "raw_pixels".to_string(),
            r.test_accuracy,
            raw.clone().into_iter().collect(),
        ),
        (None, None) => anyhow::bail!("no layer probed"),
    };
    let cfg = &spec.cfg;
    let json = serde_json::json!({
        "checkpoint": spec.checkpoint.as_ref().map(|p| p.to_string_lossy()),
        "data": spec.data.to_string_lossy(),
        "train_images": o.train_images,
        "test_images": o.test_images,
        "labels_per_class": spec.labels_per_class,
        "protocol": "single layer, mean-pooled features, standardised; multinomial logistic regression with L2 by L-BFGS; the best layer by validation accuracy (ties: lower validation loss)",
        "selection": {
            "criterion": "validation log-loss (mean cross-entropy)",
            "objective": "mean cross-entropy + l2/2 |W|^2 (scikit-learn C = 1/(l2 n))",
            "folds": cfg.folds,
            "cv_below": cfg.cv_below,
            "holdout_from": "10% (stratified) from cv_below training rows on",
            "l2_grid": cfg.l2_grid,
            "widen": cfg.widen,
            "seed": cfg.seed,
        },
        "layers": layers,
        "best_layer": best_name,
        "best_test_accuracy": best_acc,
        "raw_pixels": raw,
        "concat": concat,
        "variants": variants,
    });
    crate::io::write_atomic(
        &spec.out.join("probe.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    match (best, &o.raw) {
        (Some((l, r)), _) => head(ProbeLayer::Layer(*l), classes, r),
        (None, Some((r, _))) => head(ProbeLayer::RawPixels, classes, r),
        (None, None) => anyhow::bail!("no layer probed"),
    }
    .save(&spec.out.join("probe-head.json"))?;
    if let Some((ls, r)) = &o.concat {
        head(ProbeLayer::Concat(ls.clone()), classes, r)
            .save(&spec.out.join("probe-head-concat.json"))?;
    }
    if !o.layers.is_empty() {
        use crate::io::plot::{line_plot, Series, COLORS};
        let pts: Vec<(f64, f64)> = o
            .layers
            .iter()
            .map(|(l, x)| (*l as f64, 100.0 * x.test_accuracy))
            .collect();
        let mut series = vec![Series {
            label: "probe".into(),
            points: pts.clone(),
            color: COLORS[0],
            markers: true,
        }];
        if let Some((r, _)) = &o.raw {
            let (lo, hi) = pts
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
            let y = 100.0 * r.test_accuracy;
            series.push(Series {
                label: "raw pixels".into(),
                points: vec![(lo, y), (hi, y)],
                color: COLORS[1],
                markers: false,
            });
        }
        line_plot(
            &spec.out.join("probe.png"),
            "LINEAR PROBE ACCURACY BY LAYER",
            "layer (L = final norm)",
            "test accuracy %",
            &series,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subset() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/fashion-mnist-subset")
    }

    fn raw_spec(out: &Path) -> ProbeSpec {
        ProbeSpec {
            checkpoint: None,
            data: subset(),
            layers: None,
            labels_per_class: None,
            raw_pixels: true,
            with_raw_pixels: false,
            side: Some(7),
            channels: None,
            concat: None,
            limit: (300, 100),
            out: out.to_path_buf(),
            batch: 32,
            cfg: ProbeConfig::default(),
        }
    }

    fn json(path: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn err(spec: &ProbeSpec) -> String {
        format!("{:#}", run_spec(spec, false).unwrap_err())
    }

    #[test]
    fn raw_pixels_need_no_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let spec = raw_spec(dir.path());
        let o = run_spec(&spec, false).unwrap();
        let (r, geometry) = o.raw.as_ref().unwrap();
        assert_eq!(*geometry, (7, 1), "the dataset's one channel");
        assert!(o.layers.is_empty() && o.best.is_none() && o.concat.is_none());
        assert_eq!((o.train_images, o.test_images), (300, 100));
        assert_eq!(r.standardizer.mean.len(), 49);
        assert!(r.test_accuracy > 0.5, "{}", r.test_accuracy);
        let j = json(&dir.path().join("probe.json"));
        assert!(j["checkpoint"].is_null());
        assert_eq!(j["best_layer"], "raw_pixels");
        assert_eq!(j["layers"][0]["variant"], "raw_pixels");
        assert_eq!(j["variants"].as_array().unwrap().len(), 1);
        assert_eq!(j["raw_pixels"]["side"], 7);
        assert_eq!(j["raw_pixels"]["validation"], "5-fold cross-validation");
        assert_eq!(j["raw_pixels"]["l2"].as_f64(), Some(r.l2));
        let head = ProbeHead::load(&dir.path().join("probe-head.json"), 49).unwrap();
        assert_eq!(head.layer, ProbeLayer::RawPixels);
        assert_eq!(head.weight, r.head.w);
        assert!(!dir.path().join("probe.png").exists(), "no layers to plot");
        // Low-data subsets, and the options' errors.
        let few = ProbeSpec {
            labels_per_class: Some(3),
            ..spec.clone()
        };
        assert_eq!(run_spec(&few, false).unwrap().train_images, 30);
        for (bad, want) in [
            (
                ProbeSpec {
                    side: None,
                    ..spec.clone()
                },
                "--side",
            ),
            (
                ProbeSpec {
                    raw_pixels: false,
                    ..spec.clone()
                },
                "--checkpoint",
            ),
            (
                ProbeSpec {
                    side: Some(0),
                    ..spec.clone()
                },
                "--side 0",
            ),
            (
                ProbeSpec {
                    channels: Some(2),
                    ..spec.clone()
                },
                "--channels 2",
            ),
            (
                ProbeSpec {
                    batch: 0,
                    ..spec.clone()
                },
                "--batch",
            ),
            (
                ProbeSpec {
                    labels_per_class: Some(0),
                    ..spec.clone()
                },
                "--labels-per-class",
            ),
            (
                ProbeSpec {
                    concat: Some(Concat::Around(1)),
                    ..spec.clone()
                },
                "--concat",
            ),
            (
                ProbeSpec {
                    cfg: ProbeConfig {
                        l2_grid: vec![1e-2, f64::INFINITY],
                        ..Default::default()
                    },
                    ..spec.clone()
                },
                "--l2 inf",
            ),
            (
                ProbeSpec {
                    data: dir.path().join("missing"),
                    ..spec.clone()
                },
                "missing",
            ),
        ] {
            let e = err(&bad);
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn layers_raw_pixels_and_a_concatenation_in_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let config = igpt_core::Config {
            vocab: 16,
            side: 7,
            width: 16,
            heads: 2,
            layers: 2,
        };
        let gpt: Gpt<f32, Cpu> = Gpt::init(&Cpu::default(), config, None, 3);
        let palette = crate::data::palette::uniform_grid(1, 16).unwrap();
        let ck = dir.path().join("ck.safetensors");
        crate::io::checkpoint::Checkpoint::from_model(&gpt, Some(palette))
            .save(&ck)
            .unwrap();
        let out = dir.path().join("probe");
        let spec = ProbeSpec {
            checkpoint: Some(ck.clone()),
            raw_pixels: false,
            with_raw_pixels: true,
            side: None,
            concat: Some(Concat::Around(1)),
            limit: (200, 60),
            ..raw_spec(&out)
        };
        let o = run_spec(&spec, false).unwrap();
        assert_eq!(
            o.layers.iter().map(|l| l.0).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        let best = o.layers[o.best.unwrap()].0;
        let (ls, cr) = o.concat.as_ref().unwrap();
        assert_eq!(
            *ls,
            (best.saturating_sub(1)..=(best + 1).min(2)).collect::<Vec<_>>()
        );
        assert_eq!(cr.standardizer.mean.len(), 16 * ls.len());
        let (raw, geometry) = o.raw.as_ref().unwrap();
        assert_eq!(
            *geometry,
            (7, 1),
            "the model's side, the palette's channels"
        );
        // The same images as the layers: the raw pixels alone give the same probe.
        let alone = ProbeSpec {
            limit: (200, 60),
            ..raw_spec(&dir.path().join("raw"))
        };
        let alone = run_spec(&alone, false).unwrap();
        let alone = &alone.raw.as_ref().unwrap().0;
        assert_eq!(alone.standardizer, raw.standardizer);
        assert_eq!(alone.l2, raw.l2);
        let j = json(&out.join("probe.json"));
        let variants: Vec<&str> = j["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["variant"].as_str().unwrap())
            .collect();
        assert_eq!(variants, ["best_layer", "concat", "raw_pixels"]);
        assert_eq!(j["variants"][0]["headline"], true);
        assert_eq!(j["best_layer"], best.to_string());
        assert_eq!(j["layers"].as_array().unwrap().len(), 3);
        assert!(j["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["variant"] == "layer"));
        assert_eq!(j["concat"]["layers"], serde_json::json!(ls));
        let head = ProbeHead::load(&out.join("probe-head.json"), 16).unwrap();
        assert_eq!(head.layer, ProbeLayer::Layer(best));
        let cat = ProbeHead::load(&out.join("probe-head-concat.json"), 16).unwrap();
        assert_eq!(cat.layer, ProbeLayer::Concat(ls.clone()));
        assert!(out.join("probe.png").is_file());
        // Chosen layers, and their errors.
        let two = ProbeSpec {
            concat: Some(Concat::Layers(vec![2, 0])),
            with_raw_pixels: false,
            ..spec.clone()
        };
        let o2 = run_spec(&two, false).unwrap();
        assert_eq!(o2.concat.as_ref().unwrap().0, vec![2, 0]);
        assert!(o2.raw.is_none());
        for (ls, want) in [
            (vec![0, 3], "--concat-layers 3"),
            (vec![1, 1], "twice"),
            (vec![1], "two layers"),
        ] {
            let bad = ProbeSpec {
                concat: Some(Concat::Layers(ls)),
                ..spec.clone()
            };
            let e = err(&bad);
            assert!(e.contains(want), "{want}: {e}");
        }
        let e = err(&ProbeSpec {
            layers: Some(vec![4]),
            ..spec.clone()
        });
        assert!(e.contains("--layers 4"), "{e}");
        // The demo's form runs through the same path.
        let legacy = ProbeRun {
            checkpoint: ck,
            data: subset(),
            layers: Some(vec![1]),
            labels_per_class: None,
            raw_pixels: false,
            limit: (200, 60),
            out: dir.path().join("legacy"),
            batch: 16,
            cfg: ProbeConfig::default(),
        };
        let pairs = run(&legacy, false).unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].0, 1);
        assert_eq!(pairs[0].1.l2, o.layers[1].1.l2);
    }
}
