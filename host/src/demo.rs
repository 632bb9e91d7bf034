//! `igpt demo`: the project in one command on a Fashion-MNIST subset embedded in the
//! binary (2,000 training and 2,000 test images, `data/fashion-mnist-subset/`, MIT), in
//! the order a user asks the questions:
//! 1. the shipped classifier (`models/`) on the embedded test images, f32 and int8;
//! 2. the shipped pretrained model's linear probe with the subset's 2,000 labels, beside
//!    raw pixels and a random-init control of its shape, paired tests on the same images;
//! 3. what a few minutes of training on this machine give: palette → pretraining →
//!    linear probes → int8 export → classification with igpt-core → samples and
//!    completions.
//!
//! Detail (training and per-layer probe lines) goes to `demo.log` in the output folder;
//! the terminal gets one status line per stage and the summary table ([`table`]).

use crate::eval::paired::McNemar;
use crate::eval::probe::{self, ProbeConfig, ProbeOutcome, ProbeSpec};
use crate::io::checkpoint::Checkpoint;
use crate::nn::Objective;
use crate::train::pretrain::{self, PretrainConfig};
use crate::train::AdamConfig;
use anyhow::{Context, Result};
use igpt_core::{Config, Model, Preset};
use serde::Serialize;
use std::path::{Path, PathBuf};
/// The embedded subset, as the IDX `.gz` files of the original dataset.
const SUBSET: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../../data/fashion-mnist-subset/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../../data/fashion-mnist-subset/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../../data/fashion-mnist-subset/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../../data/fashion-mnist-subset/t10k-labels-idx1-ubyte.gz"),
    ),
];

/// The shipped pretrained model (weights-only f32 checkpoint with its palette), as the
/// path of this source tree's `models/` folder.
pub const SHIPPED_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/fm-ar-6x192.safetensors"
);

/// The shipped classifier (int8): the shipped model with the linear probe of its layer 4
/// fitted on all 60,000 Fashion-MNIST training labels (`models/README.md`).
pub const SHIPPED_CLASSIFIER: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../models/fm-ar-6x192.igpt");

/// Labels the shipped classifier's head was fitted on.
pub const SHIPPED_CLASSIFIER_LABELS: usize = 60_000;

/// A trained classifier to measure first: its int8 file and the f32 checkpoint it was
/// exported from.
#[derive(Debug, Clone)]
pub struct ClassifierFiles {
    /// The int8 model file with its head.
    pub model: PathBuf,
    /// The f32 checkpoint it was exported from.
    pub checkpoint: PathBuf,
    /// Labels its head was trained on.
    pub labels: usize,
}

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Output folder.
    pub out: PathBuf,
    /// A dataset instead of the embedded subset.
    pub data: Option<PathBuf>,
    /// A tiny model and few steps: under a minute.
    pub quick: bool,
    /// A trained classifier to measure on the test images (the shipped one).
    pub classifier: Option<ClassifierFiles>,
    /// A pretrained checkpoint (the shipped `models/` one) to probe on the same images,
    /// beside raw pixels and a random-init control of its shape.
    pub pretrained: Option<PathBuf>,
}

/// The trained classifier on the test images.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifierRows {
    /// The int8 file.
    pub model: PathBuf,
    /// Its shape.
    pub layers: usize,
    /// Its width.
    pub width: usize,
    /// Layer its head reads (L: the final norm).
    pub head_layer: usize,
    /// Labels its head was trained on.
    pub labels: usize,
    /// Test accuracy of the f32 checkpoint with the same head.
    pub f32_accuracy: f64,
    /// Test accuracy of the int8 file through igpt-core.
    pub int8_accuracy: f64,
    /// Share of test images where int8 and f32 give the same class.
    pub agreement: f64,
}

/// The pretrained model's linear probe with the demo's labels, and its controls.
#[derive(Debug, Clone, Serialize)]
pub struct PretrainedRows {
    /// The checkpoint.
    pub path: PathBuf,
    /// Its layers.
    pub layers: usize,
    /// Its width.
    pub width: usize,
    /// Its pretraining steps and images per step (0 when the file does not say).
    pub steps: u64,
    /// Images per pretraining step.
    pub batch: usize,
    /// Best probe layer (by validation) and its test accuracy.
    pub probe_layer: usize,
    /// Test accuracy of that probe.
    pub probe_accuracy: f64,
    /// The same probe on a seeded untrained model of the same shape: best layer.
    pub random_init_layer: usize,
    /// Its test accuracy.
    pub random_init_accuracy: f64,
    /// The probe against raw pixels on the same images.
    pub vs_raw_pixels: McNemar,
}

/// The model trained from scratch by the demo.
#[derive(Debug, Clone, Serialize)]
pub struct ScratchRows {
    /// Its shape.
    pub layers: usize,
    /// Its width.
    pub width: usize,
    /// Its side in pixels.
    pub side: usize,
    /// Palette colours.
    pub vocab: usize,
    /// Parameters.
    pub parameters: u64,
    /// Pretraining steps.
    pub steps: u64,
    /// Final validation bits per dimension.
    pub val_bits_per_dim: f64,
    /// Wall time of the pretraining in this process (0 when a finished run was kept).
    pub train_seconds: f64,
    /// Best probe layer (by validation).
    pub probe_layer: usize,
    /// Its f32 test accuracy.
    pub probe_accuracy: f64,
    /// The probe against raw pixels on the same images.
    pub vs_raw_pixels: McNemar,
    /// Its int8 export, and sampling.
    #[serde(flatten)]
    pub int8: ExportRows,
}

/// The demo model's int8 export through igpt-core, and its sampling speed.
#[derive(Debug, Clone, Serialize)]
pub struct ExportRows {
    /// Test accuracy of the int8 export through igpt-core.
    pub int8_accuracy: f64,
    /// Share of test images where int8 and f32 give the same class.
    pub agreement: f64,
    /// Bytes of the f32 weights.
    pub f32_bytes: u64,
    /// Bytes of the int8 file (only the blocks the probe reads).
    pub int8_file_bytes: usize,
    /// Blocks in the int8 file.
    pub stored_layers: usize,
    /// Images per second of the core's int8 classification (all threads).
    pub int8_images_per_s: f64,
    /// Sampling speed.
    pub sample_tokens_per_s: f64,
}

/// What the demo measured (`summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// Labelled training images (the probes' labels).
    pub train_images: usize,
    /// Test images every row is measured on.
    pub test_images: usize,
    /// Logistic regression on the raw pixels at the demo model's resolution.
    pub raw_pixel_accuracy: f64,
    /// The shipped classifier, when measured.
    pub classifier: Option<ClassifierRows>,
    /// The pretrained model's probe, when one was given.
    pub pretrained: Option<PretrainedRows>,
    /// The demo's own model.
    pub scratch: ScratchRows,
}

/// The raw-pixel probe: accuracy and per-image correctness, at a side.
struct RawPixels {
    side: usize,
    accuracy: f64,
    correct: Vec<bool>,
}

impl RawPixels {
    fn of(o: &ProbeOutcome) -> Option<RawPixels> {
        o.raw.as_ref().map(|(r, (side, _))| RawPixels {
            side: *side,
            accuracy: r.test_accuracy,
            correct: r.test_correct.clone(),
        })
    }
}

/// Runs the demo into `cfg.out`. Re-running resumes the pretraining (a finished run is
/// kept) and redoes the rest.
pub fn run(cfg: &DemoConfig, show: bool) -> Result<DemoSummary> {
    let out = &cfg.out;
    claim_folder(cfg)?;
    let data = demo_data(cfg)?;
    let _log = crate::progress::DetailLog::to(&out.join("demo.log"))?;
    let limit = if cfg.quick { (600, 200) } else { (0, 0) };
    let stages = 1 + cfg.classifier.is_some() as usize + cfg.pretrained.is_some() as usize;
    let mut stage = 0;
    let mut say = |s: String| {
        stage += 1;
        if show {
            crate::progress::status(format!("demo [{stage}/{stages}]: {s}"));
        }
    };
    let classifier = match &cfg.classifier {
        Some(c) => {
            say(format!("the shipped classifier {}", c.model.display()));
            Some(measure_classifier(c, &data, limit.1)?)
        }
        None => None,
    };
    let (pretrained, raw) = match &cfg.pretrained {
        Some(p) => {
            say(format!(
                "linear probes of {} with the subset's labels, raw pixels and a random-init control",
                p.display()
            ));
            let (rows, raw) = probe_pretrained(p, &data, limit, out, show)?;
            (Some(rows), raw)
        }
        None => (None, None),
    };
    say("training a small model from scratch (the minutes of this demo)".into());
    let (scratch, raw, images) = train_from_scratch(cfg, &data, limit, raw, show)?;
    let summary = DemoSummary {
        train_images: images.0,
        test_images: images.1,
        raw_pixel_accuracy: raw.accuracy,
        classifier,
        pretrained,
        scratch,
    };
    crate::io::write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    Ok(summary)
}

/// The dataset folder: `--data`, or the embedded subset written into the output folder.
fn demo_data(cfg: &DemoConfig) -> Result<PathBuf> {
    if let Some(d) = &cfg.data {
        return Ok(d.clone());
    }
    let dir = cfg.out.join("data");
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    for (name, bytes) in SUBSET {
        crate::io::write_atomic(&dir.join(name), bytes)?;
    }
    Ok(dir)
}

/// The classifier's int8 file and its f32 checkpoint on the first `limit` test images
/// (0: all).
fn measure_classifier(c: &ClassifierFiles, data: &Path, limit: usize) -> Result<ClassifierRows> {
    let bytes = crate::int8::export::read_model(&c.model)?;
    let m = Model::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", c.model.display()))?;
    let ck = Checkpoint::load(&c.checkpoint)?;
    let (head_layer, _) = m
        .probe()
        .with_context(|| format!("{}: has no classifier head", c.model.display()))?;
    let ev = crate::int8::run::eval(&m, data, Some(&ck), limit, 0, false)?;
    let cfg = m.config();
    Ok(ClassifierRows {
        model: c.model.clone(),
        layers: cfg.layers,
        width: cfg.width,
        head_layer,
        labels: c.labels,
        f32_accuracy: ev.f32_accuracy.context("no f32 accuracy")?,
        int8_accuracy: ev.int8_accuracy,
        agreement: ev.agreement.context("no f32 agreement")?,
    })
}

/// The probe settings every demo probe shares.
fn probe_spec(checkpoint: PathBuf, data: &Path, limit: (usize, usize), out: PathBuf) -> ProbeSpec {
    ProbeSpec {
        checkpoint: Some(checkpoint),
        data: data.to_path_buf(),
        layers: None,
        labels_per_class: None,
        raw_pixels: false,
        with_raw_pixels: false,
        side: None,
        channels: None,
        concat: None,
        limit,
        out,
        batch: 64,
        cfg: ProbeConfig::default(),
    }
}

/// The best layer (by validation) of a probe run: layer, test accuracy, per-image
/// correctness.
fn best_of(o: &ProbeOutcome) -> Result<(usize, f64, &[bool])> {
    let i = o.best.context("no layer probed")?;
    let (layer, r) = &o.layers[i];
    Ok((*layer, r.test_accuracy, &r.test_correct))
}

/// Probes `path` (every layer, and the raw pixels beside them) and a seeded untrained
/// model of its shape and palette on the demo's images.
fn probe_pretrained(
    path: &Path,
    data: &Path,
    limit: (usize, usize),
    out: &Path,
    show: bool,
) -> Result<(PretrainedRows, Option<RawPixels>)> {
    let ck = Checkpoint::load(path)?;
    let palette = ck.palette_or_err(path)?;
    let mut spec = probe_spec(
        path.to_path_buf(),
        data,
        limit,
        out.join("pretrained-probe"),
    );
    spec.with_raw_pixels = true;
    let trained = probe::run_spec(&spec, show)?;
    let raw = RawPixels::of(&trained).context("no raw-pixel probe")?;
    let init_path = out.join("random-init.safetensors");
    let dev = dfdx::prelude::Cpu::default();
    let gpt: crate::nn::Gpt<f32, _> = crate::nn::Gpt::init(&dev, ck.config, None, 0);
    let mut init = Checkpoint::from_model(&gpt, Some(palette));
    // The same run arguments with 0 steps: the same objective, so the probe uses the same
    // attention mask (causal for AR).
    init.pretrain = ck
        .pretrain
        .clone()
        .map(|a| PretrainConfig { steps: 0, ..a });
    init.save(&init_path)?;
    let control = probe::run_spec(
        &probe_spec(init_path, data, limit, out.join("random-init-probe")),
        show,
    )?;
    let (probe_layer, probe_accuracy, correct) = best_of(&trained)?;
    let (random_init_layer, random_init_accuracy, _) = best_of(&control)?;
    let rows = PretrainedRows {
        path: path.to_path_buf(),
        layers: ck.config.layers,
        width: ck.config.width,
        steps: ck.pretrain.as_ref().map_or(0, |a| a.steps),
        batch: ck.pretrain.as_ref().map_or(0, |a| a.batch),
        probe_layer,
        probe_accuracy,
        random_init_layer,
        random_init_accuracy,
        vs_raw_pixels: McNemar::of(correct, &raw.correct),
    };
    Ok((rows, Some(raw)))
}

/// The demo's pretraining settings: the `fw` shape for 300 steps (`--quick`: a tiny
/// model for 40).
fn scratch_config(
    cfg: &DemoConfig,
    data: &Path,
    k: usize,
    side: usize,
    limit: usize,
) -> Result<PretrainConfig> {
    let q = cfg.quick;
    let model = if q {
        Config::new(k, side, 32, 4, 2)?
    } else {
        Config {
            vocab: k,
            ..Config::preset(Preset::Fw)
        }
    };
    Ok(PretrainConfig {
        data: data.to_path_buf(),
        model,
        objective: Objective::Ar,
        steps: if q { 40 } else { 300 },
        batch: if q { 16 } else { 32 },
        lr: 3e-3,
        warmup: if q { 5 } else { 30 },
        adam: AdamConfig::default(),
        seed: 0,
        eval_every: if q { 20 } else { 50 },
        val_images: if q { 100 } else { 500 },
        train_images: limit,
    })
}

/// Palette, pretraining and probes of the demo's own model; the raw pixels are probed
/// beside it unless `raw` already holds them at its side. Returns its rows, the raw
/// pixels and the (train, test) image counts.
fn train_from_scratch(
    cfg: &DemoConfig,
    data: &Path,
    limit: (usize, usize),
    raw: Option<RawPixels>,
    show: bool,
) -> Result<(ScratchRows, RawPixels, (usize, usize))> {
    let out = &cfg.out;
    let (side, k) = if cfg.quick { (8, 8) } else { (14, 16) };
    let ds = crate::data::load(data, crate::data::Split::Train, Some(side))?.with_channels(1)?;
    let ds = if limit.0 > 0 {
        ds.truncate(limit.0)
    } else {
        ds
    };
    let opts = crate::data::palette::FitOptions {
        k,
        iters: 50,
        sample: 200_000,
        seed: 0,
    };
    let (palette, _) = crate::data::palette::fit(&ds.pixels, 1, opts, show)?;
    crate::data::palette::save(&out.join("palette.pal"), &palette)?;
    let pcfg = scratch_config(cfg, data, k, side, limit.0)?;
    let run_dir = out.join("run");
    let resume = pretrain::checkpoint_path(&run_dir).exists();
    let s = pretrain::pretrain(&pcfg, &palette, &run_dir, resume, None, show)?;
    let ck_path = pretrain::checkpoint_path(&run_dir);
    let raw = raw.filter(|r| r.side == side);
    let mut spec = probe_spec(ck_path.clone(), data, limit, out.join("probe"));
    spec.with_raw_pixels = raw.is_none();
    let probed = probe::run_spec(&spec, show)?;
    let raw = match raw {
        Some(r) => r,
        None => RawPixels::of(&probed).context("no raw-pixel probe")?,
    };
    let (probe_layer, probe_accuracy, correct) = best_of(&probed)?;
    let vs_raw_pixels = McNemar::of(correct, &raw.correct);
    let images = (probed.train_images, probed.test_images);
    let ck = Checkpoint::load(&ck_path)?;
    let c = ck.config;
    let rows = ScratchRows {
        layers: c.layers,
        width: c.width,
        side: c.side,
        vocab: c.vocab,
        parameters: c.param_count(),
        steps: s.steps,
        val_bits_per_dim: s.val_bpd,
        train_seconds: s.seconds,
        probe_layer,
        probe_accuracy,
        vs_raw_pixels,
        int8: export_and_sample(&ck, data, limit.1, out)?,
    };
    Ok((rows, raw, images))
}

/// The int8 export of the demo's model (only the blocks its probe reads), the core on
/// the test images, and samples and completions.
fn export_and_sample(ck: &Checkpoint, data: &Path, limit: usize, out: &Path) -> Result<ExportRows> {
    let c = ck.config;
    let head = crate::int8::export::ProbeHead::load(&out.join("probe/probe-head.json"), c.width)?;
    let (bytes, report) = crate::int8::export::export(ck, Some(&head), true)?;
    let model_path = out.join("model.igpt");
    crate::io::write_atomic(&model_path, &bytes)?;
    let m = Model::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", model_path.display()))?;
    let t0 = std::time::Instant::now();
    let ev = crate::int8::run::eval(&m, data, Some(ck), limit, 0, false)?;
    let int8_rate = ev.images as f64 / t0.elapsed().as_secs_f64();
    let g = crate::eval::sample::write_grid(
        ck,
        &vec![Vec::new(); 16],
        &[],
        0,
        1.0,
        None,
        1,
        &out.join("samples.png"),
    )?;
    let palette = ck.palette_or_err(&out.join("run"))?;
    let (prefixes, originals) = crate::eval::sample::completion_prefixes(
        &palette,
        c.side,
        &[],
        Some((data, 6)),
        c.side / 2,
        4,
    )?;
    crate::eval::sample::write_grid(
        ck,
        &prefixes,
        &originals,
        4,
        1.0,
        None,
        2,
        &out.join("complete.png"),
    )?;
    Ok(ExportRows {
        int8_accuracy: ev.int8_accuracy,
        agreement: ev.agreement.context("no f32 agreement")?,
        f32_bytes: c.f32_bytes(),
        int8_file_bytes: report.bytes,
        stored_layers: report.stored_layers,
        int8_images_per_s: int8_rate,
        sample_tokens_per_s: g.tokens as f64 / g.seconds.max(1e-9),
    })
}

/// What `demo.json` records of a demo folder's arguments.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct DemoMarker {
    quick: bool,
    data: Option<PathBuf>,
}

/// Makes `cfg.out` this demo's folder before anything is written into it: a new or empty
/// folder gets `demo.json`; a folder of a demo with the same arguments is reused
/// (re-running resumes); any other non-empty folder is refused, untouched.
fn claim_folder(cfg: &DemoConfig) -> Result<()> {
    let out = &cfg.out;
    let marker_path = out.join("demo.json");
    let this = DemoMarker {
        quick: cfg.quick,
        data: cfg.data.as_deref().map(crate::io::meta::canonical),
    };
    let non_empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if non_empty {
        let saved: Option<DemoMarker> = std::fs::read(&marker_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match saved {
            Some(m) if m == this => return Ok(()),
            Some(m) => anyhow::bail!(
                "{}: a demo folder made with other arguments (--quick {}, --data {}); choose another --out",
                out.display(),
                m.quick,
                m.data.as_ref().map_or("(embedded subset)".to_string(), |d| d.display().to_string())
            ),
            None => anyhow::bail!(
                "{}: not empty and not a demo folder (no demo.json); choose another --out",
                out.display()
            ),
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    crate::io::write_atomic(&marker_path, serde_json::to_string(&this)?.as_bytes())
}

/// A section of the demo's table: a heading and `(label, value)` rows.
type Section = (String, Vec<(String, String)>);

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// `p = 0.012`, or `p < 0.001`.
fn p_value(t: &McNemar) -> String {
    if t.p_value < 1e-3 {
        "p < 0.001".to_string()
    } else {
        format!("p = {:.3}", t.p_value)
    }
}

/// Minutes and seconds.
fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

fn classifier_section(c: &ClassifierRows, test: usize) -> Section {
    let file = c.model.file_name().unwrap_or_default().to_string_lossy();
    (
        format!(
            "The shipped classifier ({file}: {} layers x {}, head on layer {} trained on {} labels), {test} test images",
            c.layers, c.width, c.head_layer, c.labels
        ),
        vec![
            ("f32".into(), pct(c.f32_accuracy)),
            (
                "int8 (igpt-core)".into(),
                format!("{}   same class as f32 on {}", pct(c.int8_accuracy), pct(c.agreement)),
            ),
        ],
    )
}

fn pretrained_section(p: &PretrainedRows, s: &DemoSummary) -> Section {
    (
        format!(
            "With the subset's {} labels (linear probe, best layer by validation), the same test images",
            s.train_images
        ),
        vec![
            (
                format!("pretrained {}x{} model (layer {})", p.layers, p.width, p.probe_layer),
                format!("{}   vs raw pixels: {}", pct(p.probe_accuracy), p_value(&p.vs_raw_pixels)),
            ),
            (
                format!("raw pixels ({0}x{0})", s.scratch.side),
                pct(s.raw_pixel_accuracy),
            ),
            (
                format!("random-init control (layer {})", p.random_init_layer),
                pct(p.random_init_accuracy),
            ),
        ],
    )
}

fn scratch_section(s: &DemoSummary) -> Section {
    let r = &s.scratch;
    let e = &r.int8;
    let mut rows = vec![(
        format!("linear probe (layer {})", r.probe_layer),
        format!(
            "{}   vs raw pixels: {}",
            pct(r.probe_accuracy),
            p_value(&r.vs_raw_pixels)
        ),
    )];
    if s.pretrained.is_none() {
        rows.push((
            format!("raw pixels ({0}x{0})", r.side),
            pct(s.raw_pixel_accuracy),
        ));
    }
    rows.push((
        "int8 export (igpt-core)".into(),
        format!(
            "{}   same class as f32 on {}; {} bytes ({} of {} blocks); {:.0} images/s",
            pct(e.int8_accuracy),
            pct(e.agreement),
            e.int8_file_bytes,
            e.stored_layers,
            r.layers,
            e.int8_images_per_s
        ),
    ));
    rows.push((
        "sampling".into(),
        format!("{:.0} tokens/s", e.sample_tokens_per_s),
    ));
    let time = if r.train_seconds > 0.0 {
        format!("{} of training on this machine", duration(r.train_seconds))
    } else {
        "the training kept from an earlier run".into()
    };
    (
        format!(
            "What {time} gives ({} layers x {}, {} steps, validation {:.3} bits/dim; {} labels, {} test images)",
            r.layers, r.width, r.steps, r.val_bits_per_dim, s.train_images, s.test_images
        ),
        rows,
    )
}

/// The summary as the table the demo prints: the shipped classifier, the pretrained
/// model against its controls, then the model trained here.
pub fn table(s: &DemoSummary, out: &Path) -> String {
    let mut sections = Vec::new();
    if let Some(c) = &s.classifier {
        sections.push(classifier_section(c, s.test_images));
    }
    if let Some(p) = &s.pretrained {
        sections.push(pretrained_section(p, s));
    }
    sections.push(scratch_section(s));
    let w = sections
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|r| r.0.len()))
        .max()
        .unwrap_or(0);
    let mut t = String::new();
    for (heading, rows) in sections {
        t.push_str(&format!("{heading}\n"));
        for (k, v) in rows {
            t.push_str(&format!("  {k:<w$}  {v}\n"));
        }
        t.push('\n');
    }
    t.push_str(&format!(
        "Details in {}; pictures there: run/loss.png, probe/probe.png, samples.png, complete.png{}\n",
        out.join("demo.log").display(),
        if s.pretrained.is_some() {
            ", pretrained-probe/probe.png"
        } else {
            ""
        }
    ));
    t
}
