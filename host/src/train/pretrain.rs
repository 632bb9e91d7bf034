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
use super::distributed::{Collective, DataParallel, Fingerprint, Shard};
use super::trainer::{self, Curve, LogRow, Loss, RunFiles, Settings, Start, Task, Throughput};
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
    /// Throughput and the allreduce's share of the steps (this process).
    pub throughput: Throughput,
    /// Data parallel: FNV-1a of the final parameters, the same on every rank (`None`
    /// for one process).
    pub fingerprint: Option<u64>,
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
    fn loss(
        &mut self,
        gpt: &Gpt<f32, D>,
        rng: &mut ChaCha8Rng,
        shard: Shard,
    ) -> Result<(Loss<D>, Vec<f64>)> {
        let picks: Vec<&[u16]> = (0..self.cfg.batch)
            .map(|_| self.train[rng.gen_range(0..self.train.len())].as_slice())
            .collect();
        let mut b = batch::make_batch(&picks, self.cfg.model.sos(), self.cfg.objective, rng);
        if !shard.is_whole() {
            // This rank's rows, weighted over the global batch (1/(B·T) for AR, 1/(masked
            // positions of the batch) for BERT): the shards' losses sum to the batch's.
            b = b.rows(shard.range(self.cfg.batch));
        }
        let loss = batch::loss::<f32, D, OwnedTape<f32, D>>(gpt, &b);
        let bits = batch::bits(crate::nn::value(loss.retaped::<NoneTape>()));
        Ok((loss, vec![bits]))
    }
    fn evaluate(&mut self, gpt: &Gpt<f32, D>, comm: &dyn Collective) -> Result<(Vec<f64>, f64)> {
        if self.val.is_empty() {
            return Ok((vec![f64::NAN], f64::NEG_INFINITY));
        }
        // A fixed mask stream, so validation never disturbs the training RNG.
        let mut vrng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ 0x5eed_5eed);
        let refs: Vec<&[u16]> = self.val.iter().map(|v| v.as_slice()).collect();
        // Each rank its chunks; the sum gives every rank every chunk's exact numbers.
        let mut parts = batch::evaluate_parts(
            gpt,
            &refs,
            self.cfg.batch.max(16),
            self.cfg.objective,
            &mut vrng,
            comm.shard(),
        );
        comm.allreduce_sum_f64(&mut parts);
        let bpd = batch::bits(batch::mean_of_parts(&parts));
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
            scale: 1.0,
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
    pretrain_parallel(
        dev,
        cfg,
        palette,
        dir,
        resume,
        stop_after,
        show_progress,
        &mut DataParallel::single(),
    )
}

/// [`pretrain_on`] on every rank of `dp` (`mpirun -np N igpt pretrain ...`): the same
/// global batches and data order as one process, each rank its rows, gradients summed
/// before every step; rank 0 alone writes the run folder. Every rank must be started
/// with the same arguments, and all must see the same data (and, to resume, the same
/// checkpoint): checked.
#[allow(clippy::too_many_arguments)]
pub fn pretrain_parallel<D: ModelDevice>(
    dev: &D,
    cfg: &PretrainArgs,
    palette: &Palette,
    dir: &Path,
    resume: bool,
    stop_after: Option<u64>,
    show_progress: bool,
    dp: &mut DataParallel<'_, D>,
) -> Result<Summary> {
    let comm = dp.comm();
    let show_progress = show_progress && comm.is_root();
    cfg.validate()?;
    // The same run on every rank (paths aside: nodes may mount the data elsewhere).
    super::distributed::agree_on_run(
        comm,
        cfg.batch,
        &PretrainArgs {
            data: PathBuf::new(),
            ..cfg.clone()
        },
        resume,
        stop_after,
    )?;
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
    let _lock = trainer::claim_folder(dir, comm)?;
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
    if comm.is_root() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create run folder", dir.display()))?;
    }

    if cfg.val_images > 0 {
        crate::data::ensure_two_splits(&cfg.data, "validation; or --val-images 0")?;
    }
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
    if comm.size() > 1 {
        let mut data = Fingerprint::default();
        for img in train.tokens.iter().chain(&val) {
            data.u16s(img);
        }
        comm.agree("the training and validation images", data.value())?;
    }
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
            "pretrain {:?}: {} layers, width {}, {} heads, {}x{}, k {} ({} parameters); {} training and {} validation images; batch {}, steps {}..{}, {} threads{}",
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
            rayon::current_num_threads(),
            if comm.size() > 1 {
                format!(" per rank, {} ranks", comm.size())
            } else {
                String::new()
            }
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
        schedule: super::Schedule::Cosine,
        eval_every: cfg.eval_every,
        patience: None,
        stop_after,
        fused: true,
    };
    trainer::check_data(&files, &cfg.data, resume, comm)?;
    let out = trainer::run_parallel(&mut task, start, &settings, &files, show_progress, dp)?;
    Ok(Summary {
        steps: out.steps,
        val_bpd: out.last.as_ref().map_or(f64::NAN, |r| r.eval[0]),
        train_bpd: out.last.as_ref().map_or(f64::NAN, |r| r.train[0]),
        seconds: out.seconds,
        throughput: out.throughput,
        fingerprint: out.fingerprint,
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::train::distributed::HostGrads;

    /// Every parameter's gradient of one step's loss on `shard`, flattened, with the loss
    /// and metrics; the data RNG starts from the same seed each time.
    pub(crate) fn step_grads<T: Task<Cpu>>(
        task: &mut T,
        gpt: &Gpt<f32, Cpu>,
        shard: Shard,
    ) -> (Vec<f32>, f32, Vec<f64>, crate::io::checkpoint::RngState) {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (loss, metrics) = task.loss(gpt, &mut rng, shard).unwrap();
        let value = crate::nn::value(loss.retaped::<NoneTape>()) as f32;
        let mut grads = loss.backward();
        let mut buf = Vec::new();
        Cpu::grads_to_host(&gpt.params, &mut grads, &mut buf).unwrap();
        (
            buf,
            value,
            metrics,
            crate::io::checkpoint::RngState::of(&rng),
        )
    }

    /// The shards' gradients (and losses, metrics) summed over 2 and 3 ranks equal the
    /// whole batch's: the normalisation is over the global batch.
    pub(crate) fn check_shards_sum_to_whole<T: Task<Cpu>>(
        task: &mut T,
        gpt: &Gpt<f32, Cpu>,
        what: &str,
    ) {
        let (whole, loss, metrics, rng) = step_grads(task, gpt, Shard::WHOLE);
        let scale = whole.iter().fold(0f32, |m, g| m.max(g.abs()));
        assert!(scale > 0.0);
        for size in [2, 3] {
            let mut sum = vec![0f32; whole.len()];
            let (mut l, mut m) = (0f32, vec![0f64; metrics.len()]);
            for rank in 0..size {
                let (g, lr, mr, rr) = step_grads(task, gpt, Shard { rank, size });
                assert_eq!(
                    rr, rng,
                    "{what}: the data RNG must advance as for the whole batch"
                );
                sum.iter_mut().zip(&g).for_each(|(s, x)| *s += x);
                l += lr;
                m.iter_mut().zip(&mr).for_each(|(s, x)| *s += x);
            }
            let d = sum
                .iter()
                .zip(&whole)
                .fold(0f32, |d, (a, b)| d.max((a - b).abs()));
            assert!(
                d <= 1e-5 * scale,
                "{what}, {size} ranks: shard gradients sum to {d} off the batch gradient (largest {scale})"
            );
            assert!(
                (l - loss).abs() <= 1e-5 * loss.abs(),
                "{what}: loss {l} vs {loss}"
            );
            for (a, b) in m.iter().zip(&metrics) {
                assert!((a - b).abs() <= 1e-5 * b.abs(), "{what}: metric {a} vs {b}");
            }
        }
    }

    #[test]
    fn shard_gradients_sum_to_the_batch_gradient() {
        let k = 8;
        let palette = Palette::new(1, &[0, 36, 72, 108, 144, 180, 216, 252]).unwrap();
        let model = Config::new(k, 4, 16, 2, 1).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let train: Vec<Vec<u16>> = (0..12)
            .map(|_| (0..16).map(|_| rng.gen_range(0..k as u16)).collect())
            .collect();
        let dev = Cpu::default();
        let gpt = Gpt::<f32, Cpu>::init(&dev, model, None, 1);
        for objective in [Objective::Ar, Objective::Bert] {
            let cfg = PretrainArgs {
                data: PathBuf::new(),
                model,
                objective,
                steps: 1,
                batch: 7,
                lr: 1e-3,
                warmup: 0,
                adam: crate::io::meta::AdamConfig::default(),
                seed: 0,
                eval_every: 1,
                val_images: 0,
                train_images: 0,
            };
            let mut task = Pretrain {
                cfg: &cfg,
                palette: &palette,
                train: train.clone(),
                val: Vec::new(),
            };
            check_shards_sum_to_whole(&mut task, &gpt, &format!("{objective:?}"));
        }
    }
}
