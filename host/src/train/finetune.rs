//! Fine-tuning (the paper's second evaluation): the pretrained model plus a class head on
//! the mean over positions of the final norm output, trained on `L_gen + L_clf` (the
//! generative loss of the pretraining objective plus the classification cross-entropy),
//! with early stopping on the accuracy of a held-out 10% of the training set, through the
//! same training loop as pretraining ([`super::trainer`]): exact `--resume`, `log.csv`,
//! `loss.png` and `accuracy.png`.
//!
//! A fine-tuning folder holds `checkpoint.safetensors` (the best model by validation
//! accuracy: weights, class head `score.weight`, the pretraining and fine-tuning
//! arguments), `state.safetensors` (the latest training state), `log.csv`, the curves and,
//! at the end, `finetune.json`.

use super::adamw::AdamW;
use super::augment::augment;
use super::batch;
use super::distributed::{Collective, DataParallel, Fingerprint, Shard};
use super::trainer::{self, Curve, LogRow, Loss, RunFiles, Settings, Start, Task, Throughput};
use crate::data::tokenize::{self, model_ids};
use crate::data::Split;
use crate::io::checkpoint::Checkpoint;
use crate::io::meta::{self, FinetuneArgs};
use crate::nn::device::ModelDevice;
use crate::nn::{Capture, Captures, Gpt, Objective, ParamName};
use anyhow::{bail, ensure, Context, Result};
use dfdx::prelude::*;
use igpt_core::Palette;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// What a fine-tuning run reports (also `finetune.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneSummary {
    /// The pretrained checkpoint.
    pub checkpoint: PathBuf,
    /// The dataset.
    pub data: PathBuf,
    /// Steps run (in total, including before a resume).
    pub steps_run: u64,
    /// Step of the best validation accuracy (the kept checkpoint).
    pub best_step: u64,
    /// Best validation accuracy.
    pub val_accuracy: f64,
    /// Test accuracy of the kept checkpoint.
    pub test_accuracy: f64,
    /// True when early stopping ended the run.
    pub stopped_early: bool,
    /// Images the model was fitted on (90% of the training split).
    pub train_images: usize,
    /// Validation images (10% of the training split).
    pub val_images: usize,
    /// Test images.
    pub test_images: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Images per step.
    pub batch: usize,
    /// Throughput and the allreduce's share of the steps (this process; not saved).
    #[serde(skip)]
    pub throughput: Throughput,
    /// Data parallel: FNV-1a of the final parameters, the same on every rank (`None`
    /// for one process; not saved).
    #[serde(skip)]
    pub fingerprint: Option<u64>,
}

/// The best model's file in a fine-tuning folder.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.safetensors")
}

/// The training state's file in a fine-tuning folder.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.safetensors")
}

/// Class logits `(B, classes)` of images: mean over positions of the final norm output,
/// times the class head `(classes, C)` transposed.
fn pooled_logits<D: ModelDevice, T: Tape<f32, D>>(
    gpt: &Gpt<f32, D>,
    z: Tensor<(usize, usize, usize), f32, D, T>,
) -> Result<Tensor<(usize, usize), f32, D, T>> {
    let head = gpt
        .params
        .score
        .as_ref()
        .context("the model has no class head")?;
    Ok(z.mean::<_, Axis<1>>()
        .matmul(head.clone().permute::<_, Axes2<1, 0>>()))
}

fn forward<D: ModelDevice, T: Tape<f32, D>>(
    gpt: &Gpt<f32, D>,
    ids: &[usize],
    batch: usize,
    causal: bool,
) -> Tensor<(usize, usize, usize), f32, D, T> {
    gpt.forward::<T>(
        ids,
        batch,
        causal,
        None,
        Capture::default(),
        &mut Captures::default(),
    )
}

/// Accuracy of the class head on labelled images, each rank of `comm` classifying its
/// chunks of 64 (the counts are integers, so their sum is exact).
fn accuracy<D: ModelDevice>(
    gpt: &Gpt<f32, D>,
    images: &[Vec<u16>],
    labels: &[u16],
    causal: bool,
    comm: &dyn Collective,
) -> Result<f64> {
    let sos = gpt.config.sos();
    let shard = comm.shard();
    let mut right = 0;
    for (i, (chunk, ys)) in images.chunks(64).zip(labels.chunks(64)).enumerate() {
        if !shard.owns(i) {
            continue;
        }
        let ids = model_ids(chunk, sos, causal);
        let z = forward::<D, NoneTape>(gpt, &ids, chunk.len(), causal);
        let l = pooled_logits(gpt, z)?.as_vec();
        let k = l.len() / chunk.len();
        for (row, &y) in l.chunks_exact(k).zip(ys) {
            let best = (0..k).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            right += (best == y as usize) as usize;
        }
    }
    let mut right = [right as f64];
    comm.allreduce_sum_f64(&mut right);
    Ok(right[0] / images.len().max(1) as f64)
}

/// The padding token of `--augment` (the palette's colour nearest black, the border a
/// pad-and-crop adds), or `None` without augmentation.
fn augment_fill(cfg: &FinetuneArgs, palette: &Palette) -> Option<u16> {
    let black = vec![0u8; palette.channels()];
    cfg.augment.then(|| palette.nearest_with_distance(&black).0)
}

/// Fine-tuning as a [`Task`] of the training loop.
struct Finetune<'a> {
    cfg: &'a FinetuneArgs,
    source: &'a Checkpoint,
    palette: Palette,
    objective: Objective,
    /// The class names, in the order of the head's rows.
    classes: Vec<String>,
    /// The background colour's token when the training images are augmented.
    fill: Option<u16>,
    fit_x: Vec<Vec<u16>>,
    fit_y: Vec<u16>,
    val_x: Vec<Vec<u16>>,
    val_y: Vec<u16>,
}

impl<D: ModelDevice> Task<D> for Finetune<'_> {
    fn train_columns(&self) -> Vec<&'static str> {
        vec!["train_gen_bpd", "train_clf_nats"]
    }
    fn eval_columns(&self) -> Vec<&'static str> {
        vec!["val_accuracy"]
    }
    fn tokens_per_step(&self) -> usize {
        self.cfg.batch * self.source.config.seq_len()
    }
    fn loss(
        &mut self,
        gpt: &Gpt<f32, D>,
        rng: &mut ChaCha8Rng,
        shard: Shard,
    ) -> Result<(Loss<D>, Vec<f64>)> {
        let global = self.cfg.batch;
        let causal = self.objective == Objective::Ar;
        let mut pick: Vec<usize> = (0..global)
            .map(|_| rng.gen_range(0..self.fit_x.len()))
            .collect();
        // Every rank draws the whole batch's augmentations, so the ranks stay in step.
        let side = self.source.config.side;
        let mut images: Vec<Cow<[u16]>> = pick
            .iter()
            .map(|&i| match self.fill {
                Some(fill) => Cow::Owned(augment(&self.fit_x[i], side, fill, rng)),
                None => Cow::Borrowed(self.fit_x[i].as_slice()),
            })
            .collect();
        let all: Vec<&[u16]> = images.iter().map(|x| x.as_ref()).collect();
        let mut mb = batch::make_batch(&all, gpt.config.sos(), self.objective, rng);
        if !shard.is_whole() {
            // This rank's rows; L_gen keeps the global batch's weights, L_clf is summed
            // over the rows and divided by the global batch below.
            let rows = shard.range(global);
            mb = mb.rows(rows.clone());
            pick = pick[rows.clone()].to_vec();
            images = images.drain(rows).collect();
        }
        let b = pick.len();
        let imgs: Vec<&[u16]> = images.iter().map(|x| x.as_ref()).collect();
        // L_gen on the objective's batch, L_clf on the clean images. For AR both read the
        // same input, so one forward pass serves both losses.
        let (l_gen, logits) = if causal {
            let z = forward::<D, OwnedTape<f32, D>>(gpt, &mb.input, b, true);
            let logits = pooled_logits(gpt, z.retaped::<OwnedTape<f32, D>>())?;
            let l_gen = D::head_loss(z, &gpt.params.lm_head, &mb.target, &mb.weight, gpt.fused);
            (l_gen, logits)
        } else {
            let l_gen = batch::loss::<f32, D, OwnedTape<f32, D>>(gpt, &mb);
            let ids = model_ids(&imgs, gpt.config.sos(), false);
            let z = forward::<D, OwnedTape<f32, D>>(gpt, &ids, b, false);
            (l_gen, pooled_logits(gpt, z)?)
        };
        let dev = gpt.params.wte.device().clone();
        let labels: Tensor<(usize,), usize, D> =
            dev.tensor_from_vec(pick.iter().map(|&i| self.fit_y[i] as usize).collect(), (b,));
        let log_p = logits.log_softmax::<Axis<1>>().select(labels);
        let l_clf = if shard.is_whole() {
            log_p.mean().negate()
        } else {
            (log_p.sum() * (1.0 / global as f32)).negate()
        };
        let gen_bits = batch::bits(crate::nn::value(l_gen.retaped::<NoneTape>()));
        let clf_nats = crate::nn::value(l_clf.retaped::<NoneTape>());
        let loss = l_gen * self.cfg.gen_weight as f32 + l_clf;
        Ok((loss, vec![gen_bits, clf_nats]))
    }
    fn evaluate(&mut self, gpt: &Gpt<f32, D>, comm: &dyn Collective) -> Result<(Vec<f64>, f64)> {
        let acc = accuracy(
            gpt,
            &self.val_x,
            &self.val_y,
            self.objective == Objective::Ar,
            comm,
        )?;
        Ok((vec![acc], acc))
    }
    fn checkpoint(&self, gpt: &Gpt<f32, D>) -> Checkpoint {
        let mut ck = Checkpoint::from_model(gpt, Some(self.palette.clone()));
        ck.pretrain = self.source.pretrain.clone();
        ck.finetune = Some(self.cfg.clone());
        ck.classes = Some(self.classes.clone());
        ck
    }
    fn lr_scale(&self, name: ParamName) -> f64 {
        if name == ParamName::Score {
            self.cfg.head_lr_scale
        } else {
            1.0
        }
    }
    fn curves(&self) -> Vec<Curve> {
        vec![
            Curve {
                file: "loss.png",
                title: "Fine-tuning losses (training)",
                y_label: "L_gen bits/dim, L_clf nats",
                columns: vec![
                    ("train_gen_bpd", "L_gen (bits/dim)"),
                    ("train_clf_nats", "L_clf (nats)"),
                ],
                scale: 1.0,
            },
            Curve {
                file: "accuracy.png",
                title: "Fine-tuning validation accuracy",
                y_label: "accuracy (%)",
                columns: vec![("val_accuracy", "validation")],
                scale: 100.0,
            },
        ]
    }
    fn describe(&self, row: &LogRow) -> String {
        format!(
            "step {}: L_gen {:.4} bits/dim, L_clf {:.4}, validation accuracy {:.2}%",
            row.step,
            row.train[0],
            row.train[1],
            100.0 * row.eval[0]
        )
    }
}

/// Runs fine-tuning on the CPU into `out` (see the module docs for its files).
pub fn finetune(
    cfg: &FinetuneArgs,
    out: &Path,
    resume: bool,
    stop_after: Option<u64>,
    show: bool,
) -> Result<FinetuneSummary> {
    finetune_on(
        &Cpu::seed_from_u64(cfg.seed),
        cfg,
        out,
        resume,
        stop_after,
        show,
    )
}

/// [`finetune`] on any device (`--device`).
pub fn finetune_on<D: ModelDevice>(
    dev: &D,
    cfg: &FinetuneArgs,
    out: &Path,
    resume: bool,
    stop_after: Option<u64>,
    show: bool,
) -> Result<FinetuneSummary> {
    finetune_parallel(
        dev,
        cfg,
        out,
        resume,
        stop_after,
        show,
        &mut DataParallel::single(),
    )
}

/// [`finetune_on`] on every rank of `dp` (`mpirun -np N igpt finetune ...`), as
/// [`super::pretrain::pretrain_parallel`] does for pretraining; the test accuracy of the
/// kept model is sharded too, and rank 0 alone writes the folder.
pub fn finetune_parallel<D: ModelDevice>(
    dev: &D,
    cfg: &FinetuneArgs,
    out: &Path,
    resume: bool,
    stop_after: Option<u64>,
    show: bool,
    dp: &mut DataParallel<'_, D>,
) -> Result<FinetuneSummary> {
    let comm = dp.comm();
    let show = show && comm.is_root();
    cfg.validate()?;
    super::distributed::agree_on_run(
        comm,
        cfg.batch,
        &FinetuneArgs {
            checkpoint: PathBuf::new(),
            data: PathBuf::new(),
            ..cfg.clone()
        },
        resume,
        stop_after,
    )?;
    let files = RunFiles {
        dir: out.to_path_buf(),
        state: state_path(out),
        best: Some(checkpoint_path(out)),
    };
    let _lock = trainer::claim_folder(out, comm)?;
    let saved = if resume {
        let ck = Checkpoint::load(&files.state)?;
        let args = ck.finetune.as_ref().with_context(|| {
            format!(
                "{}: holds no fine-tuning run to resume",
                files.state.display()
            )
        })?;
        meta::ensure_same(&files.state, &args.canonical(), &cfg.canonical())?;
        Some(ck)
    } else {
        for f in [&files.state, &checkpoint_path(out)] {
            if f.exists() {
                bail!(
                    "{}: exists (another run's checkpoint, or this run's: pass --resume to continue it); choose another --out",
                    f.display()
                );
            }
        }
        None
    };
    let source = Checkpoint::load(&cfg.checkpoint)?;
    crate::io::ensure_memory(
        crate::nn::memory::training_bytes(&source.config, cfg.batch),
        "lower --batch",
    )?;
    let palette = source.palette_or_err(&cfg.checkpoint)?;
    let objective = source.objective();
    let causal = objective == Objective::Ar;
    let side = source.config.side;
    crate::data::ensure_two_splits(&cfg.data, "the test accuracy")?;
    let train = tokenize::split(&cfg.data, Split::Train, &palette, side, cfg.train_images)?;
    let test = tokenize::split(&cfg.data, Split::Test, &palette, side, cfg.test_images)?;
    ensure!(
        train.len() >= 10,
        "{}: too few training images to fine-tune ({})",
        cfg.data.display(),
        train.len()
    );
    let classes = train.classes.len();
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    order.shuffle(&mut rng);
    let n_val = train.len() / 10;
    let (val_idx, fit_idx) = order.split_at(n_val);
    let fit = train.select(fit_idx);
    let val = train.select(val_idx);
    if comm.size() > 1 {
        let mut data = Fingerprint::default();
        for img in fit.tokens.iter().chain(&val.tokens).chain(&test.tokens) {
            data.u16s(img);
        }
        data.u16s(&fit.labels).u16s(&val.labels).u16s(&test.labels);
        comm.agree("the fine-tuning images and labels", data.value())?;
    }
    if comm.is_root() {
        std::fs::create_dir_all(out)
            .with_context(|| format!("{}: cannot create", out.display()))?;
    }
    let start = match &saved {
        Some(ck) => Start::resume(dev, ck, cfg.adam, &files, 7)?,
        None => {
            let mut gpt: Gpt<f32, D> = source.model(dev)?;
            // A fresh class head, zero like the paper's heads.
            gpt.params.score = Some(dev.zeros_like(&(classes, source.config.width)));
            let opt = AdamW::new(&gpt.params, cfg.adam);
            Start::fresh(gpt, opt, rng)
        }
    };
    ensure!(
        start.gpt.params.score.as_ref().map(|s| s.shape().0) == Some(classes),
        "{}: the class head does not have {classes} classes",
        files.state.display()
    );
    let warmup = cfg.warmup;
    let fill = augment_fill(cfg, &palette);
    let mut task = Finetune {
        cfg,
        source: &source,
        palette,
        objective,
        classes: train.classes.clone(),
        fill,
        fit_x: fit.tokens,
        fit_y: fit.labels,
        val_x: val.tokens,
        val_y: val.labels,
    };
    let settings = Settings {
        steps: cfg.steps,
        lr: cfg.lr,
        warmup,
        schedule: cfg.schedule,
        eval_every: cfg.eval_every,
        patience: Some(cfg.patience),
        stop_after,
        fused: true,
    };
    trainer::check_data(&files, &cfg.data, resume, comm)?;
    let outcome = trainer::run_parallel(&mut task, start, &settings, &files, show, dp)?;
    // Measure the kept (best) checkpoint on the test split (every rank reads it: rank 0
    // wrote it before the loop's final barrier).
    let best = Checkpoint::load(&checkpoint_path(out))?;
    let gpt: Gpt<f32, D> = best.model(dev)?;
    let test_accuracy = accuracy(&gpt, &test.tokens, &test.labels, causal, comm)?;
    let summary = FinetuneSummary {
        checkpoint: cfg.checkpoint.clone(),
        data: cfg.data.clone(),
        steps_run: outcome.steps,
        best_step: outcome.progress.best_step,
        val_accuracy: outcome.progress.best_score.unwrap_or(f64::NAN),
        test_accuracy,
        stopped_early: outcome.stopped_early,
        train_images: fit_idx.len(),
        val_images: task.val_x.len(),
        test_images: test.len(),
        lr: cfg.lr,
        batch: cfg.batch,
        throughput: outcome.throughput,
        fingerprint: outcome.fingerprint,
    };
    if comm.is_root() {
        crate::io::write_atomic(
            &out.join("finetune.json"),
            serde_json::to_string_pretty(&summary)?.as_bytes(),
        )?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::pretrain::tests::check_shards_sum_to_whole;
    use igpt_core::Config;

    #[test]
    fn shard_gradients_sum_to_the_batch_gradient() {
        let k = 8;
        let palette = Palette::new(1, &[0, 36, 72, 108, 144, 180, 216, 252]).unwrap();
        let model = Config::new(k, 4, 16, 2, 1).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let fit_x: Vec<Vec<u16>> = (0..12)
            .map(|_| (0..16).map(|_| rng.gen_range(0..k as u16)).collect())
            .collect();
        let fit_y: Vec<u16> = (0..12).map(|i| i % 3).collect();
        let dev = Cpu::default();
        let mut gpt = Gpt::<f32, Cpu>::init(&dev, model, None, 1);
        gpt.params.score = Some(dev.sample_normal_like(&(3, 16)));
        let source = Checkpoint::from_model(&gpt, Some(palette.clone()));
        let cfg = FinetuneArgs {
            checkpoint: PathBuf::new(),
            data: PathBuf::new(),
            steps: 1,
            batch: 7,
            lr: 1e-3,
            warmup: 0,
            schedule: Default::default(),
            augment: false,
            head_lr_scale: 1.0,
            gen_weight: 0.5,
            adam: crate::io::meta::AdamConfig::default(),
            eval_every: 1,
            patience: 1,
            train_images: 0,
            test_images: 0,
            seed: 0,
        };
        for objective in [Objective::Ar, Objective::Bert] {
            let mut task = Finetune {
                cfg: &cfg,
                source: &source,
                palette: palette.clone(),
                objective,
                classes: vec!["a".into(), "b".into(), "c".into()],
                fill: Some(0),
                fit_x: fit_x.clone(),
                fit_y: fit_y.clone(),
                val_x: Vec::new(),
                val_y: Vec::new(),
            };
            check_shards_sum_to_whole(&mut task, &gpt, &format!("fine-tuning {objective:?}"));
        }
    }
}
