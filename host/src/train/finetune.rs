//! Fine-tuning (the paper's second evaluation): the pretrained model plus a class head on
//! the mean over positions of the final norm output, trained on `L_gen + L_clf` (the
//! generative loss of the pretraining objective plus the classification cross-entropy),
//! with early stopping on the accuracy of a held-out 10% of the training set.

use crate::data::Split;
use crate::io::checkpoint::{Checkpoint, Mat};
use crate::nn::device::ModelDevice;
use crate::nn::kernels;
use crate::nn::{Capture, Captures, Gpt, Objective};
use crate::train::{self, AdamConfig, AdamW};
use anyhow::{ensure, Context, Result};
use dfdx::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// A `finetune` command.
#[derive(Debug, Clone)]
pub struct FinetuneConfig {
    /// Pretrained checkpoint (with its palette).
    pub checkpoint: PathBuf,
    /// Dataset: train split (90% fit, 10% validation), test split measured at the end.
    pub data: PathBuf,
    /// Most optimizer steps.
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate (warmup then cosine; about 10x below pretraining).
    pub lr: f64,
    /// Evaluate validation accuracy every N steps.
    pub eval_every: u64,
    /// Stop after this many evaluations without a better validation accuracy.
    pub patience: usize,
    /// Use only the first N training / test images (0: all).
    pub limit: (usize, usize),
    /// Seed.
    pub seed: u64,
    /// Output folder: checkpoint.safetensors (with `score.weight`), finetune.json.
    pub out: PathBuf,
}

/// What a fine-tuning run reports.
#[derive(Debug, Clone, Copy)]
pub struct FinetuneSummary {
    /// Steps run.
    pub steps: u64,
    /// Best validation accuracy.
    pub val_accuracy: f64,
    /// Test accuracy of the best checkpoint.
    pub test_accuracy: f64,
}

/// Class logits `(B, classes)` of images: mean over positions of the final norm output,
/// times the head `(classes, C)` transposed.
fn class_logits<D: ModelDevice, T: Tape<f32, D>>(
    gpt: &Gpt<f32, D>,
    head: &Tensor<(usize, usize), f32, D>,
    ids: &[usize],
    batch: usize,
    causal: bool,
) -> Tensor<(usize, usize), f32, D, T> {
    let z = gpt.forward::<T>(
        ids,
        batch,
        causal,
        None,
        Capture::default(),
        &mut Captures::default(),
    );
    z.mean::<_, Axis<1>>()
        .matmul(head.clone().permute::<_, Axes2<1, 0>>())
}

fn accuracy<D: ModelDevice>(
    gpt: &Gpt<f32, D>,
    head: &Tensor<(usize, usize), f32, D>,
    images: &[Vec<u16>],
    labels: &[u16],
    causal: bool,
) -> f64 {
    let sos = gpt.config.sos();
    let mut right = 0;
    for (chunk, ys) in images.chunks(64).zip(labels.chunks(64)) {
        let ids = model_input(chunk, sos, causal);
        let logits = class_logits::<D, NoneTape>(gpt, head, &ids, chunk.len(), causal);
        let l = logits.as_vec();
        let k = l.len() / chunk.len();
        for (row, &y) in l.chunks_exact(k).zip(ys) {
            let best = (0..k).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            right += (best == y as usize) as usize;
        }
    }
    right as f64 / images.len().max(1) as f64
}

fn model_input(images: &[Vec<u16>], sos: usize, causal: bool) -> Vec<usize> {
    let mut ids = Vec::new();
    for img in images {
        if causal {
            ids.push(sos);
            ids.extend(img[..img.len() - 1].iter().map(|&x| x as usize));
        } else {
            ids.extend(img.iter().map(|&x| x as usize));
        }
    }
    ids
}

/// Runs fine-tuning on the CPU; writes the best checkpoint (with its class head) to
/// `cfg.out`.
pub fn finetune(cfg: &FinetuneConfig, show_progress: bool) -> Result<FinetuneSummary> {
    finetune_on(&Cpu::seed_from_u64(cfg.seed), cfg, show_progress)
}

/// [`finetune`] on any device (`--device`). The class head's AdamW runs on host slices
/// (it is `classes x d`).
pub fn finetune_on<D: ModelDevice>(
    dev: &D,
    cfg: &FinetuneConfig,
    show_progress: bool,
) -> Result<FinetuneSummary> {
    ensure!(
        cfg.batch > 0 && cfg.steps > 0 && cfg.eval_every > 0,
        "--batch, --steps and --eval-every must be positive"
    );
    let ck = Checkpoint::load(&cfg.checkpoint)?;
    let palette = ck.palette.clone().with_context(|| {
        format!(
            "{}: the checkpoint has no palette",
            cfg.checkpoint.display()
        )
    })?;
    let objective = match &ck.train {
        Some(t) if t.args.contains("\"objective\":\"Bert\"") => Objective::Bert,
        _ => Objective::Ar,
    };
    let causal = objective == Objective::Ar;
    let side = ck.config.side;
    let load = |split, limit| -> Result<(Vec<Vec<u16>>, Vec<u16>, usize)> {
        let ds = crate::data::load(&cfg.data, split, Some(side))?;
        let ds = if limit > 0 { ds.truncate(limit) } else { ds };
        let ds = ds.with_channels(palette.channels())?;
        let mut toks = Vec::with_capacity(ds.len());
        for i in 0..ds.len() {
            let mut t = vec![0u16; side * side];
            palette.tokenize(ds.image(i), &mut t)?;
            toks.push(t);
        }
        Ok((toks, ds.labels.clone(), ds.classes.len()))
    };
    let (train_x, train_y, classes) = load(Split::Train, cfg.limit.0)?;
    let (test_x, test_y, _) = load(Split::Test, cfg.limit.1)?;
    ensure!(
        train_x.len() >= 10,
        "{}: too few training images to fine-tune",
        cfg.data.display()
    );
    let mut order: Vec<usize> = (0..train_x.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    order.shuffle(&mut rng);
    let n_val = train_x.len() / 10;
    let (val_idx, fit_idx) = order.split_at(n_val);
    let val_x: Vec<Vec<u16>> = val_idx.iter().map(|&i| train_x[i].clone()).collect();
    let val_y: Vec<u16> = val_idx.iter().map(|&i| train_y[i]).collect();

    let mut gpt: Gpt<f32, D> = ck.model(dev);
    let d = ck.config.width;
    let mut head: Tensor<(usize, usize), f32, D> = dev.zeros_like(&(classes, d));
    let adam = AdamConfig::default();
    let mut opt = AdamW::new(&gpt, adam);
    let (mut hm, mut hv) = (vec![0f32; classes * d], vec![0f32; classes * d]);
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("{}: cannot create", cfg.out.display()))?;
    let ck_path = cfg.out.join("checkpoint.safetensors");
    let sos = ck.config.sos();
    let bar = crate::progress::bar(cfg.steps, "finetune", show_progress);
    let mut best = (f64::NEG_INFINITY, 0u64);
    let mut since_best = 0;
    let mut steps = 0;
    for step in 0..cfg.steps {
        steps = step + 1;
        let lr = train::lr_at(step, cfg.lr, (cfg.steps / 20).max(1), cfg.steps);
        let pick: Vec<usize> = (0..cfg.batch)
            .map(|_| fit_idx[rng.gen_range(0..fit_idx.len())])
            .collect();
        let imgs: Vec<&[u16]> = pick.iter().map(|&i| train_x[i].as_slice()).collect();
        let batch = train::make_batch(&imgs, sos, objective, &mut rng);
        // L_gen on the objective's batch, L_clf on the clean images. For AR both read the
        // same input, so one forward pass serves both losses.
        let (l_gen, logits) = if causal {
            let z = gpt.forward::<OwnedTape<f32, D>>(
                &batch.input,
                cfg.batch,
                true,
                None,
                Capture::default(),
                &mut Captures::default(),
            );
            let logits = z
                .retaped::<OwnedTape<f32, D>>()
                .mean::<_, Axis<1>>()
                .matmul(head.clone().permute::<_, Axes2<1, 0>>());
            let l_gen = D::head_loss(z, &gpt.lm_head, &batch.target, &batch.weight, gpt.fused);
            (l_gen, logits)
        } else {
            let l_gen = train::loss::<f32, D, OwnedTape<f32, D>>(&gpt, &batch);
            let owned: Vec<Vec<u16>> = imgs.iter().map(|s| s.to_vec()).collect();
            let ids = model_input(&owned, sos, causal);
            (
                l_gen,
                class_logits::<D, OwnedTape<f32, D>>(&gpt, &head, &ids, cfg.batch, causal),
            )
        };
        let labels: Tensor<(usize,), usize, D> = dev.tensor_from_vec(
            pick.iter().map(|&i| train_y[i] as usize).collect(),
            (cfg.batch,),
        );
        let l_clf = logits
            .log_softmax::<Axis<1>>()
            .select(labels)
            .mean()
            .negate();
        let loss = l_gen + l_clf;
        let value = train::scalar(loss.retaped::<NoneTape>());
        ensure!(
            value.is_finite(),
            "loss became {value} at step {step}: lower --lr"
        );
        let mut grads = loss.backward();
        // The head: AdamW on slices, its bias correction from the model's step count.
        {
            let g = grads.get(&head).as_vec();
            let mut hp = head.as_vec();
            let (bc1, bc2) = opt.bias_corrections();
            kernels::adamw_step(
                &mut hp,
                &g,
                &mut hm,
                &mut hv,
                (adam.beta1 as f32, adam.beta2 as f32, adam.eps as f32),
                (lr as f32, 0.0),
                (bc1 as f32, bc2 as f32, 1.0),
            );
            head.copy_from(&hp);
        }
        opt.update(&mut gpt, &mut grads, lr);
        bar.inc(1);
        bar.set_message(format!("loss {value:.3}"));
        if steps % cfg.eval_every == 0 || steps == cfg.steps {
            let acc = accuracy(&gpt, &head, &val_x, &val_y, causal);
            crate::progress::note(
                &bar,
                show_progress,
                format!("step {steps}: validation accuracy {:.2}%", 100.0 * acc),
            );
            if acc > best.0 {
                best = (acc, steps);
                since_best = 0;
                let mut out = Checkpoint::from_model(&gpt, Some(palette.clone()));
                out.score = Some(Mat {
                    rows: classes,
                    cols: d,
                    data: head.as_vec(),
                });
                out.save(&ck_path)?;
            } else {
                since_best += 1;
                if since_best >= cfg.patience {
                    crate::progress::note(
                        &bar,
                        show_progress,
                        format!(
                            "no better validation accuracy for {} evaluations: stopping",
                            cfg.patience
                        ),
                    );
                    break;
                }
            }
        }
    }
    bar.finish_and_clear();
    // Measure the best checkpoint on the test split.
    let best_ck = Checkpoint::load(&ck_path)?;
    let gpt: Gpt<f32, D> = best_ck.model(dev);
    let s = best_ck
        .score
        .as_ref()
        .context("fine-tuned checkpoint without its head")?;
    let head: Tensor<(usize, usize), f32, D> =
        dev.tensor_from_vec(s.data.clone(), (s.rows, s.cols));
    let test_accuracy = accuracy(&gpt, &head, &test_x, &test_y, causal);
    let summary = FinetuneSummary {
        steps,
        val_accuracy: best.0,
        test_accuracy,
    };
    let json = serde_json::json!({
        "checkpoint": cfg.checkpoint.to_string_lossy(), "data": cfg.data.to_string_lossy(),
        "steps_run": steps, "best_step": best.1, "val_accuracy": best.0, "test_accuracy": test_accuracy,
        "train_images": fit_idx.len(), "val_images": val_x.len(), "test_images": test_x.len(),
        "lr": cfg.lr, "batch": cfg.batch,
    });
    crate::io::write_atomic(
        &cfg.out.join("finetune.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    Ok(summary)
}

/// Where `finetune` writes its checkpoint.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.safetensors")
}
