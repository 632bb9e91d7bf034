//! `igpt demo`: the whole pipeline in one command on a Fashion-MNIST subset embedded in
//! the binary (2,000 training and 500 test images, `data/fashion-mnist-subset/`, MIT):
//! palette → pretraining → linear probes (and the raw-pixel baseline) → int8 export →
//! classification with igpt-core → samples and completions, with a summary table.

use crate::eval::probe::{self, ProbeConfig, ProbeRun};
use crate::io::checkpoint::Checkpoint;
use crate::nn::Objective;
use crate::train::pretrain::{self, PretrainConfig};
use crate::train::AdamConfig;
use anyhow::{Context, Result};
use igpt_core::{Config, Model, Preset};
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

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Output folder.
    pub out: PathBuf,
    /// A dataset instead of the embedded subset.
    pub data: Option<PathBuf>,
    /// A tiny model and few steps: under a minute.
    pub quick: bool,
    /// A pretrained checkpoint (the shipped `models/` one) to probe on the same images,
    /// beside a random-init control of its shape.
    pub pretrained: Option<PathBuf>,
}

/// The shipped (pretrained) model's probe on the demo's images, with its controls.
#[derive(Debug, Clone)]
pub struct PretrainedRows {
    /// The checkpoint.
    pub path: PathBuf,
    /// Its shape.
    pub config: Config,
    /// Its pretraining: steps and images per step (0 when the file does not say).
    pub steps: (u64, usize),
    /// Best probe layer and its test accuracy.
    pub probe: (usize, f64),
    /// A seeded untrained model of the same shape (the paper's init), same probe: best
    /// layer and test accuracy.
    pub random_init: (usize, f64),
    /// Raw pixels at the model's resolution, same probe, same images.
    pub raw_pixels: f64,
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    /// Training / test images used.
    pub images: (usize, usize),
    /// The model's shape.
    pub config: Config,
    /// Pretraining steps and final validation bits per dimension.
    pub pretrain: (u64, f64),
    /// Best probe layer and its f32 test accuracy.
    pub probe: (usize, f64),
    /// Raw-pixel probe test accuracy.
    pub raw_pixels: f64,
    /// int8 (igpt-core) test accuracy, and its agreement with f32.
    pub int8: (f64, f64),
    /// Bytes of the f32 checkpoint weights and of the int8 file.
    pub sizes: (u64, usize),
    /// Blocks in the int8 file (the probe's layer: `--upto-probe-layer`).
    pub stored_layers: usize,
    /// Images per second of the core's int8 classification (all threads).
    pub int8_images_per_s: f64,
    /// Sampling speed (tokens/s).
    pub sample_tokens_per_s: f64,
    /// The pretrained model's rows, when one was probed.
    pub pretrained: Option<PretrainedRows>,
}

/// Runs the demo into `cfg.out`. Re-running resumes the pretraining (a finished run is
/// kept) and redoes the rest.
pub fn run(cfg: &DemoConfig, show: bool) -> Result<DemoSummary> {
    let out = &cfg.out;
    claim_folder(cfg)?;
    let data = match &cfg.data {
        Some(d) => d.clone(),
        None => {
            let dir = out.join("data");
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
            for (name, bytes) in SUBSET {
                crate::io::write_atomic(&dir.join(name), bytes)?;
            }
            dir
        }
    };
    let (side, k) = if cfg.quick { (8, 8) } else { (14, 16) };
    let limit = if cfg.quick { (600, 200) } else { (0, 0) };
    let say = |s: String| {
        if show {
            crate::progress::message(format!("demo: {s}"));
        }
    };

    // 1. Palette: k-means on the training pixels at the model's resolution.
    let ds = crate::data::load(&data, crate::data::Split::Train, Some(side))?.with_channels(1)?;
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
    let (palette, stats) = crate::data::palette::fit(&ds.pixels, 1, opts, show)?;
    crate::data::palette::save(&out.join("palette.pal"), &palette)?;
    say(format!(
        "palette: {k} grey levels at {side}x{side}, mse per channel {:.2}",
        stats.mse
    ));

    // 2. Pretraining (AR).
    let model = if cfg.quick {
        Config::new(k, side, 32, 4, 2)?
    } else {
        Config {
            vocab: k,
            ..Config::preset(Preset::Fw)
        }
    };
    let pcfg = PretrainConfig {
        data: data.clone(),
        model,
        objective: Objective::Ar,
        steps: if cfg.quick { 40 } else { 300 },
        batch: if cfg.quick { 16 } else { 32 },
        lr: 3e-3,
        warmup: if cfg.quick { 5 } else { 30 },
        adam: AdamConfig::default(),
        seed: 0,
        eval_every: if cfg.quick { 20 } else { 50 },
        val_images: if cfg.quick { 100 } else { 500 },
        train_images: limit.0,
    };
    let run_dir = out.join("run");
    let resume = pretrain::checkpoint_path(&run_dir).exists();
    let s = pretrain::pretrain(&pcfg, &palette, &run_dir, resume, None, show)?;
    let ck_path = pretrain::checkpoint_path(&run_dir);
    say(format!(
        "pretrained {} steps: validation {:.3} bits/dim",
        s.steps, s.val_bpd
    ));

    // 3. Linear probes on every layer, and on the raw pixels.
    let probe_run = |raw: bool, dir: &str| ProbeRun {
        checkpoint: ck_path.clone(),
        data: data.clone(),
        layers: None,
        labels_per_class: None,
        raw_pixels: raw,
        limit,
        out: out.join(dir),
        batch: 64,
        cfg: ProbeConfig::default(),
    };
    let layers = probe::run(&probe_run(false, "probe"), show)?;
    let (best_layer, best) = best(&layers).context("no layer probed")?;
    let raw = probe::run(&probe_run(true, "raw-probe"), show)?;
    let raw_acc = raw.first().map_or(f64::NAN, |r| r.1.test_accuracy);

    // 4. int8 export (only the blocks the probe needs) and the core on the test images.
    let ck = Checkpoint::load(&ck_path)?;
    let head =
        crate::int8::export::ProbeHead::load(&out.join("probe/probe-head.json"), model.width)?;
    let (bytes, report) = crate::int8::export::export(&ck, Some(&head), true)?;
    let model_path = out.join("model.igpt");
    crate::io::write_atomic(&model_path, &bytes)?;
    let m = Model::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", model_path.display()))?;
    let t0 = std::time::Instant::now();
    let ev = crate::int8::run::eval(&m, &data, Some(&ck), limit.1, 0, false)?;
    let int8_rate = ev.images as f64 / t0.elapsed().as_secs_f64();

    // 5. Samples and completions.
    let sample_path = out.join("samples.png");
    let g = crate::eval::sample::write_grid(
        &ck,
        &vec![Vec::new(); 16],
        &[],
        0,
        1.0,
        None,
        1,
        &sample_path,
    )?;
    let originals =
        crate::data::tokenize::split(&data, crate::data::Split::Test, &palette, side, 6)?.tokens;
    let keep = side / 2;
    let prefixes: Vec<Vec<u16>> = originals
        .iter()
        .flat_map(|o| std::iter::repeat_n(o[..keep * side].to_vec(), 4))
        .collect();
    crate::eval::sample::write_grid(
        &ck,
        &prefixes,
        &originals,
        4,
        1.0,
        None,
        2,
        &out.join("complete.png"),
    )?;

    // 6. The shipped pretrained model on the same images, with a random-init control.
    let pretrained = match &cfg.pretrained {
        Some(p) => Some(probe_pretrained(p, &data, limit, out, show)?),
        None => None,
    };

    let summary = DemoSummary {
        images: (
            layers_images(&out.join("probe/probe.json"), "train_images"),
            ev.images,
        ),
        config: model,
        pretrain: (s.steps, s.val_bpd),
        probe: (best_layer, best),
        raw_pixels: raw_acc,
        int8: (ev.int8_accuracy, ev.agreement.unwrap_or(f64::NAN)),
        sizes: (model.f32_bytes(), report.bytes),
        stored_layers: report.stored_layers,
        int8_images_per_s: int8_rate,
        sample_tokens_per_s: g.tokens as f64 / g.seconds.max(1e-9),
        pretrained,
    };
    write_summary(out, &summary, ev.f32_accuracy.unwrap_or(f64::NAN))?;
    Ok(summary)
}

/// Probes `path` (every layer, and the raw pixels beside them) and a seeded untrained
/// model of its shape and palette on the demo's images.
fn probe_pretrained(
    path: &Path,
    data: &Path,
    limit: (usize, usize),
    out: &Path,
    show: bool,
) -> Result<PretrainedRows> {
    let ck = Checkpoint::load(path)?;
    let palette = ck.palette_or_err(path)?;
    let spec = |checkpoint: PathBuf, dir: &str, raw: bool| probe::ProbeSpec {
        checkpoint: Some(checkpoint),
        data: data.to_path_buf(),
        layers: None,
        labels_per_class: None,
        raw_pixels: false,
        with_raw_pixels: raw,
        side: None,
        channels: None,
        concat: None,
        limit,
        out: out.join(dir),
        batch: 64,
        cfg: ProbeConfig::default(),
    };
    let best = |o: &probe::ProbeOutcome| -> Result<(usize, f64)> {
        let i = o.best.context("no layer probed")?;
        Ok((o.layers[i].0, o.layers[i].1.test_accuracy))
    };
    let trained = probe::run_spec(&spec(path.to_path_buf(), "pretrained-probe", true), show)?;
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
    let control = probe::run_spec(&spec(init_path, "random-init-probe", false), show)?;
    Ok(PretrainedRows {
        path: path.to_path_buf(),
        config: ck.config,
        steps: ck.pretrain.as_ref().map_or((0, 0), |a| (a.steps, a.batch)),
        probe: best(&trained)?,
        random_init: best(&control)?,
        raw_pixels: trained.raw.map_or(f64::NAN, |r| r.0.test_accuracy),
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

/// The layer `probe-head.json` holds (probe's own choice) and its test accuracy.
fn best(layers: &[(usize, probe::LayerResult)]) -> Option<(usize, f64)> {
    probe::best_layer(layers).map(|i| (layers[i].0, layers[i].1.test_accuracy))
}

fn layers_images(path: &Path, key: &str) -> usize {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get(key).and_then(|x| x.as_u64()))
        .unwrap_or(0) as usize
}

fn write_summary(out: &Path, s: &DemoSummary, f32_acc: f64) -> Result<()> {
    let json = serde_json::json!({
        "train_images": s.images.0, "test_images": s.images.1,
        "model": {"layers": s.config.layers, "width": s.config.width, "heads": s.config.heads,
                  "side": s.config.side, "vocab": s.config.vocab},
        "pretrain_steps": s.pretrain.0, "val_bits_per_dim": s.pretrain.1,
        "probe_layer": s.probe.0, "probe_f32_accuracy": s.probe.1, "f32_accuracy_of_exported_head": f32_acc,
        "raw_pixel_accuracy": s.raw_pixels, "int8_accuracy": s.int8.0, "int8_f32_agreement": s.int8.1,
        "f32_bytes": s.sizes.0, "int8_file_bytes": s.sizes.1,
        "int8_images_per_s": s.int8_images_per_s, "sample_tokens_per_s": s.sample_tokens_per_s,
        "pretrained": s.pretrained.as_ref().map(|p| serde_json::json!({
            "checkpoint": p.path, "steps": p.steps.0, "batch": p.steps.1,
            "probe_layer": p.probe.0, "probe_accuracy": p.probe.1,
            "random_init_layer": p.random_init.0, "random_init_accuracy": p.random_init.1,
            "raw_pixel_accuracy": p.raw_pixels,
        })),
    });
    crate::io::write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )
}

/// The summary as the table the demo prints.
pub fn table(s: &DemoSummary, out: &Path) -> String {
    let c = &s.config;
    let pct = |x: f64| format!("{:.2}%", 100.0 * x);
    let rows = [
        (
            "data".to_string(),
            format!("{} train / {} test images", s.images.0, s.images.1),
        ),
        (
            "model".to_string(),
            format!(
                "{} layers, width {}, {}x{}, {} grey levels ({} parameters)",
                c.layers,
                c.width,
                c.side,
                c.side,
                c.vocab,
                c.param_count()
            ),
        ),
        (
            "pretraining".to_string(),
            format!(
                "{} steps, validation {:.3} bits/dim",
                s.pretrain.0, s.pretrain.1
            ),
        ),
        (
            format!("linear probe, f32 (layer {})", s.probe.0),
            pct(s.probe.1),
        ),
        ("raw-pixel probe (baseline)".to_string(), pct(s.raw_pixels)),
        (
            "int8 with igpt-core".to_string(),
            format!("{} (agreement with f32: {})", pct(s.int8.0), pct(s.int8.1)),
        ),
        (
            "sizes".to_string(),
            format!(
                "f32 weights {} bytes; int8 file {} bytes with the {} of {} blocks the probe reads (a full export is about {:.2}x)",
                s.sizes.0,
                s.sizes.1,
                s.stored_layers,
                c.layers,
                c.int8_bytes() as f64 / c.f32_bytes() as f64
            ),
        ),
        (
            "speed".to_string(),
            format!(
                "int8 classification {:.0} images/s, sampling {:.0} tokens/s",
                s.int8_images_per_s, s.sample_tokens_per_s
            ),
        ),
    ];
    let mut rows = rows.to_vec();
    if let Some(p) = &s.pretrained {
        let c = &p.config;
        rows.push((
            "pretrained model".to_string(),
            format!(
                "{}: {} layers, width {}, {}x{}, k {}, {} steps x {} images",
                p.path.display(),
                c.layers,
                c.width,
                c.side,
                c.side,
                c.vocab,
                p.steps.0,
                p.steps.1
            ),
        ));
        rows.push((
            format!("  its linear probe, f32 (layer {})", p.probe.0),
            format!(
                "{} ({:+.2} points over raw pixels)",
                pct(p.probe.1),
                100.0 * (p.probe.1 - p.raw_pixels)
            ),
        ));
        rows.push((
            format!("  random-init control (layer {})", p.random_init.0),
            pct(p.random_init.1),
        ));
        rows.push((
            format!("  raw pixels at {}x{}", c.side, c.side),
            pct(p.raw_pixels),
        ));
    }
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let mut t = String::new();
    for (k, v) in rows {
        t.push_str(&format!("{k:<w$}  {v}\n"));
    }
    t.push_str(&format!(
        "written to {}: run/loss.png, probe/probe.png, samples.png, complete.png, model.igpt, summary.json{}\n",
        out.display(),
        if s.pretrained.is_some() {
            ", pretrained-probe/probe.png, random-init-probe/probe.png"
        } else {
            ""
        }
    ));
    t
}
