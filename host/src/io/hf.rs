//! Import of HuggingFace ImageGPT checkpoints (`config.json` + `model.safetensors`, and
//! the colour clusters of `preprocessor_config.json`); the way back is [`super::hf_export`].
//!
//! HF's fused `c_attn` `[d, 3d]` is split into the project's separate q, k, v
//! projections (columns `0..d`, `d..2d`, `2d..3d`); every other weight keeps its name and
//! layout. Weights may be F32, F16 or BF16 (widened to f32 exactly). iGPT has no biases:
//! HF stores them as exact zeros, and a non-zero bias is refused rather than silently
//! dropped. `score.weight` (a classifier's head) is kept.
//!
//! Not read: `pytorch_model.bin` (a pickle); `docs/huggingface.md` shows the one-line
//! conversion to safetensors.

use crate::io::checkpoint::Checkpoint;
use crate::nn::{BlockTensor, GptParams, Mat, ParamName};
use anyhow::{anyhow, bail, ensure, Context, Result};
use igpt_core::{Config, Palette};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// The model shape of an HF ImageGPT `config.json` (the dict itself or a fixture's JSON
/// with the dict under `config`). Options that change the math are refused.
pub fn config_from_json(text: &str) -> Result<Config> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| anyhow!("not JSON ({e})"))?;
    let c = v.get("config").unwrap_or(&v);
    let num = |k: &str| -> Result<usize> {
        c.get(k)
            .and_then(|x| x.as_u64())
            .map(|x| x as usize)
            .ok_or_else(|| anyhow!("config has no integer '{k}'"))
    };
    let (d, heads, layers, positions, vocab) = (
        num("n_embd")?,
        num("n_head")?,
        num("n_layer")?,
        num("n_positions")?,
        num("vocab_size")?,
    );
    if let Some(inner) = c.get("n_inner").and_then(|x| x.as_u64()) {
        ensure!(
            inner as usize == 4 * d,
            "n_inner {inner} is not 4 * n_embd (iGPT's MLP is 4d)"
        );
    }
    if let Some(eps) = c.get("layer_norm_epsilon").and_then(|x| x.as_f64()) {
        ensure!(
            (eps - 1e-5).abs() < 1e-12,
            "layer_norm_epsilon {eps} (iGPT uses 1e-5)"
        );
    }
    if let Some(act) = c.get("activation_function").and_then(|x| x.as_str()) {
        ensure!(
            act == "quick_gelu",
            "activation_function '{act}' (iGPT uses quick_gelu)"
        );
    }
    for (key, want) in [
        ("scale_attn_weights", true),
        ("scale_attn_by_inverse_layer_idx", false),
        ("reorder_and_upcast_attn", false),
    ] {
        if let Some(b) = c.get(key).and_then(|x| x.as_bool()) {
            ensure!(b == want, "{key} = {b} is not supported");
        }
    }
    let side = (positions as f64).sqrt().round() as usize;
    ensure!(
        side * side == positions,
        "n_positions {positions} is not a square image"
    );
    ensure!(
        vocab >= 2,
        "vocab_size {vocab} leaves no colour besides SOS"
    );
    Config::new(vocab - 1, side, d, heads, layers).map_err(|e| anyhow!("{e}"))
}

/// A weight of an HF safetensors file as f32: its shape and values. F32 is read as is;
/// F16 and BF16 (what `torch_dtype=float16` / `bfloat16` checkpoints hold) are widened,
/// which is exact.
pub fn weight_tensor(st: &SafeTensors, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = st
        .tensor(name)
        .map_err(|_| anyhow!("missing tensor {name}"))?;
    let b = t.data();
    let data: Vec<f32> = match t.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        other => bail!("{name} is {other:?}, expected F32, F16 or BF16"),
    };
    Ok((t.shape().to_vec(), data))
}

/// IEEE half precision to f32 (exact: every f16 is an f32).
pub fn f16_to_f32(h: u16) -> f32 {
    let negative = h & 0x8000 != 0;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let magnitude = match exp {
        // Zero and subnormals: man * 2^-24.
        0 => man as f32 * f32::from_bits(0x3380_0000),
        // Infinity and NaN keep their payload.
        0x1f => f32::from_bits(0x7f80_0000 | (man << 13)),
        // Normal: rebias the exponent (15 to 127).
        e => f32::from_bits(((e + 112) << 23) | (man << 13)),
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// bfloat16 to f32: the upper half of an f32's bits.
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

fn expect_shape(name: &str, got: &[usize], want: &[usize]) -> Result<()> {
    ensure!(got == want, "{name} has shape {got:?}, expected {want:?}");
    Ok(())
}

fn check_zero_bias(st: &SafeTensors, name: &str) -> Result<()> {
    if st.names().contains(&name) {
        let (_, b) = weight_tensor(st, name)?;
        if let Some(x) = b.iter().find(|x| !x.is_finite()) {
            bail!("{name} holds {x}; iGPT has no biases (they must be zero)");
        }
        let max = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        if max != 0.0 {
            bail!("{name} is non-zero (max |b| = {max:e}); iGPT has no biases and this model would not be reproduced");
        }
    }
    Ok(())
}

/// Builds a checkpoint from HF ImageGPT safetensors bytes and its config.
pub fn import(config: Config, weights: &[u8]) -> Result<Checkpoint> {
    let st =
        SafeTensors::deserialize(weights).map_err(|e| anyhow!("not a safetensors file ({e})"))?;
    let d = config.width;
    let names = st.names();
    let has = |n: &str| names.contains(&n);
    let classes = if has("score.weight") {
        let (s, _) = weight_tensor(&st, "score.weight")?;
        ensure!(
            s.len() == 2 && s[1] == d && s[0] > 0,
            "score.weight has shape {s:?}, expected [labels, {d}]"
        );
        check_zero_bias(&st, "score.bias")?;
        Some(s[0])
    } else {
        None
    };
    let params = GptParams::try_build(config.layers, classes.is_some(), |name| -> Result<Mat> {
        let (rows, cols) = name.shape(&config, classes.unwrap_or(0));
        let data = match name {
            ParamName::Block(l, t @ (BlockTensor::Q | BlockTensor::K | BlockTensor::V)) => {
                // HF's fused c_attn [d, 3d]: q, k, v are its column blocks.
                let qkv_name = format!("transformer.h.{l}.attn.c_attn.weight");
                let (s, qkv) = weight_tensor(&st, &qkv_name)?;
                expect_shape(&qkv_name, &s, &[d, 3 * d])?;
                let part = match t {
                    BlockTensor::Q => 0,
                    BlockTensor::K => 1,
                    _ => 2,
                };
                (0..d)
                    .flat_map(|r| {
                        qkv[r * 3 * d + part * d..r * 3 * d + (part + 1) * d]
                            .iter()
                            .copied()
                    })
                    .collect()
            }
            ParamName::LmHead if !has("lm_head.weight") => {
                // A classifier checkpoint has no next-token head: start it at zero (the
                // paper's initialisation of the head).
                vec![0.0; rows * cols]
            }
            _ => {
                if let ParamName::Block(l, BlockTensor::Ln1) = name {
                    for bias in [
                        "attn.c_attn.bias",
                        "attn.c_proj.bias",
                        "mlp.c_fc.bias",
                        "mlp.c_proj.bias",
                    ] {
                        check_zero_bias(&st, &format!("transformer.h.{l}.{bias}"))?;
                    }
                }
                // Every other tensor has our name; gains are 1-D in HF's state dict.
                let n = name.to_string();
                let (s, v) = weight_tensor(&st, &n)?;
                if name.is_gain() {
                    expect_shape(&n, &s, &[cols])?;
                } else {
                    expect_shape(&n, &s, &[rows, cols])?;
                }
                v
            }
        };
        Ok(Mat { rows, cols, data })
    })?;
    let ck = Checkpoint {
        config,
        palette: None,
        params,
        pretrain: None,
        finetune: None,
        classes: None,
        state: None,
    };
    // What every later command would refuse is refused here, before anything is written.
    ck.check_finite()?;
    Ok(ck)
}

/// Reads `config.json` and `model.safetensors` from disk.
pub fn import_files(config_path: &Path, weights_path: &Path) -> Result<Checkpoint> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("{}: cannot read", config_path.display()))?;
    let config = config_from_json(&text)
        .with_context(|| format!("{}: bad ImageGPT config", config_path.display()))?;
    let bytes = crate::io::read(weights_path)?;
    let mut ck = import(config, &bytes)
        .with_context(|| format!("{}: bad ImageGPT weights", weights_path.display()))?;
    if let Some(score) = &ck.params.score {
        ck.classes = class_names(&text, score.rows);
    }
    Ok(ck)
}

/// A classifier's class names from `config.json`'s `id2label` (ids `0..classes`), unless
/// they are HF's placeholders `LABEL_0` .. (then `None`, as for a model without names).
pub fn class_names(config_text: &str, classes: usize) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(config_text).ok()?;
    let c = v.get("config").unwrap_or(&v);
    let id2label = c.get("id2label")?;
    let names: Vec<String> = (0..classes)
        .map(|i| id2label.get(i.to_string())?.as_str().map(String::from))
        .collect::<Option<_>>()?;
    let placeholders = names
        .iter()
        .enumerate()
        .all(|(i, n)| *n == format!("LABEL_{i}"));
    (!placeholders).then_some(names)
}

/// The palette of an HF `preprocessor_config.json`: its `clusters`, k rows of RGB values
/// in [-1, 1], each channel `round(127.5 * (c + 1))` clamped to 0..=255 (as OpenAI's
/// `.npy`). Clusters that are all grey (r = g = b) give a one-channel palette, which is
/// what [`super::hf_export`] writes for one; their order is the token order.
pub fn palette_from_preprocessor(text: &str) -> Result<Palette> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| anyhow!("not JSON ({e})"))?;
    let rows = v
        .get("clusters")
        .and_then(|c| c.as_array())
        .ok_or_else(|| anyhow!("no 'clusters' array (not an ImageGPT image processor config)"))?;
    ensure!(
        (1..=512).contains(&rows.len()),
        "{} clusters (need 1..=512)",
        rows.len()
    );
    let mut rgb = Vec::with_capacity(rows.len() * 3);
    for (i, row) in rows.iter().enumerate() {
        let vals = row
            .as_array()
            .filter(|r| r.len() == 3)
            .ok_or_else(|| anyhow!("cluster {i} is not three numbers"))?;
        for x in vals {
            let x = x
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| anyhow!("cluster {i} holds a value that is not a finite number"))?;
            rgb.push((127.5 * (x + 1.0)).round().clamp(0.0, 255.0) as u8);
        }
    }
    let grey = rgb.chunks_exact(3).all(|c| c[0] == c[1] && c[1] == c[2]);
    let palette = if grey {
        let g: Vec<u8> = rgb.chunks_exact(3).map(|c| c[0]).collect();
        Palette::new(1, &g)
    } else {
        Palette::new(3, &rgb)
    };
    palette.map_err(|e| anyhow!("clusters: {e}"))
}

/// Reads the palette of a `preprocessor_config.json` file.
pub fn palette_file(path: &Path) -> Result<Palette> {
    // 512 clusters of three numbers: well under a megabyte.
    let bytes = crate::io::read_limited(path, 1 << 20)?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("{}: not text", path.display()))?;
    palette_from_preprocessor(&text)
        .with_context(|| format!("{}: bad ImageGPT preprocessor config", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats_widen_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc0a0), -5.0);
        assert_eq!(bf16_to_f32(0x3eaa), 0.332_031_25);
    }

    #[test]
    fn class_names_come_from_id2label_unless_placeholders() {
        let named = r#"{"id2label": {"0": "coat", "1": "bag"}}"#;
        assert_eq!(
            class_names(named, 2),
            Some(vec!["coat".into(), "bag".into()])
        );
        assert_eq!(class_names(named, 3), None, "a missing id");
        let hf = r#"{"config": {"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}}"#;
        assert_eq!(class_names(hf, 2), None);
        assert_eq!(class_names("{}", 2), None);
    }

    #[test]
    fn clusters_become_a_palette() {
        let rgb = r#"{"clusters": [[-1.0, 0.0, 1.0], [0.5, 0.5, 0.5]]}"#;
        let p = palette_from_preprocessor(rgb).unwrap();
        assert_eq!(
            (p.channels(), p.centres()),
            (3, &[0u8, 128, 255, 191, 191, 191][..])
        );
        let grey = r#"{"clusters": [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]}"#;
        let p = palette_from_preprocessor(grey).unwrap();
        assert_eq!((p.channels(), p.centres()), (1, &[0u8, 255][..]));
        for bad in [
            "{}",
            r#"{"clusters": []}"#,
            r#"{"clusters": [[0.0, 0.0]]}"#,
            r#"{"clusters": [[0.0, "x", 0.0]]}"#,
            "not json",
        ] {
            assert!(palette_from_preprocessor(bad).is_err(), "{bad}");
        }
    }
}
