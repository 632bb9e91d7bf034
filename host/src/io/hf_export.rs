//! Export to HuggingFace ImageGPT (`igpt export-hf`): the three files `transformers`
//! loads with `from_pretrained(folder)`, the inverse of [`super::hf`].
//!
//! - `config.json`: the model's shape in HF's keys, with everything that changes the
//!   math pinned to iGPT's (quick_gelu, ε = 1e-5, attention scaled by the head width);
//!   a classifier's class names as `id2label` (HF's `LABEL_i` when it has none).
//! - `model.safetensors`: every tensor under its HF state-dict name and layout. The q,
//!   k, v projections become HF's fused `c_attn` `[d, 3d]` (their column blocks); block
//!   projections stay `[in, out]` (HF's `Conv1D`), the heads `[out, in]`; norm gains are
//!   1-D. HF's modules have biases that iGPT lacks: they are written as zeros, so a
//!   loaded model computes exactly this one. A classifier's head `score.weight` is
//!   written; its `lm_head.weight` too unless it is all zeros (an imported HF classifier
//!   has none, and [`super::hf::import`] fills it with zeros).
//! - `preprocessor_config.json` (with a palette): HF's image processor settings, the
//!   palette as `clusters` in [-1, 1] (`c / 127.5 - 1`, so `round(127.5 (x + 1))` gives the
//!   colour back); a grey palette as r = g = b.
//!
//! Refused: a BERT (masked-pixel) model, which HF's ImageGPT (causal only) would run
//! with the wrong mask.

use crate::io::checkpoint::Checkpoint;
use crate::nn::{BlockTensor, Mat, Objective, ParamName};
use anyhow::{anyhow, bail, Result};
use igpt_core::Palette;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The files of an exported model, as bytes, before anything is written.
#[derive(Debug, Clone)]
pub struct HfFiles {
    /// `config.json`.
    pub config: String,
    /// `model.safetensors`.
    pub weights: Vec<u8>,
    /// `preprocessor_config.json`, when the checkpoint has a palette.
    pub preprocessor: Option<String>,
}

impl HfFiles {
    /// The paths the files get in `dir`, in the order config, weights, preprocessor.
    pub fn paths(&self, dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![dir.join("config.json"), dir.join("model.safetensors")];
        if self.preprocessor.is_some() {
            out.push(dir.join("preprocessor_config.json"));
        }
        out
    }

    /// Creates `dir` if needed and writes the files into it, each atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow!("{}: cannot create the folder ({e})", dir.display()))?;
        let paths = self.paths(dir);
        crate::io::write_atomic(&paths[0], self.config.as_bytes())?;
        crate::io::write_atomic(&paths[1], &self.weights)?;
        if let Some(p) = &self.preprocessor {
            crate::io::write_atomic(&paths[2], p.as_bytes())?;
        }
        Ok(())
    }
}

/// Builds the HF files of a checkpoint.
pub fn export(ck: &Checkpoint) -> Result<HfFiles> {
    if ck.objective() == Objective::Bert {
        bail!("a BERT (masked-pixel) model: HF's ImageGPT is causal only and would run it with the wrong mask");
    }
    ck.check_finite()?;
    Ok(HfFiles {
        config: config_json(ck),
        weights: weights(ck)?,
        preprocessor: ck
            .palette
            .as_ref()
            .map(|p| preprocessor_json(p, ck.config.side)),
    })
}

/// `config.json`: HF's `ImageGPTConfig` keys for this shape.
pub fn config_json(ck: &Checkpoint) -> String {
    let c = ck.config;
    let mut v = serde_json::json!({
        "model_type": "imagegpt",
        "architectures": ["ImageGPTForCausalImageModeling"],
        "vocab_size": c.vocab + 1,
        "n_positions": c.seq_len(),
        "n_embd": c.width,
        "n_layer": c.layers,
        "n_head": c.heads,
        "n_inner": null,
        "activation_function": "quick_gelu",
        "layer_norm_epsilon": 1e-5,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "tie_word_embeddings": false,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "use_cache": true,
        "torch_dtype": "float32",
    });
    if let Some(score) = &ck.params.score {
        v["architectures"] = serde_json::json!(["ImageGPTForImageClassification"]);
        // The checkpoint's class names, else HF's placeholders.
        let names: Vec<String> = match &ck.classes {
            Some(n) if n.len() == score.rows => n.clone(),
            _ => (0..score.rows).map(|i| format!("LABEL_{i}")).collect(),
        };
        let id2label: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (i.to_string(), n.clone().into()))
            .collect();
        let label2id: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i.into()))
            .collect();
        v["id2label"] = id2label.into();
        v["label2id"] = label2id.into();
    }
    pretty(&v)
}

/// `preprocessor_config.json`: HF's `ImageGPTImageProcessor` at the model's `side`, with
/// the palette's clusters (computed in f32, as HF's processor normalises pixels). HF
/// resizes bilinearly to `side` x `side` without a crop; igpt crops to a square and
/// area-filters, so the two tokenize alike for square images.
pub fn preprocessor_json(palette: &Palette, side: usize) -> String {
    let ch = palette.channels();
    let clusters: Vec<[f32; 3]> = palette
        .centres()
        .chunks_exact(ch)
        .map(|c| {
            let x = |v: u8| v as f32 / 127.5 - 1.0;
            match c {
                [g] => [x(*g); 3],
                _ => [x(c[0]), x(c[1]), x(c[2])],
            }
        })
        .collect();
    pretty(&serde_json::json!({
        "image_processor_type": "ImageGPTImageProcessor",
        "clusters": clusters,
        "do_color_quantize": true,
        "do_normalize": true,
        "do_resize": true,
        "resample": 2,
        "size": {"height": side, "width": side},
    }))
}

fn pretty(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// One tensor of the file: name, shape, little-endian f32 bytes.
type Named = (String, Vec<usize>, Vec<u8>);

fn le(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// HF's fused `c_attn` `[d, 3d]` of one block: row r is q's row r, k's, v's.
fn fused_qkv(q: &Mat, k: &Mat, v: &Mat) -> Vec<f32> {
    (0..q.rows)
        .flat_map(|r| {
            [q, k, v]
                .into_iter()
                .flat_map(move |m| m.data[r * m.cols..(r + 1) * m.cols].iter().copied())
        })
        .collect()
}

/// Every tensor under its HF name, with the zero biases HF's modules expect.
fn hf_tensors(ck: &Checkpoint) -> Vec<Named> {
    let c = ck.config;
    let d = c.width;
    let zeros = |n: usize| le(&vec![0.0; n]);
    let mut out: Vec<Named> = Vec::new();
    let skip_lm_head =
        ck.params.score.is_some() && ck.params.lm_head.data.iter().all(|&x| x == 0.0);
    for (name, m) in ck.params.iter() {
        let n = name.to_string();
        match name {
            ParamName::Block(l, BlockTensor::Q) => {
                let b = &ck.params.blocks[l];
                let p = format!("transformer.h.{l}.attn.c_attn");
                out.push((
                    format!("{p}.weight"),
                    vec![d, 3 * d],
                    le(&fused_qkv(&b.q, &b.k, &b.v)),
                ));
                out.push((format!("{p}.bias"), vec![3 * d], zeros(3 * d)));
            }
            ParamName::Block(_, BlockTensor::K | BlockTensor::V) => {}
            ParamName::LmHead if skip_lm_head => {}
            _ if name.is_gain() => out.push((n, vec![m.cols], le(&m.data))),
            ParamName::Block(
                l,
                t @ (BlockTensor::CProj | BlockTensor::CFc | BlockTensor::MlpProj),
            ) => {
                out.push((n, vec![m.rows, m.cols], le(&m.data)));
                let bias = match t {
                    BlockTensor::CProj => "attn.c_proj.bias",
                    BlockTensor::CFc => "mlp.c_fc.bias",
                    _ => "mlp.c_proj.bias",
                };
                out.push((
                    format!("transformer.h.{l}.{bias}"),
                    vec![m.cols],
                    zeros(m.cols),
                ));
            }
            _ => out.push((n, vec![m.rows, m.cols], le(&m.data))),
        }
    }
    out
}

/// `model.safetensors`: the tensors, with `format: pt` metadata (what `transformers`
/// expects of a PyTorch safetensors file).
pub fn weights(ck: &Checkpoint) -> Result<Vec<u8>> {
    let tensors = hf_tensors(ck);
    let views = tensors
        .iter()
        .map(|(n, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| anyhow!("{n}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(meta)).map_err(|e| anyhow!("safetensors: {e}"))
}
