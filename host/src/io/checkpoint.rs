//! Checkpoints: a safetensors file (readable from Python as is) holding the model's
//! weights under HF-style names, optionally a class head and the full training state
//! (AdamW moments, step, RNG state, the pretraining arguments), with the config, the
//! palette and a CRC-32 of every tensor's bytes in its metadata. Layout in `FORMAT.md`.
//!
//! Written atomically; read with every field checked, so a corrupt or truncated file is
//! an error naming the file, never a panic.

use super::meta::{FinetuneArgs, PretrainArgs};
use crate::nn::{cst, Float, Gpt, GptParams, Mat, Objective, ParamName};
use anyhow::{anyhow, bail, ensure, Context, Result};
use dfdx::prelude::*;
use igpt_core::{Config, Palette};
use safetensors::{Dtype as StDtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "igpt-checkpoint";
/// The checkpoint version this build writes and reads.
pub const VERSION: u32 = 1;

/// The data RNG (ChaCha8): seed, stream and word position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RngState {
    /// Seed.
    pub seed: [u8; 32],
    /// ChaCha stream.
    pub stream: u64,
    /// ChaCha word position.
    pub word_pos: u128,
}

impl RngState {
    /// The state of `rng`.
    pub fn of(rng: &rand_chacha::ChaCha8Rng) -> RngState {
        RngState {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
    }

    /// An RNG in this state.
    pub fn rng(&self) -> rand_chacha::ChaCha8Rng {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }
}

/// The training loop's record (`loop_state`): early stopping and the running means of
/// the next log row, so that a resumed run logs and stops as an uninterrupted one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LoopProgress {
    /// Best evaluation score so far (higher is better), if any evaluation ran.
    pub best_score: Option<f64>,
    /// Step of that evaluation.
    pub best_step: u64,
    /// Evaluations since the best one.
    pub since_best: usize,
    /// Sums of the training metrics since the last log row.
    #[serde(default)]
    pub window_sum: Vec<f64>,
    /// Steps since the last log row.
    #[serde(default)]
    pub window_steps: u64,
}

/// What training needs to continue exactly where it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    /// AdamW first moments.
    pub m: GptParams<Mat>,
    /// AdamW second moments.
    pub v: GptParams<Mat>,
    /// The data RNG.
    pub rng: RngState,
    /// Early stopping.
    pub progress: LoopProgress,
}

/// Everything in a checkpoint file.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The model's shape.
    pub config: Config,
    /// The palette the model was trained with, when known.
    pub palette: Option<Palette>,
    /// Weights (with the class head `score.weight` of a fine-tuned model).
    pub params: GptParams<Mat>,
    /// The pretraining run's arguments, when it was pretrained here (also kept in the
    /// checkpoints fine-tuned from it).
    pub pretrain: Option<PretrainArgs>,
    /// The fine-tuning run's arguments, for a fine-tuned model.
    pub finetune: Option<FinetuneArgs>,
    /// The class head's class names, in the order of `score.weight`'s rows (fine-tuned
    /// models; older files have none).
    pub classes: Option<Vec<String>>,
    /// Training state: of the pretraining run, or of the fine-tuning run when
    /// `finetune` is set.
    pub state: Option<TrainState>,
}

/// The largest weight magnitude a checkpoint may hold: far above any trained model's
/// (well under 100), far below what overflows f32 activations through a few layers.
pub const MAX_ABS_WEIGHT: f32 = 1e6;

impl Checkpoint {
    /// The weights of a model (no run metadata, no training state).
    pub fn from_model<E: Float, D: Device<E>>(
        gpt: &Gpt<E, D>,
        palette: Option<Palette>,
    ) -> Checkpoint {
        Checkpoint {
            config: gpt.config,
            palette,
            params: gpt.params.map(|_, p| {
                let (rows, cols) = *p.shape();
                Mat {
                    rows,
                    cols,
                    data: p
                        .as_vec()
                        .into_iter()
                        .map(|x| x.to_f32().unwrap_or(f32::NAN))
                        .collect(),
                }
            }),
            pretrain: None,
            finetune: None,
            classes: None,
            state: None,
        }
    }

    /// The model these weights make (class head included), on `dev` in element type `E`.
    pub fn model<E: Float, D: Device<E>>(&self, dev: &D) -> Result<Gpt<E, D>> {
        let values = self
            .params
            .map(|_, m| m.data.iter().map(|&x| cst::<E>(x as f64)).collect());
        Gpt::from_values(dev, self.config, &values).map_err(|e| anyhow!("checkpoint: {e}"))
    }

    /// A valid checksum proves integrity, not sanity: the math needs finite weights of a
    /// sane size (at most [`MAX_ABS_WEIGHT`]), finite moments, and non-negative second
    /// moments.
    pub fn check_finite(&self) -> Result<()> {
        let bad = |p: &GptParams<Mat>, ok: fn(f32) -> bool| {
            p.iter()
                .find(|(_, m)| !m.data.iter().all(|&x| ok(x)))
                .map(|(n, _)| n.to_string())
        };
        if let Some(n) = bad(&self.params, f32::is_finite) {
            bail!("{n} holds NaN or infinite values");
        }
        if let Some(n) = bad(&self.params, |x| x.abs() <= MAX_ABS_WEIGHT) {
            bail!(
                "{n} holds weights beyond ±{MAX_ABS_WEIGHT:e}, too large for the forward pass to stay finite"
            );
        }
        if let Some(t) = &self.state {
            if let Some(n) = bad(&t.m, f32::is_finite) {
                bail!("optim.m.{n} holds NaN or infinite values");
            }
            if let Some(n) = bad(&t.v, |x| x.is_finite() && x >= 0.0) {
                bail!("optim.v.{n} holds NaN, infinite or negative values");
            }
        }
        Ok(())
    }

    /// The objective the model was pretrained with (AR when not recorded, as for HF
    /// imports: iGPT's released models are AR).
    pub fn objective(&self) -> Objective {
        self.pretrain
            .as_ref()
            .map_or(Objective::Ar, |a| a.objective)
    }

    /// The palette, or an error naming `path` when the checkpoint has none.
    pub fn palette_or_err(&self, path: &Path) -> Result<Palette> {
        self.palette.clone().with_context(|| {
            format!(
                "{}: the checkpoint has no palette (pretrain, or import-hf with --palette)",
                path.display()
            )
        })
    }

    fn config_json(&self) -> String {
        let c = &self.config;
        serde_json::json!({
            "vocab": c.vocab, "side": c.side, "width": c.width, "heads": c.heads, "layers": c.layers
        })
        .to_string()
    }

    /// Named tensors in canonical order (the order the CRC covers).
    fn named(&self) -> Vec<(String, &Mat)> {
        let mut out: Vec<(String, &Mat)> = self
            .params
            .iter()
            .map(|(n, m)| (n.to_string(), m))
            .collect();
        if let Some(t) = &self.state {
            out.extend(t.m.iter().map(|(n, m)| (format!("optim.m.{n}"), m)));
            out.extend(t.v.iter().map(|(n, m)| (format!("optim.v.{n}"), m)));
        }
        out
    }

    /// Encodes the checkpoint as safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let named = self.named();
        let bytes: Vec<Vec<u8>> = named
            .iter()
            .map(|(_, m)| m.data.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let mut crc = Crc::default();
        for b in &bytes {
            crc.update(b);
        }
        let mut meta = serde_json::Map::new();
        let mut put = |k: &str, v: String| {
            meta.insert(k.to_string(), serde_json::Value::String(v));
        };
        put("format", FORMAT.to_string());
        put("version", VERSION.to_string());
        put("config", self.config_json());
        if let Some(p) = &self.palette {
            let mut buf = vec![0u8; p.encoded_len()];
            p.to_bytes(&mut buf)?;
            put("palette", hex(&buf));
        }
        if let Some(a) = &self.pretrain {
            put("train_args", serde_json::to_string(a)?);
        }
        if let Some(a) = &self.finetune {
            put("finetune_args", serde_json::to_string(a)?);
        }
        if let Some(c) = &self.classes {
            put("classes", serde_json::to_string(c)?);
        }
        if let Some(t) = &self.state {
            put("step", t.step.to_string());
            put("rng_seed", hex(&t.rng.seed));
            put("rng_stream", t.rng.stream.to_string());
            put("rng_word_pos", t.rng.word_pos.to_string());
            if t.progress != LoopProgress::default() {
                put("loop_state", serde_json::to_string(&t.progress)?);
            }
        }
        // The CRC covers every tensor and every other metadata entry.
        crc.update(
            serde_json::Value::Object(meta.clone())
                .to_string()
                .as_bytes(),
        );
        meta.insert(
            "crc32".into(),
            serde_json::Value::String(format!("{:08x}", crc.finish())),
        );
        // The safetensors layout, written here so that the same checkpoint always gives
        // the same bytes (keys sorted; tensors' data in canonical order).
        let gain_names: Vec<String> = self
            .params
            .iter()
            .filter(|(n, _)| n.is_gain())
            .map(|(n, _)| n.to_string())
            .collect();
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::Value::Object(meta));
        let mut offset = 0usize;
        for ((name, m), b) in named.iter().zip(&bytes) {
            // Norm gains (and their moments) are stored 1-D, as in HF's state dict.
            let base = name
                .strip_prefix("optim.m.")
                .or_else(|| name.strip_prefix("optim.v."))
                .unwrap_or(name);
            let shape = if m.rows == 1 && gain_names.iter().any(|g| g == base) {
                serde_json::json!([m.cols])
            } else {
                serde_json::json!([m.rows, m.cols])
            };
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + b.len()]}),
            );
            offset += b.len();
        }
        let mut head = serde_json::Value::Object(header).to_string().into_bytes();
        head.resize(head.len().next_multiple_of(8), b' ');
        let mut out = Vec::with_capacity(8 + head.len() + offset);
        out.extend_from_slice(&(head.len() as u64).to_le_bytes());
        out.extend_from_slice(&head);
        for b in &bytes {
            out.extend_from_slice(b);
        }
        Ok(out)
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        crate::io::write_atomic(path, &bytes)
    }

    /// Reads and verifies a checkpoint file.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = crate::io::read(path)?;
        Self::from_bytes(&bytes).with_context(|| format!("{}: bad checkpoint", path.display()))
    }

    /// Decodes and verifies checkpoint bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| anyhow!("not a safetensors file ({e})"))?;
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| anyhow!("not a safetensors file ({e})"))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).ok_or_else(|| anyhow!("metadata has no '{k}'"));
        ensure!(
            get("format")? == FORMAT,
            "not an igpt checkpoint (format '{}')",
            get("format")?
        );
        let version: u32 = get("version")?
            .parse()
            .map_err(|_| anyhow!("unreadable version"))?;
        ensure!(
            version == VERSION,
            "checkpoint version {version}, this build reads {VERSION}"
        );
        let cj: serde_json::Value =
            serde_json::from_str(get("config")?).map_err(|e| anyhow!("config: {e}"))?;
        let field = |k: &str| -> Result<usize> {
            cj.get(k)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| anyhow!("config has no '{k}'"))
        };
        let config = Config::new(
            field("vocab")?,
            field("side")?,
            field("width")?,
            field("heads")?,
            field("layers")?,
        )
        .map_err(|e| anyhow!("config: {e}"))?;
        let palette = match meta.get("palette") {
            Some(h) => Some(Palette::from_bytes(&unhex(h)?).map_err(|e| anyhow!("palette: {e}"))?),
            None => None,
        };
        if let Some(p) = &palette {
            ensure!(
                p.len() == config.vocab,
                "palette has {} colours, config k = {}",
                p.len(),
                config.vocab
            );
        }
        let classes = match st.tensor("score.weight") {
            Ok(t) => {
                let s = t.shape();
                ensure!(
                    s.len() == 2 && s[1] == config.width && s[0] > 0,
                    "score.weight has shape {s:?}"
                );
                Some(s[0])
            }
            Err(_) => None,
        };
        let read = |prefix: &str, name: ParamName| -> Result<Mat> {
            let (rows, cols) = name.shape(&config, classes.unwrap_or(0));
            let full = format!("{prefix}{name}");
            let (shape, data) = f32_tensor(&st, &full)?;
            // Exactly the expected shape: [rows, cols], or [cols] for a vector (the same
            // element count in another arrangement, e.g. a transposed head, is refused).
            ensure!(
                shape == [rows, cols] || (rows == 1 && shape == [cols]),
                "{full} has shape {shape:?}, expected [{rows}, {cols}]"
            );
            Ok(Mat { rows, cols, data })
        };
        let params = GptParams::try_build(config.layers, classes.is_some(), |n| read("", n))?;
        let json = |k: &str| -> Result<Option<serde_json::Value>> {
            meta.get(k)
                .map(|s| serde_json::from_str(s).map_err(|e| anyhow!("{k}: {e}")))
                .transpose()
        };
        let pretrain: Option<PretrainArgs> = json("train_args")?
            .map(|v| serde_json::from_value(v).map_err(|e| anyhow!("train_args: {e}")))
            .transpose()?;
        let finetune: Option<FinetuneArgs> = json("finetune_args")?
            .map(|v| serde_json::from_value(v).map_err(|e| anyhow!("finetune_args: {e}")))
            .transpose()?;
        let class_names: Option<Vec<String>> = json("classes")?
            .map(|v| serde_json::from_value(v).map_err(|e| anyhow!("classes: {e}")))
            .transpose()?;
        if let Some(names) = &class_names {
            ensure!(
                Some(names.len()) == classes,
                "{} class names for a class head of {} classes",
                names.len(),
                classes.unwrap_or(0)
            );
        }
        let state = match meta.get("step") {
            None => None,
            Some(step) => {
                let m = GptParams::try_build(config.layers, classes.is_some(), |n| {
                    read("optim.m.", n)
                })?;
                let v = GptParams::try_build(config.layers, classes.is_some(), |n| {
                    read("optim.v.", n)
                })?;
                let seed = unhex(get("rng_seed")?)?;
                let progress: LoopProgress = match json("loop_state")? {
                    Some(v) => serde_json::from_value(v).map_err(|e| anyhow!("loop_state: {e}"))?,
                    None => LoopProgress::default(),
                };
                Some(TrainState {
                    step: step.parse().map_err(|_| anyhow!("unreadable step"))?,
                    m,
                    v,
                    rng: RngState {
                        seed: seed
                            .try_into()
                            .map_err(|_| anyhow!("rng_seed is not 32 bytes"))?,
                        stream: get("rng_stream")?
                            .parse()
                            .map_err(|_| anyhow!("unreadable rng_stream"))?,
                        word_pos: get("rng_word_pos")?
                            .parse()
                            .map_err(|_| anyhow!("unreadable rng_word_pos"))?,
                    },
                    progress,
                })
            }
        };
        ensure!(
            state.is_none() || pretrain.is_some() || finetune.is_some(),
            "training state without the run's arguments"
        );
        let ck = Checkpoint {
            config,
            palette,
            params,
            pretrain,
            finetune,
            classes: class_names,
            state,
        };
        let mut crc = Crc::default();
        for (_, m) in ck.named() {
            let b: Vec<u8> = m.data.iter().flat_map(|x| x.to_le_bytes()).collect();
            crc.update(&b);
        }
        let rest: serde_json::Map<String, serde_json::Value> = meta
            .iter()
            .filter(|(k, _)| k.as_str() != "crc32")
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        crc.update(serde_json::Value::Object(rest).to_string().as_bytes());
        let stored = get("crc32")?;
        let computed = format!("{:08x}", crc.finish());
        if *stored != computed {
            bail!("checksum mismatch (stored {stored}, computed {computed}): the file is corrupt");
        }
        ck.check_finite()?;
        Ok(ck)
    }
}

/// An `F32` tensor of a safetensors file: its shape and values.
pub fn f32_tensor(st: &SafeTensors, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = st
        .tensor(name)
        .map_err(|_| anyhow!("missing tensor {name}"))?;
    ensure!(
        t.dtype() == StDtype::F32,
        "{name} is {:?}, expected F32",
        t.dtype()
    );
    let data = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((t.shape().to_vec(), data))
}

/// Streaming CRC-32 (the same polynomial as `igpt_core::crc32`).
#[derive(Default)]
struct Crc {
    parts: Vec<u32>,
    lens: Vec<usize>,
}

impl Crc {
    fn update(&mut self, b: &[u8]) {
        self.parts.push(igpt_core::crc32(b));
        self.lens.push(b.len());
    }
    /// CRC of the per-tensor CRCs and lengths: cheap, order-sensitive, and any flipped
    /// byte changes its tensor's CRC.
    fn finish(&self) -> u32 {
        let mut all = Vec::with_capacity(self.parts.len() * 12);
        for (c, l) in self.parts.iter().zip(&self.lens) {
            all.extend_from_slice(&c.to_le_bytes());
            all.extend_from_slice(&(*l as u64).to_le_bytes());
        }
        igpt_core::crc32(&all)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    ensure!(s.is_ascii() && s.len().is_multiple_of(2), "bad hex");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| anyhow!("bad hex")))
        .collect()
}
