//! Checkpoints: a safetensors file (readable from Python as is) holding the model's
//! weights under HF-style names, optionally a class head and the full training state
//! (AdamW moments, step, RNG state, the pretraining arguments), with the config, the
//! palette and a CRC-32 of every tensor's bytes in its metadata. Layout in `FORMAT.md`.
//!
//! Written atomically; read with every field checked, so a corrupt or truncated file is
//! an error naming the file, never a panic.

use crate::nn::{cst, Float, Gpt};
use anyhow::{anyhow, bail, ensure, Context, Result};
use dfdx::prelude::*;
use igpt_core::{Config, Palette};
use safetensors::{Dtype as StDtype, SafeTensors};
use std::path::Path;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "igpt-checkpoint";
/// The checkpoint version this build writes and reads.
pub const VERSION: u32 = 1;

/// A tensor in a checkpoint: shape `(rows, cols)`, f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct Mat {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `rows * cols` values, row-major.
    pub data: Vec<f32>,
}

/// What training needs to continue exactly where it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    /// AdamW first moments, in parameter order.
    pub m: Vec<Mat>,
    /// AdamW second moments, in parameter order.
    pub v: Vec<Mat>,
    /// The data RNG (ChaCha8): seed, stream and word position.
    pub rng_seed: [u8; 32],
    /// ChaCha stream.
    pub rng_stream: u64,
    /// ChaCha word position.
    pub rng_word_pos: u128,
    /// The pretraining arguments as JSON (checked on `--resume`).
    pub args: String,
}

/// Everything in a checkpoint file.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The model's shape.
    pub config: Config,
    /// The palette the model was trained with, when known.
    pub palette: Option<Palette>,
    /// Weights in [`Gpt::params`] order.
    pub weights: Vec<Mat>,
    /// A class head `(classes, C)` (`score.weight`), when present.
    pub score: Option<Mat>,
    /// Training state, when saved by `pretrain`.
    pub train: Option<TrainState>,
}

fn to_f32<E: Float>(v: Vec<E>) -> Vec<f32> {
    v.into_iter()
        .map(|x| x.to_f32().unwrap_or(f32::NAN))
        .collect()
}

impl Checkpoint {
    /// The weights of a model (no class head, no training state).
    pub fn from_model<E: Float, D: Device<E>>(
        gpt: &Gpt<E, D>,
        palette: Option<Palette>,
    ) -> Checkpoint {
        let weights = gpt
            .params()
            .into_iter()
            .map(|(_, p)| {
                let (rows, cols) = *p.shape();
                Mat {
                    rows,
                    cols,
                    data: to_f32(p.as_vec()),
                }
            })
            .collect();
        Checkpoint {
            config: gpt.config,
            palette,
            weights,
            score: None,
            train: None,
        }
    }

    /// The model these weights make, on `dev` in element type `E`.
    pub fn model<E: Float, D: Device<E>>(&self, dev: &D) -> Gpt<E, D> {
        let values = self
            .weights
            .iter()
            .map(|m| m.data.iter().map(|&x| cst::<E>(x as f64)).collect())
            .collect();
        Gpt::from_values(dev, self.config, values)
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
        let names = Gpt::<f32, Cpu>::param_shapes(&self.config);
        let mut out: Vec<(String, &Mat)> = names
            .iter()
            .map(|(n, _)| n.clone())
            .zip(&self.weights)
            .collect();
        if let Some(s) = &self.score {
            out.push(("score.weight".into(), s));
        }
        if let Some(t) = &self.train {
            for (i, (n, _)) in names.iter().enumerate() {
                out.push((format!("optim.m.{n}"), &t.m[i]));
            }
            for (i, (n, _)) in names.iter().enumerate() {
                out.push((format!("optim.v.{n}"), &t.v[i]));
            }
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
        if let Some(t) = &self.train {
            put("step", t.step.to_string());
            put("rng_seed", hex(&t.rng_seed));
            put("rng_stream", t.rng_stream.to_string());
            put("rng_word_pos", t.rng_word_pos.to_string());
            put("train_args", t.args.clone());
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
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::Value::Object(meta));
        let mut offset = 0usize;
        for ((name, m), b) in named.iter().zip(&bytes) {
            // Norm gains are stored 1-D, as in HF's state dict.
            let shape = if m.rows == 1 && name.contains("ln_") {
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
        let read = |name: &str, rows: usize, cols: usize| -> Result<Mat> {
            let (shape, data) = f32_tensor(&st, name)?;
            let n: usize = shape.iter().product();
            ensure!(
                n == rows * cols && shape.len() <= 2 && (shape.len() == 2 || rows == 1),
                "{name} has shape {shape:?}, expected [{rows}, {cols}]"
            );
            Ok(Mat { rows, cols, data })
        };
        let shapes = Gpt::<f32, Cpu>::param_shapes(&config);
        let weights = shapes
            .iter()
            .map(|(n, (r, c))| read(n, *r, *c))
            .collect::<Result<Vec<_>>>()?;
        let score = match st.tensor("score.weight") {
            Ok(t) => {
                let s = t.shape();
                ensure!(
                    s.len() == 2 && s[1] == config.width,
                    "score.weight has shape {s:?}"
                );
                Some(read("score.weight", s[0], s[1])?)
            }
            Err(_) => None,
        };
        let train = match meta.get("step") {
            None => None,
            Some(step) => {
                let m = shapes
                    .iter()
                    .map(|(n, (r, c))| read(&format!("optim.m.{n}"), *r, *c))
                    .collect::<Result<Vec<_>>>()?;
                let v = shapes
                    .iter()
                    .map(|(n, (r, c))| read(&format!("optim.v.{n}"), *r, *c))
                    .collect::<Result<Vec<_>>>()?;
                let seed = unhex(get("rng_seed")?)?;
                Some(TrainState {
                    step: step.parse().map_err(|_| anyhow!("unreadable step"))?,
                    m,
                    v,
                    rng_seed: seed
                        .try_into()
                        .map_err(|_| anyhow!("rng_seed is not 32 bytes"))?,
                    rng_stream: get("rng_stream")?
                        .parse()
                        .map_err(|_| anyhow!("unreadable rng_stream"))?,
                    rng_word_pos: get("rng_word_pos")?
                        .parse()
                        .map_err(|_| anyhow!("unreadable rng_word_pos"))?,
                    args: get("train_args")?.clone(),
                })
            }
        };
        let ck = Checkpoint {
            config,
            palette,
            weights,
            score,
            train,
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
