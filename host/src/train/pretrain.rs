//! `igpt pretrain`: generative pretraining (AR or BERT) with checkpoints, exact resume,
//! validation in bits per dimension, a CSV log and a loss-curve PNG; and `igpt bench
//! train`, the training-throughput benchmark.
//!
//! A run folder holds `checkpoint.safetensors` (weights, AdamW moments, step, data-RNG
//! state, config, palette and these arguments), `log.csv` and `loss.png`. Resuming
//! restores all of it, so N steps, a stop, and a resume to N+M steps give the same bytes
//! as N+M steps straight.

use super::adamw::AdamW;
use super::batch;
use super::trainer::{self, Curve, LogRow, Loss, RunFiles, Settings, Start, Task};
use crate::data::Split;
use crate::io::checkpoint::Checkpoint;
use crate::io::meta::{self, PretrainArgs};
use crate::nn::device::ModelDevice;
use crate::nn::{Gpt, Objective};
use anyhow::{bail, ensure, Context, Result};
use dfdx::prelude::*;
use igpt_core::{Config, Palette};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything that defines a pretraining run (saved in its checkpoints).
pub type PretrainConfig = PretrainArgs;

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

/// Pretraining as a [`Task`] of the training loop.
struct Pretrain<'a> {
    cfg: &'a PretrainArgs,
    palette: &'a Palette,
    train: Vec<Vec<u16>>,
    val: Vec<Vec<u16>>,
}

impl<D: ModelDevice> Task<D> for Pretrain<'_> {
    fn train_columns(&self) -> Vec<&'static str> {
        vec!["train_bpd"]
    }
    fn eval_columns(&self) -> Vec<&'static str> {
        vec!["val_bpd"]
    }
    fn tokens_per_step(&self) -> usize {
        self.cfg.batch * self.cfg.model.seq_len()
    }
    fn loss(&mut self, gpt: &Gpt<f32, D>, rng: &mut ChaCha8Rng) -> Result<(Loss<D>, Vec<f64>)> {
        let picks: Vec<&[u16]> = (0..self.cfg.batch)
            .map(|_| self.train[rng.gen_range(0..self.train.len())].as_slice())
            .collect();
        let b = batch::make_batch(&picks, self.cfg.model.sos(), self.cfg.objective, rng);
        let loss = batch::loss::<f32, D, OwnedTape<f32, D>>(gpt, &b);
        let bits = batch::bits(crate::nn::value(loss.retaped::<NoneTape>()));
        Ok((loss, vec![bits]))
    }
    fn evaluate(&mut self, gpt: &Gpt<f32, D>) -> Result<(Vec<f64>, f64)> {
        if self.val.is_empty() {
            return Ok((vec![f64::NAN], f64::NEG_INFINITY));
        }
        // A fixed mask stream, so validation never disturbs the training RNG.
        let mut vrng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ 0x5eed_5eed);
        let refs: Vec<&[u16]> = self.val.iter().map(|v| v.as_slice()).collect();
        let bpd = batch::bits(batch::evaluate(
            gpt,
            &refs,
            self.cfg.batch.max(16),
            self.cfg.objective,
            &mut vrng,
        ));
        Ok((vec![bpd], -bpd))
    }
    fn checkpoint(&self, gpt: &Gpt<f32, D>) -> Checkpoint {
        let mut ck = Checkpoint::from_model(gpt, Some(self.palette.clone()));
        ck.pretrain = Some(self.cfg.clone());
        ck
    }
    fn curves(&self) -> Vec<Curve> {
        vec![Curve {
            file: "loss.png",
            title: "iGPT pretraining loss",
            y_label: "bits/dim",
            columns: vec![("train_bpd", "train"), ("val_bpd", "validation")],
        }]
    }
    fn describe(&self, row: &LogRow) -> String {
        format!(
            "step {}: train {:.4} bits/dim, validation {:.4} bits/dim, {:.0} tokens/s",
            row.step, row.train[0], row.eval[0], row.tokens_per_s
        )
    }
}

/// Runs (or resumes) pretraining into `dir` on the CPU. `stop_after` ends the process
/// early at that step with a checkpoint, as an interruption would (for tests and for
/// splitting a run).
pub fn pretrain(
    cfg: &PretrainArgs,
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
    cfg: &PretrainArgs,
    palette: &Palette,
    dir: &Path,
    resume: bool,
    stop_after: Option<u64>,
    show_progress: bool,
) -> Result<Summary> {
    cfg.validate()?;
    ensure!(
        palette.len() == cfg.model.vocab,
        "the palette has {} colours but the model's k is {}",
        palette.len(),
        cfg.model.vocab
    );
    let files = RunFiles {
        dir: dir.to_path_buf(),
        state: checkpoint_path(dir),
        best: None,
    };
    let saved = if resume {
        let ck = Checkpoint::load(&files.state)?;
        ensure!(
            ck.finetune.is_none(),
            "{}: a fine-tuning run; resume it with `igpt finetune --resume`",
            files.state.display()
        );
        let args = ck.pretrain.as_ref().with_context(|| {
            format!(
                "{}: holds no pretraining run to resume",
                files.state.display()
            )
        })?;
        meta::ensure_same(&files.state, &args.canonical(), &cfg.canonical())?;
        ensure!(
            ck.palette.as_ref() == Some(palette),
            "{}: saved with another palette (same size, other colours); resume with the run's palette",
            files.state.display()
        );
        Some(ck)
    } else {
        if files.state.exists() {
            bail!(
                "{}: a checkpoint exists; pass --resume to continue it, or choose another --out",
                files.state.display()
            );
        }
        None
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create run folder", dir.display()))?;

    let side = cfg.model.side;
    let train =
        crate::data::tokenize::split(&cfg.data, Split::Train, palette, side, cfg.train_images)?;
    ensure!(
        !train.is_empty(),
        "{}: no training images",
        cfg.data.display()
    );
    let val = if cfg.val_images > 0 {
        crate::data::tokenize::split(&cfg.data, Split::Test, palette, side, cfg.val_images)?.tokens
    } else {
        Vec::new()
    };
    let start = match &saved {
        Some(ck) => Start::resume(dev, ck, cfg.adam, &files, 6)?,
        None => {
            let gpt = Gpt::<f32, D>::init(dev, cfg.model, None, cfg.seed);
            let opt = AdamW::new(&gpt.params, cfg.adam);
            Start::fresh(
                gpt,
                opt,
                ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(1)),
            )
        }
    };
    if show_progress {
        let m = cfg.model;
        crate::progress::message(format!(
            "pretrain {:?}: {} layers, width {}, {} heads, {}x{}, k {} ({} parameters); {} training and {} validation images; batch {}, steps {}..{}, {} threads",
            cfg.objective,
            m.layers,
            m.width,
            m.heads,
            m.side,
            m.side,
            m.vocab,
            m.param_count(),
            train.len(),
            val.len(),
            cfg.batch,
            start.opt.step,
            cfg.steps,
            rayon::current_num_threads()
        ));
    }
    let mut task = Pretrain {
        cfg,
        palette,
        train: train.tokens,
        val,
    };
    let settings = Settings {
        steps: cfg.steps,
        lr: cfg.lr,
        warmup: cfg.warmup,
        eval_every: cfg.eval_every,
        patience: None,
        stop_after,
        fused: true,
    };
    let out = trainer::run(&mut task, start, &settings, &files, show_progress)?;
    Ok(Summary {
        steps: out.steps,
        val_bpd: out.last.as_ref().map_or(f64::NAN, |r| r.eval[0]),
        train_bpd: out.last.as_ref().map_or(f64::NAN, |r| r.train[0]),
        seconds: out.seconds,
    })
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
    let mut gpt = Gpt::<f32, D>::init(dev, config, None, 0);
    gpt.fused = fused;
    let mut opt = AdamW::new(&gpt.params, crate::io::meta::AdamConfig::default());
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
    let b = batch::make_batch(&refs, config.sos(), Objective::Ar, &mut rng);
    let bar = crate::progress::bar(steps as u64, "bench", show_progress);
    let mut t = Instant::now();
    for i in 0..=steps {
        if i == 1 {
            t = Instant::now();
        }
        let mut grads = batch::loss::<f32, D, OwnedTape<f32, D>>(&gpt, &b).backward();
        opt.update(&mut gpt.params, &mut grads, 1e-4, |_| 1.0, gpt.fused);
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
