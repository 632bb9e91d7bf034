//! `igpt bench parity` (the model on a device against the HuggingFace fixtures and the
//! CPU reference) and the FLOP accounting that `igpt bench train` reports.
//!
//! Parity, for every model case of a fixture folder (`*.safetensors` holding
//! `input_ids`, `expected.logits` and `expected.hidden_states.0`, with its `<case>.json`):
//!
//! - the device's forward pass against HF's stored hidden states, probe features and
//!   logits: max abs difference <= [`TOL_HF`] (1e-4, the f32 tolerance of
//!   `tests/tests/hf_crosscheck.rs`);
//! - the device's logits against the CPU reference path (the plain dfdx compositions in
//!   f32 on the CPU): <= [`TOL_HF`];
//! - for causal LMs, the AR loss of the fixture's sequences (position t predicts token
//!   t + 1, the last position unweighted) against the CPU reference: <= [`TOL_LOSS`]
//!   absolute; and every parameter's gradient: max abs difference over the largest
//!   |gradient| of that tensor <= [`TOL_GRAD`].
//!
//! On `--device cpu` the device side is the fused CPU kernels, so the command checks
//! fused against reference and both against HF; on `--device cuda` it is dfdx's CUDA
//! kernels and cuBLAS.

use crate::nn::device::ModelDevice;
use crate::nn::{Capture, Captures, Gpt};
use crate::train::{self, Batch};
use anyhow::{ensure, Context, Result};
use dfdx::prelude::*;
use igpt_core::Config;
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

/// Max abs difference allowed against HF's values and between devices' logits.
pub const TOL_HF: f64 = 1e-4;
/// Max abs difference of the loss (nats) between the device and the CPU reference.
pub const TOL_LOSS: f64 = 2e-5;
/// Max abs gradient difference over the tensor's largest |gradient|.
pub const TOL_GRAD: f64 = 1e-4;

/// One compared quantity.
#[derive(Debug, Clone)]
pub struct Check {
    /// The fixture case (file stem).
    pub case: String,
    /// What was compared.
    pub what: String,
    /// The measured difference.
    pub diff: f64,
    /// Its tolerance.
    pub tol: f64,
}

impl Check {
    /// Within tolerance (NaN never is).
    pub fn ok(&self) -> bool {
        self.diff <= self.tol
    }
}

/// The model cases of a fixture folder, sorted by path.
pub fn fixture_cases(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).with_context(|| format!("{}: cannot read", dir.display()))?;
    for e in rd {
        let p = e
            .with_context(|| format!("{}: cannot read", dir.display()))?
            .path();
        if p.extension().and_then(|x| x.to_str()) != Some("safetensors") {
            continue;
        }
        let bytes = crate::io::read(&p)?;
        // A file that is not safetensors (truncated, corrupt) fails the check: skipping
        // it would report PASS on a fixture that never ran.
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a readable fixture ({e})", p.display()))?;
        let names = st.names();
        if ["input_ids", "expected.logits", "expected.hidden_states.0"]
            .iter()
            .all(|n| names.contains(n))
        {
            out.push(p);
        }
    }
    out.sort();
    ensure!(
        !out.is_empty(),
        "{}: no HF fixture case (a .safetensors with input_ids, expected.logits and expected.hidden_states.0)",
        dir.display()
    );
    Ok(out)
}

fn tensor(st: &SafeTensors, path: &Path, name: &str, dtype: Dtype) -> Result<Vec<u8>> {
    let t = st
        .tensor(name)
        .with_context(|| format!("{}: no tensor {name}", path.display()))?;
    ensure!(
        t.dtype() == dtype,
        "{}: {name} is {:?}, expected {dtype:?}",
        path.display(),
        t.dtype()
    );
    Ok(t.data().to_vec())
}

fn f32s(st: &SafeTensors, path: &Path, name: &str) -> Result<Vec<f32>> {
    Ok(tensor(st, path, name, Dtype::F32)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn max_diff(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::NAN;
    }
    got.iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, |m, d| {
            if d.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(d)
            }
        })
}

/// The class (classifier) or next-token logits of a final hidden state.
fn logits_of<D: ModelDevice>(
    gpt: &Gpt<f32, D>,
    z: Tensor<(usize, usize, usize), f32, D>,
) -> Vec<f32> {
    match &gpt.params.score {
        Some(w) => z
            .mean::<_, Axis<1>>()
            .matmul(w.clone().permute::<_, Axes2<1, 0>>())
            .as_vec(),
        None => gpt.logits(z).as_vec(),
    }
}

/// Loss and every parameter's gradient of the AR batch on a model.
fn loss_and_grads<D: ModelDevice>(gpt: &Gpt<f32, D>, batch: &Batch) -> (f64, Vec<Vec<f32>>) {
    let loss = train::loss::<f32, D, OwnedTape<f32, D>>(gpt, batch);
    let value = train::scalar(loss.retaped::<NoneTape>());
    let grads = loss.backward();
    let g = gpt
        .params
        .iter()
        .map(|(_, p)| grads.get(p).as_vec())
        .collect();
    (value, g)
}

/// Runs every parity check of the fixture folder `dir` with the model on `dev`.
pub fn parity<D: ModelDevice>(dev: &D, dir: &Path) -> Result<Vec<Check>> {
    let cpu = Cpu::seed_from_u64(0);
    let mut checks = Vec::new();
    for path in fixture_cases(dir)? {
        let case = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let json_path = path.with_extension("json");
        let json = std::fs::read_to_string(&json_path)
            .with_context(|| format!("{}: cannot read", json_path.display()))?;
        let config = crate::io::hf::config_from_json(&json)
            .with_context(|| json_path.display().to_string())?;
        let bytes =
            std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let ck =
            crate::io::hf::import(config, &bytes).with_context(|| path.display().to_string())?;
        let st = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{}: not safetensors", path.display()))?;
        let ids: Vec<usize> = tensor(&st, &path, "input_ids", Dtype::I64)?
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as usize)
            .collect();
        let t = ids.len() / st.tensor("input_ids")?.shape()[0].max(1);
        let b = ids.len() / t.max(1);
        ensure!(
            b * t == ids.len() && t <= config.seq_len() && ids.iter().all(|&i| i <= config.vocab),
            "{}: input_ids do not fit the model",
            path.display()
        );
        let mut push = |what: String, diff: f64, tol: f64| {
            checks.push(Check {
                case: case.clone(),
                what,
                diff,
                tol,
            })
        };

        let gpt: Gpt<f32, D> = ck.model(dev)?;
        let mut reference: Gpt<f32, Cpu> = ck.model(&cpu)?;
        reference.fused = false;
        let capture = Capture {
            hidden: true,
            probe: true,
        };
        let mut caps = Captures::default();
        let z = gpt.forward::<NoneTape>(&ids, b, true, None, capture, &mut caps);
        let mut worst = (0.0f64, String::new());
        for (i, h) in caps.hidden.iter().enumerate() {
            let name = format!("expected.hidden_states.{i}");
            let d = max_diff(&h.as_vec(), &f32s(&st, &path, &name)?);
            if d.is_nan() || d > worst.0 {
                worst = (d, name);
            }
        }
        push(
            format!("hidden states vs HF (worst: {})", worst.1),
            worst.0,
            TOL_HF,
        );
        let mut worst = (0.0f64, String::new());
        for l in 0..config.layers {
            let name = format!("expected.probe_features.{l}");
            let d = max_diff(&caps.probe[l].as_vec(), &f32s(&st, &path, &name)?);
            if d.is_nan() || d > worst.0 {
                worst = (d, name);
            }
        }
        push(
            format!("probe features vs HF (worst: {})", worst.1),
            worst.0,
            TOL_HF,
        );
        let logits = logits_of(&gpt, z);
        push(
            "logits vs HF".into(),
            max_diff(&logits, &f32s(&st, &path, "expected.logits")?),
            TOL_HF,
        );
        let zr = reference.forward::<NoneTape>(
            &ids,
            b,
            true,
            None,
            Capture::default(),
            &mut Captures::default(),
        );
        push(
            "logits vs CPU reference".into(),
            max_diff(&logits, &logits_of(&reference, zr)),
            TOL_HF,
        );

        if ck.params.score.is_none() && t >= 2 {
            // AR loss: position p predicts token p + 1; the last position is unweighted.
            let mut target = Vec::with_capacity(b * t);
            let mut weight = Vec::with_capacity(b * t);
            for s in 0..b {
                for p in 0..t {
                    let last = p + 1 == t;
                    target.push(if last { 0 } else { ids[s * t + p + 1] });
                    weight.push(if last {
                        0.0
                    } else {
                        1.0 / (b * (t - 1)) as f32
                    });
                }
            }
            ensure!(
                target.iter().all(|&x| x < config.vocab),
                "{}: a target is SOS",
                path.display()
            );
            let batch = Batch {
                b,
                t,
                input: ids.clone(),
                target,
                keep: None,
                weight,
            };
            let (l_dev, g_dev) = loss_and_grads(&gpt, &batch);
            let (l_ref, g_ref) = loss_and_grads(&reference, &batch);
            push(
                format!("AR loss vs CPU reference ({l_ref:.6} nats)"),
                (l_dev - l_ref).abs(),
                TOL_LOSS,
            );
            let names: Vec<String> = gpt.params.names().iter().map(|n| n.to_string()).collect();
            let mut worst = (0.0f64, String::new());
            for ((gd, gr), name) in g_dev.iter().zip(&g_ref).zip(&names) {
                let scale = gr.iter().fold(0.0f64, |m, x| m.max((*x as f64).abs()));
                let d = max_diff(gd, gr) / scale.max(1e-12);
                if d.is_nan() || d > worst.0 {
                    worst = (d, name.clone());
                }
            }
            push(
                format!("gradients vs CPU reference, relative (worst: {})", worst.1),
                worst.0,
                TOL_GRAD,
            );
        }
    }
    Ok(checks)
}

/// The checks as lines for the terminal, one a check, then `parity=PASS` or
/// `parity=FAIL`; with the error naming the failures when any failed.
pub fn report(checks: &[Check]) -> (Vec<String>, Result<()>) {
    let mut lines: Vec<String> = checks
        .iter()
        .map(|c| {
            format!(
                "{:<12} {:<68} {:>9.2e}  (tol {:.0e}) {}",
                c.case,
                c.what,
                c.diff,
                c.tol,
                if c.ok() { "ok" } else { "FAIL" }
            )
        })
        .collect();
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok())
        .map(|c| format!("{} {} {:.2e}", c.case, c.what, c.diff))
        .collect();
    if bad.is_empty() {
        lines.push("parity=PASS".into());
        (lines, Ok(()))
    } else {
        lines.push("parity=FAIL".into());
        (
            lines,
            Err(anyhow::anyhow!("parity failed: {}", bad.join("; "))),
        )
    }
}

/// Training FLOPs per token of a config: `(6·N, attention)`, N the parameters that
/// multiply (every block projection and the head; not the embeddings, which are looked
/// up); attention `12·L·T·d` (QKᵀ and AV, forward and backward, over the full T x T
/// scores as dfdx computes them, the causal half included). MFU uses their sum.
pub fn train_flops_per_token(c: &Config) -> (f64, f64) {
    let embeddings = (c.embed_rows() + c.seq_len()) * c.width;
    let n = c.param_count() as f64 - embeddings as f64;
    let attn = 12.0 * c.layers as f64 * c.seq_len() as f64 * c.width as f64;
    (6.0 * n, attn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_of_igpt_s() {
        let c = Config::preset(igpt_core::Preset::S);
        let (six_n, attn) = train_flops_per_token(&c);
        // 24 blocks of 12·d² plus the head 512·d, times 6.
        let n = 24.0 * 12.0 * 512.0 * 512.0 + 512.0 * 512.0 + 24.0 * 2.0 * 512.0 + 512.0;
        assert!((six_n - 6.0 * n).abs() < 1.0, "{six_n} vs {}", 6.0 * n);
        assert_eq!(attn, 12.0 * 24.0 * 1024.0 * 512.0);
    }
}
