//! `igpt export` and the host side of the int8 model: the writer (through igpt-core's own
//! format definitions), the f32 twin of a file (its weights dequantized into a dfdx
//! [`Gpt`]) and the evaluations that compare the two.

use crate::io::checkpoint::{Checkpoint, Mat};
use crate::nn::Gpt;
use anyhow::{bail, ensure, Context, Result};
use igpt_core::format::{self, Header, Layout, PaletteRecord, ProbeRecord, Shape, MAGIC, VERSION};
use igpt_core::quant::{write_f32s, write_qmat};
use igpt_core::{Config, Model};
use std::path::Path;

/// A linear-probe head as `igpt probe` writes it (`probe-head.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeHead {
    /// Feature layer (`0..=L`).
    pub layer: usize,
    /// Class names.
    pub classes: Vec<String>,
    /// Feature means.
    pub mean: Vec<f32>,
    /// Feature standard deviations.
    pub std: Vec<f32>,
    /// `(classes, d)` weights.
    pub weight: Vec<f32>,
    /// Biases.
    pub bias: Vec<f32>,
}

impl ProbeHead {
    /// Reads `probe-head.json`, checking every length against `d`.
    pub fn load(path: &Path, d: usize) -> Result<ProbeHead> {
        let bytes = crate::io::read(path)?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not JSON", path.display()))?;
        let p = path.display();
        let floats = |k: &str| -> Result<Vec<f32>> {
            v.get(k)
                .and_then(|a| a.as_array())
                .with_context(|| format!("{p}: no array `{k}`"))?
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<Vec<f32>>>()
                .with_context(|| format!("{p}: `{k}` holds a non-number"))
        };
        let layer = match v.get("layer") {
            Some(serde_json::Value::String(s)) if s == "raw_pixels" => {
                bail!("{p}: a raw-pixel probe has no model layer to export")
            }
            Some(serde_json::Value::String(s)) => s
                .parse::<usize>()
                .with_context(|| format!("{p}: layer `{s}` is not a number"))?,
            Some(x) => x
                .as_u64()
                .with_context(|| format!("{p}: `layer` is not a number"))?
                as usize,
            None => bail!("{p}: no `layer`"),
        };
        let classes: Vec<String> = v
            .get("classes")
            .and_then(|a| a.as_array())
            .with_context(|| format!("{p}: no array `classes`"))?
            .iter()
            .map(|x| match x {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        let h = ProbeHead {
            layer,
            mean: floats("mean")?,
            std: floats("std")?,
            weight: floats("weight")?,
            bias: floats("bias")?,
            classes,
        };
        let c = h.classes.len();
        ensure!(c > 0, "{p}: no classes");
        ensure!(
            h.mean.len() == d && h.std.len() == d,
            "{p}: standardisation has {} values, the model width is {d}",
            h.mean.len()
        );
        ensure!(
            h.weight.len() == c * d && h.bias.len() == c,
            "{p}: weights are not {c} x {d} with {c} biases"
        );
        ensure!(
            h.std.iter().all(|s| s.is_finite() && *s > 0.0)
                && h.mean
                    .iter()
                    .chain(&h.weight)
                    .chain(&h.bias)
                    .all(|x| x.is_finite()),
            "{p}: non-finite or non-positive standard deviation values"
        );
        ensure!(
            h.classes.iter().all(|s| !s.contains('\n')),
            "{p}: a class name contains a line break"
        );
        Ok(h)
    }

    /// The head stored in a model file (exactly its f32 values).
    pub fn from_model(model: &Model<'_>) -> Option<ProbeHead> {
        let p = model.probe_record()?;
        let f = le_f32s;
        Some(ProbeHead {
            layer: p.layer as usize,
            classes: (0..p.classes as usize)
                .map(|c| model.class_name(c).to_string())
                .collect(),
            mean: f(p.mean),
            std: f(p.std),
            weight: f(p.weight),
            bias: f(p.bias),
        })
    }

    /// Class scores of a feature vector.
    pub fn scores(&self, f: &[f32]) -> Vec<f32> {
        let d = self.mean.len();
        let z: Vec<f32> = f
            .iter()
            .zip(&self.mean)
            .zip(&self.std)
            .map(|((x, m), s)| (x - m) / s)
            .collect();
        self.weight
            .chunks_exact(d)
            .zip(&self.bias)
            .map(|(w, b)| b + w.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>())
            .collect()
    }
}

/// What an export measured.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// Bytes of the file.
    pub bytes: usize,
    /// Bytes of the same model's parameters in f32.
    pub f32_bytes: u64,
    /// Blocks stored.
    pub stored_layers: usize,
    /// Per tensor: name, largest |w − dequant(w)|, that relative to max |w|.
    pub errors: Vec<(String, f32, f32)>,
}

impl ExportReport {
    /// The tensor with the largest relative error.
    pub fn worst(&self) -> Option<&(String, f32, f32)> {
        self.errors.iter().max_by(|a, b| a.2.total_cmp(&b.2))
    }
}

/// True when the checkpoint was pretrained with the BERT objective.
pub fn is_bert(ck: &Checkpoint) -> bool {
    ck.train
        .as_ref()
        .is_some_and(|t| t.args.contains("\"objective\":\"Bert\""))
}

/// Little-endian f32 bytes (the model file's gains and probe arrays) as values.
fn le_f32s(b: &[u8]) -> Vec<f32> {
    (0..b.len() / 4)
        .map(|i| igpt_core::quant::f32_at(b, i))
        .collect()
}

fn transpose(m: &Mat) -> Vec<f32> {
    let mut out = vec![0f32; m.data.len()];
    for r in 0..m.rows {
        for c in 0..m.cols {
            out[c * m.rows + r] = m.data[r * m.cols + c];
        }
    }
    out
}

/// Writes a checkpoint as an int8 model file (bytes), with an optional probe head; `cut`
/// keeps only the blocks the probe needs.
pub fn export(
    ck: &Checkpoint,
    head: Option<&ProbeHead>,
    cut: bool,
) -> Result<(Vec<u8>, ExportReport)> {
    let c = ck.config;
    let palette = ck
        .palette
        .as_ref()
        .context("the checkpoint has no palette (pretrain or import-hf with --palette)")?;
    if let Some(h) = head {
        ensure!(
            h.layer <= c.layers,
            "probe layer {} is beyond the model's {} layers",
            h.layer,
            c.layers
        );
    }
    let stored = match (cut, head) {
        (true, Some(h)) => h.layer,
        (true, None) => bail!("--upto-probe-layer needs --probe"),
        (false, _) => c.layers,
    };
    let full = stored == c.layers;
    let layout = Layout::new(&c, stored, full);
    let mut blob = vec![0u8; layout.total];
    let mut errors = Vec::new();
    let mut at = 0usize;
    let names = Gpt::<f32, dfdx::prelude::Cpu>::param_shapes(&c);
    ensure!(ck.weights.len() == names.len(), "checkpoint tensor count");
    let mut put_mat =
        |name: &str, w: &[f32], rows: usize, cols: usize, at: &mut usize| -> Result<()> {
            let n = format::qmat_bytes(rows, cols);
            let err = write_qmat(w, rows, cols, &mut blob[*at..*at + n])
                .with_context(|| format!("{name}: cannot quantize"))?;
            let amax = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            errors.push((
                name.to_string(),
                err,
                if amax > 0.0 { err / amax } else { 0.0 },
            ));
            *at += n;
            Ok(())
        };
    let w = &ck.weights;
    put_mat(&names[0].0, &w[0].data, w[0].rows, w[0].cols, &mut at)?;
    put_mat(&names[1].0, &w[1].data, w[1].rows, w[1].cols, &mut at)?;
    let mut gains: Vec<(usize, Vec<f32>)> = Vec::new();
    for l in 0..stored {
        let base = 2 + 8 * l;
        for (j, name) in names[base..base + 8].iter().enumerate() {
            let m = &w[base + j];
            if name.0.contains("ln_") {
                gains.push((at, m.data.clone()));
                at += 4 * m.cols;
            } else {
                // Stored [in, out] in the host; the file wants [out][in].
                put_mat(&name.0, &transpose(m), m.cols, m.rows, &mut at)?;
            }
        }
    }
    if full {
        let lnf = &w[2 + 8 * c.layers];
        gains.push((at, lnf.data.clone()));
        at += 4 * c.width;
        let head_m = &w[3 + 8 * c.layers];
        put_mat(
            "lm_head.weight",
            &head_m.data,
            head_m.rows,
            head_m.cols,
            &mut at,
        )?;
    } else {
        gains.push((at, w[2 + 8 * stored].data.clone()));
        at += 4 * c.width;
    }
    ensure!(at == layout.total, "internal: layout size");
    for (off, g) in gains {
        write_f32s(&g, &mut blob[off..off + 4 * g.len()])?;
    }
    let f32s = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let probe_bytes = head.map(|h| {
        (
            f32s(&h.mean),
            f32s(&h.std),
            f32s(&h.weight),
            f32s(&h.bias),
            h.classes.join("\n"),
        )
    });
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        shape: Shape::from_config(&c)?,
        stored_layers: stored as u16,
        causal: !is_bert(ck),
        palette: PaletteRecord {
            channels: palette.channels() as u8,
            centres: palette.centres(),
        },
        probe: match (&probe_bytes, head) {
            (Some((mean, std, weight, bias, labels)), Some(h)) => Some(ProbeRecord {
                layer: h.layer as u16,
                classes: h.classes.len() as u16,
                mean,
                std,
                weight,
                bias,
                labels,
            }),
            _ => None,
        },
        tensors: &blob,
    };
    let mut out = vec![0u8; format::max_len(&header)];
    let n = format::write(&header, &mut out)?;
    out.truncate(n);
    let report = ExportReport {
        bytes: n,
        f32_bytes: c.f32_bytes(),
        stored_layers: stored,
        errors,
    };
    Ok((out, report))
}

/// The f32 twin of a model file: its int8 weights dequantized into a dfdx model of the
/// stored blocks (its config's `layers` is the stored count, possibly 0). For a file cut at the probe layer, `ln_f` is that layer's norm, so the
/// twin's final-norm features are the probe's; its head is zero.
pub fn dequantized(model: &Model<'_>) -> Result<Gpt<f32, dfdx::prelude::Cpu>> {
    let c = *model.config();
    let stored = model.stored_layers();
    let w = model.weights();
    let d = c.width;
    let mat = |m: igpt_core::weights::QMat<'_>, transpose_to_in_out: bool| -> Vec<f32> {
        let mut rows = vec![0f32; m.rows * m.cols];
        for (r, row) in rows.chunks_exact_mut(m.cols).enumerate() {
            m.dequant_row(r, row);
        }
        if transpose_to_in_out {
            transpose(&Mat {
                rows: m.rows,
                cols: m.cols,
                data: rows,
            })
        } else {
            rows
        }
    };
    let gain = le_f32s;
    let mut values = vec![mat(w.wte()?, false), mat(w.wpe()?, false)];
    for l in 0..stored {
        let b = w.block(l)?;
        values.push(gain(b.ln_1));
        for m in [b.q, b.k, b.v, b.c_proj] {
            values.push(mat(m, true));
        }
        values.push(gain(b.ln_2));
        values.push(mat(b.c_fc, true));
        values.push(mat(b.mlp_proj, true));
    }
    values.push(gain(w.feature_norm(stored)?));
    values.push(match w.head() {
        Ok((_, h)) => mat(h, false),
        Err(_) => vec![0f32; c.vocab * d],
    });
    // Zero stored blocks (a file cut at probe layer 0) is a valid twin: embeddings and the
    // feature norm only.
    let cfg = Config {
        layers: stored,
        ..c
    };
    Ok(Gpt::from_values(
        &dfdx::prelude::Cpu::default(),
        cfg,
        values,
    ))
}

/// Reads and parses a model file, naming the file in any error.
pub fn read_model(path: &Path) -> Result<Vec<u8>> {
    let bytes = crate::io::read(path)?;
    Model::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(bytes)
}
