//! Typed run metadata: what defines a pretraining or fine-tuning run, stored as JSON in
//! its checkpoints (`train_args`, `finetune_args`; FORMAT.md) and compared field by
//! field on `--resume`.
//!
//! The JSON keys are the field names; a checkpoint written before these types existed
//! (the same keys, produced by hand) reads back unchanged.

use crate::nn::Objective;
use anyhow::{bail, Result};
use igpt_core::Config;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// [`Config`] as JSON: `{"vocab", "side", "width", "heads", "layers"}`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Config")]
pub struct ConfigJson {
    vocab: usize,
    side: usize,
    width: usize,
    heads: usize,
    layers: usize,
}

/// AdamW settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay (block projections and the heads only).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub clip: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        // The paper's: β (0.9, 0.95), no weight decay.
        AdamConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            clip: 1.0,
        }
    }
}

/// Everything that defines a pretraining run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainArgs {
    /// Dataset path.
    pub data: PathBuf,
    /// Model shape (k = the palette's size).
    #[serde(with = "ConfigJson")]
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
    #[serde(flatten)]
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

/// Everything that defines a fine-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneArgs {
    /// The pretrained checkpoint it started from.
    pub checkpoint: PathBuf,
    /// Dataset: train split (90% fit, 10% validation), test split measured at the end.
    pub data: PathBuf,
    /// Most optimizer steps.
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate of the transformer.
    pub lr: f64,
    /// Warmup steps.
    pub warmup: u64,
    /// After the warmup: cosine decay to 0, or constant (files from before the option:
    /// cosine).
    #[serde(default)]
    pub schedule: Schedule,
    /// Augment the training images (a random shift of up to one pixel, the uncovered edge
    /// filled with the background colour, and a random horizontal flip), before
    /// tokenizing.
    #[serde(default)]
    pub augment: bool,
    /// The class head's learning rate as a multiple of `lr`.
    pub head_lr_scale: f64,
    /// Weight of the generative loss: `loss = gen_weight · L_gen + L_clf`.
    pub gen_weight: f64,
    /// AdamW settings.
    #[serde(flatten)]
    pub adam: AdamConfig,
    /// Validate (and keep the best checkpoint) every N steps.
    pub eval_every: u64,
    /// Stop after this many evaluations without a better validation accuracy.
    pub patience: usize,
    /// Use only the first N training images (0: all).
    pub train_images: usize,
    /// Use only the first N test images (0: all).
    pub test_images: usize,
    /// Seed of the split, the head's start and the data order.
    pub seed: u64,
}

/// What the learning rate does after the warmup (`train::schedule` computes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Cosine decay to 0 at the last step.
    #[default]
    Cosine,
    /// The peak rate until the last step.
    Constant,
}

/// A path made absolute and free of `.`/`..`/links where it exists, so that `data` and
/// `./data` compare equal.
pub fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `name` must be finite and within `lo..=hi`.
pub fn check_range(name: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
    anyhow::ensure!(
        v.is_finite() && v >= lo && v <= hi,
        "{name} {v} is out of range ({lo:e}..={hi:e})"
    );
    Ok(())
}

/// `name` must be finite and in `(0, hi]`.
pub fn check_positive(name: &str, v: f64, hi: f64) -> Result<()> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0 && v <= hi,
        "{name} {v} must be a positive number at most {hi:e}"
    );
    Ok(())
}

/// Largest batch a command accepts (memory is estimated before allocating as well).
pub const MAX_BATCH: usize = 4096;
/// Largest step count.
pub const MAX_STEPS: u64 = 100_000_000;

/// The training loop's sizes: `--batch`, `--steps`, `--eval-every`.
fn check_loop(batch: usize, steps: u64, eval_every: u64) -> Result<()> {
    anyhow::ensure!(
        (1..=MAX_BATCH).contains(&batch),
        "--batch {batch} is out of range (1..={MAX_BATCH})"
    );
    anyhow::ensure!(
        (1..=MAX_STEPS).contains(&steps),
        "--steps {steps} is out of range (1..={MAX_STEPS})"
    );
    anyhow::ensure!(eval_every > 0, "--eval-every must be positive");
    Ok(())
}

impl AdamConfig {
    /// Every setting finite and in its range.
    pub fn validate(&self) -> Result<()> {
        check_range("--beta1", self.beta1, 0.0, 0.999_999)?;
        check_range("--beta2", self.beta2, 0.0, 0.999_999_999)?;
        check_positive("--eps", self.eps, 1.0)?;
        check_range("--weight-decay", self.weight_decay, 0.0, 10.0)?;
        check_range("--clip", self.clip, 0.0, 1e6)?;
        Ok(())
    }
}

impl PretrainArgs {
    /// Every numeric argument finite and in range, naming the flag otherwise.
    pub fn validate(&self) -> Result<()> {
        check_loop(self.batch, self.steps, self.eval_every)?;
        check_positive("--lr", self.lr, 1.0)?;
        self.adam.validate()?;
        self.model
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid model shape: {e}"))?;
        super::ensure_memory(
            crate::nn::memory::training_bytes(&self.model, self.batch),
            "lower --batch or the model's size",
        )
    }

    /// The same arguments with the dataset path canonicalised.
    pub fn canonical(&self) -> PretrainArgs {
        PretrainArgs {
            data: canonical(&self.data),
            ..self.clone()
        }
    }
}

impl FinetuneArgs {
    /// Every numeric argument finite and in range, naming the flag otherwise.
    pub fn validate(&self) -> Result<()> {
        check_loop(self.batch, self.steps, self.eval_every)?;
        anyhow::ensure!(self.patience > 0, "--patience must be positive");
        check_positive("--lr", self.lr, 1.0)?;
        check_positive("--head-lr-scale", self.head_lr_scale, 1e4)?;
        check_range("--gen-weight", self.gen_weight, 0.0, 1e3)?;
        self.adam.validate()?;
        Ok(())
    }

    /// The same arguments with both paths canonicalised.
    pub fn canonical(&self) -> FinetuneArgs {
        FinetuneArgs {
            checkpoint: canonical(&self.checkpoint),
            data: canonical(&self.data),
            ..self.clone()
        }
    }
}

/// The first field (in a stable order, nested fields as `model.width`) whose value
/// differs between two values of one type, with both values; `None` when equal.
pub fn first_difference<T: Serialize>(saved: &T, given: &T) -> Option<(String, String, String)> {
    let (a, b) = (
        serde_json::to_value(saved).ok()?,
        serde_json::to_value(given).ok()?,
    );
    diff_values("", &a, &b)
}

fn diff_values(
    at: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff_values(&path, u, v),
                    (u, v) => Some((path, show(u), show(v))),
                }
            })
        }
        _ if a == b => None,
        _ => Some((at.to_string(), a.to_string(), b.to_string())),
    }
}

fn show(v: Option<&serde_json::Value>) -> String {
    v.map_or("(none)".to_string(), |v| v.to_string())
}

/// Fails, naming the first field that differs, unless `saved` and `given` agree; `what`
/// names the checkpoint in the error.
pub fn ensure_same<T: Serialize>(what: &Path, saved: &T, given: &T) -> Result<()> {
    if let Some((field, s, g)) = first_difference(saved, given) {
        bail!(
            "{}: saved with other arguments: `{field}` was {s}, now {g}; resume with the same ones",
            what.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> PretrainArgs {
        PretrainArgs {
            data: PathBuf::from("data"),
            model: Config::new(16, 4, 32, 4, 2).unwrap(),
            objective: Objective::Ar,
            steps: 10,
            batch: 4,
            lr: 1e-3,
            warmup: 2,
            adam: AdamConfig::default(),
            seed: 0,
            eval_every: 5,
            val_images: 0,
            train_images: 0,
        }
    }

    #[test]
    fn the_json_of_earlier_checkpoints_reads_back() {
        // What the hand-written writer produced before the typed metadata.
        let old = r#"{"batch":4,"beta1":0.9,"beta2":0.95,"clip":1.0,"data":"data","eps":1e-8,"eval_every":5,"lr":0.001,"model":{"heads":4,"layers":2,"side":4,"vocab":16,"width":32},"objective":"Ar","seed":0,"steps":10,"train_images":0,"val_images":0,"warmup":2,"weight_decay":0.0}"#;
        let a: PretrainArgs = serde_json::from_str(old).unwrap();
        assert_eq!(a, args());
        let back: PretrainArgs = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn the_first_difference_is_named() {
        let a = args();
        assert_eq!(first_difference(&a, &a.clone()), None);
        let mut b = a.clone();
        b.model.width = 64;
        b.lr = 2e-3;
        let (field, saved, given) = first_difference(&a, &b).unwrap();
        assert_eq!(
            (field.as_str(), saved.as_str(), given.as_str()),
            ("lr", "0.001", "0.002")
        );
        b.lr = a.lr;
        assert_eq!(first_difference(&a, &b).unwrap().0, "model.width");
        let e = ensure_same(Path::new("ck"), &a, &b)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`model.width` was 32, now 64"), "{e}");
    }

    #[test]
    fn paths_compare_canonically() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir(dir.join("sub")).unwrap();
        let mut a = args();
        a.data = dir.clone();
        let mut b = args();
        b.data = dir.join("sub").join("..");
        assert_ne!(a, b);
        assert_eq!(a.canonical(), b.canonical());
    }
}
