//! Import of HuggingFace ImageGPT checkpoints (`config.json` + `model.safetensors`).
//!
//! HF's fused `c_attn` `[d, 3d]` is split into the project's separate q, k, v
//! projections (columns `0..d`, `d..2d`, `2d..3d`); every other weight keeps its name and
//! layout. iGPT has no biases: HF stores them as exact zeros, and a non-zero bias is
//! refused rather than silently dropped. `score.weight` (a classifier's head) is kept.

use crate::io::checkpoint::{f32_tensor, Checkpoint};
use crate::nn::{BlockTensor, GptParams, Mat, ParamName};
use anyhow::{anyhow, bail, ensure, Context, Result};
use igpt_core::Config;
use safetensors::SafeTensors;
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

fn expect_shape(name: &str, got: &[usize], want: &[usize]) -> Result<()> {
    ensure!(got == want, "{name} has shape {got:?}, expected {want:?}");
    Ok(())
}

fn check_zero_bias(st: &SafeTensors, name: &str) -> Result<()> {
    if st.names().contains(&name) {
        let (_, b) = f32_tensor(st, name)?;
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
        let (s, _) = f32_tensor(&st, "score.weight")?;
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
                let (s, qkv) = f32_tensor(&st, &qkv_name)?;
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
                let (s, v) = f32_tensor(&st, &n)?;
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
    import(config, &bytes)
        .with_context(|| format!("{}: bad ImageGPT weights", weights_path.display()))
}
