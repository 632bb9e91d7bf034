//! `igpt pretrain`: generative pretraining (AR or BERT) with checkpoints, exact resume,
//! validation in bits per dimension, a CSV log and a loss-curve PNG; and `igpt bench
//! train`, the training-throughput benchmark.
//!
//! A run folder holds `checkpoint.safetensors` (weights, AdamW moments, step, data-RNG
//! state, config, palette and these arguments), `log.csv` and `loss.png`. Resuming
//! restores all of it, so N steps, a stop, and a resume to N+M steps give the same bytes
//! as N+M steps straight.

use crate::data::{self, Split};
use crate::io::checkpoint::{Checkpoint, TrainState};
use crate::io::plot::{self, Series};
use crate::nn::device::ModelDevice;
use crate::nn::{Gpt, Objective};
use crate::train::{self, AdamConfig, AdamW};
use anyhow::{bail, ensure, Context, Result};
use dfdx::prelude::*;
use igpt_core::{Config, Palette};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything that defines a pretraining run (saved in its checkpoint as JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainConfig {
    /// Dataset path.
    pub data: PathBuf,
    /// Model shape (k = the palette's size).
    pub model: Config,
    /// AR or BERT.
    pub objective: Objective,
    /// Total optimizer steps.
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warmup steps.
    pub warmup: u64,
    /// AdamW settings.
    pub adam: AdamConfig,
    /// Seed of the weights and of the data order and masks.
    pub seed: u64,
    /// Validate, log and checkpoint every this many steps.
    pub eval_every: u64,
    /// Validation images (from the test split; 0: no validation).
    pub val_images: usize,
    /// Training images used (0: all).
    pub train_images: usize,
}

impl PretrainConfig {
    /// The arguments as JSON, as stored in checkpoints.
    pub fn to_json(&self) -> String {
        let c = &self.model;
        serde_json::json!({
            "data": self.data.to_string_lossy(),
            "model": {"vocab": c.vocab, "side": c.side, "width": c.width, "heads": c.heads, "layers": c.layers},
            "objective": format!("{:?}", self.objective),
            "steps": self.steps, "batch": self.batch, "lr": self.lr, "warmup": self.warmup,
            "beta1": self.adam.beta1, "beta2": self.adam.beta2, "eps": self.adam.eps,
            "weight_decay": self.adam.weight_decay, "clip": self.adam.clip,
            "seed": self.seed, "eval_every": self.eval_every, "val_images": self.val_images,
            "train_images": self.train_images,
        })
        .to_string()
    }
}

/// Tokenizes a dataset split for a palette at the model's side.
pub fn tokenize_split(
    path: &Path,
    split: Split,
    palette: &Palette,
    side: usize,
    limit: usize,
) -> Result<Vec<Vec<u16>>> {
    let ds = data::load(path, split, Some(side))?;
    let ds = if limit > 0 { ds.truncate(limit) } else { ds };
    let ds = ds.with_channels(palette.channels())?;
    let n = side * side;
    (0..ds.len())
        .into_par_iter()
        .map(|i| {
            let mut t = vec![0u16; n];
            palette
                .tokenize(ds.image(i), &mut t)
                .map_err(anyhow::Error::from)?;
            Ok(t)
        })
        .collect()
}

/// One row of `log.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    /// Steps done.
    pub step: u64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Mean training loss since the previous row, bits per dimension.
    pub train_bpd: f64,
    /// Validation loss, bits per dimension (NaN without validation).
    pub val_bpd: f64,
    /// Training throughput since the previous row.
    pub tokens_per_s: f64,
    /// Wall time of this process so far.
    pub elapsed_s: f64,
}

const LOG_HEADER: &str = "step,lr,train_bpd,val_bpd,tokens_per_s,elapsed_s";

fn read_log(path: &Path) -> Vec<LogRow> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<f64> = l
                .split(',')
                .map(|x| x.parse().unwrap_or(f64::NAN))
                .collect();
            (f.len() == 6).then(|| LogRow {
                step: f[0] as u64,
                lr: f[1],
                train_bpd: f[2],
                val_bpd: f[3],
                tokens_per_s: f[4],
                elapsed_s: f[5],
            })
        })
        .collect()
}

fn write_log(dir: &Path, rows: &[LogRow]) -> Result<()> {
    let mut s = String::from(LOG_HEADER);
    s.push('\n');
    for r in rows {
        s.push_str(&format!(
            "{},{:e},{:.6},{:.6},{:.1},{:.1}\n",
            r.step, r.lr, r.train_bpd, r.val_bpd, r.tokens_per_s, r.elapsed_s
        ));
    }
    crate::io::write_atomic(&dir.join("log.csv"), s.as_bytes())?;
    let train: Vec<(f64, f64)> = rows.iter().map(|r| (r.step as f64, r.train_bpd)).collect();
    let val: Vec<(f64, f64)> = rows.iter().map(|r| (r.step as f64, r.val_bpd)).collect();
    let mut series = vec![Series {
        label: "train".into(),
        points: train,
        color: plot::COLORS[0],
        markers: false,
    }];
    if val.iter().any(|p| p.1.is_finite()) {
        series.push(Series {
            label: "validation".into(),
            points: val,
            color: plot::COLORS[1],
            markers: true,
        });
    }
    plot::line_plot(
        &dir.join("loss.png"),
        "IGPT PRETRAINING LOSS",
        "step",
        "bits/dim",
        &series,
    )
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Steps done (in total, including before a resume).
    pub steps: u64,
    /// Last validation bits per dimension (NaN without validation).
    pub val_bpd: f64,
    /// Last logged training bits per dimension.
    pub train_bpd: f64,
    /// Wall time of this process.
    pub seconds: f64,
}

/// The checkpoint file of a run folder.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.safetensors")
}

/// Runs (or resumes) pretraining into `dir` on the CPU. `stop_after` ends the process
/// early at that step with a checkpoint, as an interruption would (for tests and for
/// splitting a run).
pub fn pretrain(
    cfg: &PretrainConfig,
    palette: &Palette,
    dir: &Path,
    resume: bool,
    stop_after: Option<u64>,
    show_progress: bool,
) -> Result<Summary> {
    let dev = Cpu::seed_from_u64(cfg.seed);
    pretrain_on(&dev, cfg, palette, dir, resume, stop_after, show_progress)
}

/// [`pretrain`] on any device (`--device`). The checkpoint format is the same, so a run
/// can be resumed on another device (exactly only on the same one).
pub fn pretrain_on<D: ModelDevice>(
    dev: &D,
    cfg: &PretrainConfig,
    palette: &Palette,
    dir: &Path,
    resume: bool,
    stop_after: Option<u64>,
    show_progress: bool,
) -> Result<Summary> {
    ensure!(cfg.batch > 0, "--batch must be positive");
    ensure!(cfg.steps > 0, "--steps must be positive");
    ensure!(cfg.eval_every > 0, "--eval-every must be positive");
    ensure!(cfg.lr > 0.0 && cfg.lr.is_finite(), "--lr must be positive");
    ensure!(
        palette.len() == cfg.model.vocab,
        "the palette has {} colours but the model's k is {}",
        palette.len(),
        cfg.model.vocab
    );
    let ck_path = checkpoint_path(dir);
    if !resume && ck_path.exists() {
        bail!(
            "{}: a checkpoint exists; pass --resume to continue it, or choose another --out",
            ck_path.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create run folder", dir.display()))?;

    let side = cfg.model.side;
    let train_set = tokenize_split(&cfg.data, Split::Train, palette, side, cfg.train_images)?;
    ensure!(
        !train_set.is_empty(),
        "{}: no training images",
        cfg.data.display()
    );
    let val_set = if cfg.val_images > 0 {
        tokenize_split(&cfg.data, Split::Test, palette, side, cfg.val_images)?
    } else {
        Vec::new()
    };

    let (mut gpt, mut opt, mut rng, mut log) = if resume {
        let ck = Checkpoint::load(&ck_path)?;
        let st = ck
            .train
            .clone()
            .with_context(|| format!("{}: holds no training state to resume", ck_path.display()))?;
        ensure!(
            st.args == cfg.to_json(),
            "{}: saved with other arguments; resume with the same ones (saved: {})",
            ck_path.display(),
            st.args
        );
        let gpt: Gpt<f32, D> = ck.model(dev);
        let opt = AdamW::from_mats(dev, cfg.adam, &st.m, &st.v, st.step);
        let mut rng = ChaCha8Rng::from_seed(st.rng_seed);
        rng.set_stream(st.rng_stream);
        rng.set_word_pos(st.rng_word_pos);
        let log: Vec<LogRow> = read_log(&dir.join("log.csv"))
            .into_iter()
            .filter(|r| r.step <= st.step)
            .collect();
        (gpt, opt, rng, log)
    } else {
        let gpt = Gpt::<f32, D>::init(dev, cfg.model, cfg.seed);
        let opt = AdamW::new(&gpt, cfg.adam);
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(1));
        (gpt, opt, rng, Vec::new())
    };

    let start = opt.step;
    if show_progress {
        let m = cfg.model;
        eprintln!(
            "pretrain {:?}: {} layers, width {}, {} heads, {}x{}, k {} ({} parameters); {} training and {} validation images; batch {}, steps {}..{}, {} threads",
            cfg.objective,
            m.layers,
            m.width,
            m.heads,
            m.side,
            m.side,
            m.vocab,
            m.param_count(),
            train_set.len(),
            val_set.len(),
            cfg.batch,
            start,
            cfg.steps,
            rayon::current_num_threads()
        );
    }
    let end = stop_after.map_or(cfg.steps, |s| s.min(cfg.steps));
    let n = cfg.model.seq_len();
    let bar = crate::progress::bar(cfg.steps, "pretrain", show_progress);
    bar.set_position(start);
    let t0 = Instant::now();
    let mut window = (0.0f64, 0u64, Instant::now());
    let mut last = Summary {
        steps: start,
        val_bpd: f64::NAN,
        train_bpd: f64::NAN,
        seconds: 0.0,
    };
    let save = |gpt: &Gpt<f32, D>, opt: &AdamW<f32, D>, rng: &ChaCha8Rng| -> Result<()> {
        let mut ck = Checkpoint::from_model(gpt, Some(palette.clone()));
        let (m, v) = opt.to_mats();
        ck.train = Some(TrainState {
            step: opt.step,
            m,
            v,
            rng_seed: rng.get_seed(),
            rng_stream: rng.get_stream(),
            rng_word_pos: rng.get_word_pos(),
            args: cfg.to_json(),
        });
        ck.save(&ck_path)
    };
    for step in start..end {
        let lr = train::lr_at(step, cfg.lr, cfg.warmup, cfg.steps);
        let picks: Vec<&[u16]> = (0..cfg.batch)
            .map(|_| train_set[rng.gen_range(0..train_set.len())].as_slice())
            .collect();
        let batch = train::make_batch(&picks, cfg.model.sos(), cfg.objective, &mut rng);
        let loss = train::loss::<f32, D, OwnedTape<f32, D>>(&gpt, &batch);
        let nats = train::scalar(loss.retaped::<NoneTape>());
        ensure!(
            nats.is_finite(),
            "loss became {nats} at step {step}: lower --lr"
        );
        let mut grads = loss.backward();
        opt.update(&mut gpt, &mut grads, lr);
        window.0 += train::bits(nats);
        window.1 += 1;
        bar.inc(1);
        bar.set_message(format!(
            "{:.3} bits/dim, {:.0} tok/s",
            train::bits(nats),
            (window.1 as usize * cfg.batch * n) as f64 / window.2.elapsed().as_secs_f64()
        ));
        let done = step + 1;
        if done % cfg.eval_every == 0 || done == end {
            let val_bpd = if val_set.is_empty() {
                f64::NAN
            } else {
                // A fixed mask stream, so validation never disturbs the training RNG.
                let mut vrng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_5eed);
                let refs: Vec<&[u16]> = val_set.iter().map(|v| v.as_slice()).collect();
                train::bits(train::evaluate(
                    &gpt,
                    &refs,
                    cfg.batch.max(16),
                    cfg.objective,
                    &mut vrng,
                ))
            };
            let secs = window.2.elapsed().as_secs_f64();
            let row = LogRow {
                step: done,
                lr,
                train_bpd: window.0 / window.1.max(1) as f64,
                val_bpd,
                tokens_per_s: (window.1 as usize * cfg.batch * n) as f64 / secs.max(1e-9),
                elapsed_s: t0.elapsed().as_secs_f64(),
            };
            if show_progress {
                crate::progress::note(
                    &bar,
                    show_progress,
                    format!(
                    "step {done}: train {:.4} bits/dim, validation {:.4} bits/dim, {:.0} tokens/s",
                    row.train_bpd, row.val_bpd, row.tokens_per_s
                ),
                );
            }
            last = Summary {
                steps: done,
                val_bpd,
                train_bpd: row.train_bpd,
                seconds: t0.elapsed().as_secs_f64(),
            };
            log.push(row);
            save(&gpt, &opt, &rng)?;
            write_log(dir, &log)?;
            window = (0.0, 0, Instant::now());
        }
    }
    bar.finish_and_clear();
    last.seconds = t0.elapsed().as_secs_f64();
    Ok(last)
}

/// Training throughput on random tokens: `steps` timed forward + backward + AdamW steps
/// (after one untimed warm-up step) of an AR model of `config`, batch `batch`, on `dev`
/// (waiting for the device's queued work before the clock stops). Returns tokens per
/// second. `fused: false` runs the reference dfdx compositions (the CPU's only choice
/// that matters: other devices have no fused kernels).
pub fn bench_train<D: ModelDevice>(
    dev: &D,
    config: Config,
    batch: usize,
    steps: usize,
    fused: bool,
    show_progress: bool,
) -> Result<f64> {
    ensure!(
        batch > 0 && steps > 0,
        "--batch and --steps must be positive"
    );
    let mut gpt = Gpt::<f32, D>::init(dev, config, 0);
    gpt.fused = fused;
    let mut opt = AdamW::new(&gpt, AdamConfig::default());
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = config.seq_len();
    let images: Vec<Vec<u16>> = (0..batch)
        .map(|_| {
            (0..n)
                .map(|_| rng.gen_range(0..config.vocab as u16))
                .collect()
        })
        .collect();
    let refs: Vec<&[u16]> = images.iter().map(|v| v.as_slice()).collect();
    let b = train::make_batch(&refs, config.sos(), Objective::Ar, &mut rng);
    let bar = crate::progress::bar(steps as u64, "bench", show_progress);
    let mut t = Instant::now();
    for i in 0..=steps {
        if i == 1 {
            t = Instant::now();
        }
        let mut grads = train::loss::<f32, D, OwnedTape<f32, D>>(&gpt, &b).backward();
        opt.update(&mut gpt, &mut grads, 1e-4);
        if i == 0 {
            dev.try_synchronize()
                .map_err(|e| anyhow::anyhow!("device error: {e:?}"))?;
        } else {
            bar.inc(1);
        }
    }
    dev.try_synchronize()
        .map_err(|e| anyhow::anyhow!("device error: {e:?}"))?;
    bar.finish_and_clear();
    Ok((steps * batch * n) as f64 / t.elapsed().as_secs_f64())
}
