//! `igpt export` and the host side of the int8 model: the writer (through igpt-core's own
//! format definitions), the f32 twin of a file (its weights dequantized into a dfdx
//! [`Gpt`]) and the evaluations that compare the two.

use crate::io::checkpoint::Checkpoint;
pub use crate::io::probe_head::ProbeHead;
use crate::nn::{BlockTensor, Gpt, GptParams, Mat, Objective, ParamName};
use anyhow::{bail, ensure, Context, Result};
use igpt_core::format::{self, Header, Layout, PaletteRecord, ProbeRecord, Shape, MAGIC, VERSION};
use igpt_core::quant::{write_f32s, write_qmat};
use igpt_core::{Config, Model};
use std::path::Path;

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

/// The probe head stored in a model file (exactly its f32 values).
pub fn probe_head(model: &Model<'_>) -> Option<ProbeHead> {
    let p = model.probe_record()?;
    Some(ProbeHead {
        layer: crate::io::probe_head::ProbeLayer::Layer(p.layer as usize),
        classes: (0..p.classes as usize)
            .map(|c| model.class_name(c).to_string())
            .collect(),
        mean: le_f32s(p.mean),
        std: le_f32s(p.std),
        weight: le_f32s(p.weight),
        bias: le_f32s(p.bias),
        seeded: false,
    })
}

/// The class head of a fine-tuned checkpoint as a probe head: fine-tuning classifies the
/// mean over positions of the final norm output (probe layer L) with `score.weight` and
/// no bias, which is a probe head with identity standardisation and zero biases. Class
/// names come from the checkpoint (numbers for files written before they were kept).
pub fn class_head(ck: &Checkpoint) -> Option<ProbeHead> {
    let score = ck.params.score.as_ref()?;
    let (c, d) = (score.rows, score.cols);
    let classes = match &ck.classes {
        Some(names) => names.clone(),
        None => (0..c).map(|i| i.to_string()).collect(),
    };
    Some(ProbeHead {
        layer: crate::io::probe_head::ProbeLayer::Layer(ck.config.layers),
        classes,
        mean: vec![0.0; d],
        std: vec![1.0; d],
        weight: score.data.clone(),
        bias: vec![0.0; c],
        seeded: false,
    })
}

/// Little-endian f32 bytes (the model file's gains and probe arrays) as values.
fn le_f32s(b: &[u8]) -> Vec<f32> {
    (0..b.len() / 4)
        .map(|i| igpt_core::quant::f32_at(b, i))
        .collect()
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
        let layer = h.model_layer()?;
        ensure!(
            layer <= c.layers,
            "probe layer {layer} is beyond the model's {} layers",
            c.layers
        );
        h.validate(c.width)?;
    }
    let stored = match (cut, head) {
        (true, Some(h)) => h.model_layer()?,
        (true, None) => bail!("--upto-probe-layer needs --probe"),
        (false, _) => c.layers,
    };
    let full = stored == c.layers;
    let layout = Layout::new(&c, stored, full);
    let mut blob = vec![0u8; layout.total];
    let mut errors = Vec::new();
    let mut at = 0usize;
    let p = &ck.params;
    ensure!(p.blocks.len() == c.layers, "checkpoint block count");
    let mut put_mat = |name: ParamName, m: &Mat, at: &mut usize| -> Result<()> {
        // Projections are stored [in, out] in the host; the file wants [out][in].
        let m = if name.is_projection() {
            m.transposed()
        } else {
            m.clone()
        };
        let n = format::qmat_bytes(m.rows, m.cols);
        let err = write_qmat(&m.data, m.rows, m.cols, &mut blob[*at..*at + n])
            .with_context(|| format!("{name}: cannot quantize"))?;
        let amax = m.data.iter().fold(0f32, |a, v| a.max(v.abs()));
        errors.push((
            name.to_string(),
            err,
            if amax > 0.0 { err / amax } else { 0.0 },
        ));
        *at += n;
        Ok(())
    };
    let mut gains: Vec<(usize, Vec<f32>)> = Vec::new();
    let mut put_gain = |g: &Mat, at: &mut usize| {
        gains.push((*at, g.data.clone()));
        *at += 4 * g.cols;
    };
    // The file's order (igpt_core::format::Layout): embeddings, then per block its gains
    // and matrices in parameter order, then the feature norm (and the head).
    put_mat(ParamName::Wte, &p.wte, &mut at)?;
    put_mat(ParamName::Wpe, &p.wpe, &mut at)?;
    for (l, b) in p.blocks[..stored].iter().enumerate() {
        for t in BlockTensor::ALL {
            let name = ParamName::Block(l, t);
            if name.is_gain() {
                put_gain(b.get(t), &mut at);
            } else {
                put_mat(name, b.get(t), &mut at)?;
            }
        }
    }
    if full {
        put_gain(&p.ln_f, &mut at);
        put_mat(ParamName::LmHead, &p.lm_head, &mut at)?;
    } else {
        // A file cut at the probe layer keeps that block's first norm as its feature norm.
        put_gain(&p.blocks[stored].ln_1, &mut at);
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
        causal: ck.objective() == Objective::Ar,
        palette: PaletteRecord {
            channels: palette.channels() as u8,
            centres: palette.centres(),
        },
        probe: match (&probe_bytes, head) {
            (Some((mean, std, weight, bias, labels)), Some(h)) => Some(ProbeRecord {
                layer: h.model_layer()? as u16,
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
            Mat {
                rows: m.rows,
                cols: m.cols,
                data: rows,
            }
            .transposed()
            .data
        } else {
            rows
        }
    };
    // Zero stored blocks (a file cut at probe layer 0) is a valid twin: embeddings and the
    // feature norm only.
    let cfg = Config {
        layers: stored,
        ..c
    };
    let values = GptParams::try_build(stored, false, |name| -> Result<Vec<f32>> {
        Ok(match name {
            ParamName::Wte => mat(w.wte()?, false),
            ParamName::Wpe => mat(w.wpe()?, false),
            ParamName::Block(l, t) => {
                let b = w.block(l)?;
                match t {
                    BlockTensor::Ln1 => le_f32s(b.ln_1),
                    BlockTensor::Q => mat(b.q, true),
                    BlockTensor::K => mat(b.k, true),
                    BlockTensor::V => mat(b.v, true),
                    BlockTensor::CProj => mat(b.c_proj, true),
                    BlockTensor::Ln2 => le_f32s(b.ln_2),
                    BlockTensor::CFc => mat(b.c_fc, true),
                    BlockTensor::MlpProj => mat(b.mlp_proj, true),
                }
            }
            ParamName::LnF => le_f32s(w.feature_norm(stored)?),
            ParamName::LmHead => match w.head() {
                Ok((_, h)) => mat(h, false),
                Err(_) => vec![0f32; c.vocab * d],
            },
            ParamName::Score => unreachable!("built without a class head"),
        })
    })?;
    Gpt::from_values(&dfdx::prelude::Cpu::default(), cfg, &values)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Reads and parses a model file, naming the file in any error.
pub fn read_model(path: &Path) -> Result<Vec<u8>> {
    let bytes = crate::io::read(path)?;
    Model::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(bytes)
}
