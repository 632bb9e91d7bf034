//! The paper's Figure 3 at small scale: pretrained runs of several shapes, each with its
//! training log (`log.csv`), checkpoint and layer-by-layer probe (`probe/probe.json`),
//! gathered into one table, a plot of best-layer probe accuracy against validation
//! bits/dim, and a plot of probe accuracy by relative depth (layer / L) per run.
//! `bench/scaling.sh` makes the runs; `igpt scaling` reads them.

use crate::io::checkpoint::Checkpoint;
use crate::io::plot::{line_plot_at, Legend, Series, COLORS};
use crate::nn::Objective;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// One pretrained run, as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// AR or BERT.
    pub objective: Objective,
    /// Blocks, width.
    pub layers: usize,
    /// Model width d.
    pub width: usize,
    /// Parameters.
    pub params: u64,
    /// Training tokens: steps x batch x side².
    pub tokens: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Validation bits/dim at the last logged step (on masked pixels for BERT).
    pub val_bpd: f64,
    /// Training loop seconds at the last logged step.
    pub seconds: f64,
    /// Best layer by validation (the probe's choice) and its test accuracy.
    pub best_layer: usize,
    /// Test accuracy of the best layer by validation.
    pub best_test: f64,
    /// Per layer `0..=L`: (layer, test accuracy).
    pub by_layer: Vec<(usize, f64)>,
}

impl Run {
    /// A short label: "AR 6x192".
    pub fn label(&self) -> String {
        let o = match self.objective {
            Objective::Ar => "AR",
            Objective::Bert => "BERT",
        };
        format!("{o} {}x{}", self.layers, self.width)
    }
}

/// The last row of a training log's `val_bpd` and `elapsed_s` columns.
fn last_validation(path: &Path) -> Result<(u64, f64, f64)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| anyhow!("{}: empty training log", path.display()))?
        .split(',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| anyhow!("{}: no column {name:?} in the header", path.display()))
    };
    let (c_step, c_val, c_s) = (col("step")?, col("val_bpd")?, col("elapsed_s")?);
    let mut last = None;
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |c: usize| -> Result<f64> {
            f.get(c)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or_else(|| {
                    anyhow!(
                        "{}: line {}: not a number in column {c}",
                        path.display(),
                        i + 2
                    )
                })
        };
        let v = num(c_val)?;
        if v.is_finite() {
            last = Some((num(c_step)? as u64, v, num(c_s)?));
        }
    }
    last.ok_or_else(|| {
        anyhow!(
            "{}: no validation rows (was --val-images 0?)",
            path.display()
        )
    })
}

fn field<'a>(j: &'a Value, key: &str, path: &Path) -> Result<&'a Value> {
    j.get(key)
        .ok_or_else(|| anyhow!("{}: no field {key:?}", path.display()))
}

fn number(j: &Value, key: &str, path: &Path) -> Result<f64> {
    field(j, key, path)?
        .as_f64()
        .ok_or_else(|| anyhow!("{}: field {key:?} is not a number", path.display()))
}

/// A layer number, which probe.json writes as a string ("4"; "2+3+4" for a concatenation).
fn layer_number(j: &Value, key: &str, path: &Path) -> Result<usize> {
    field(j, key, path)?
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{}: field {key:?} is not a layer number", path.display()))
}

/// Reads one run folder: `checkpoint.safetensors` (shape, arguments), `log.csv`
/// (validation bits/dim) and `probe/probe.json` (single-layer probes of every layer).
pub fn load_run(dir: &Path) -> Result<Run> {
    let ck_path = dir.join("checkpoint.safetensors");
    let ck = Checkpoint::load(&ck_path)?;
    let args = ck.pretrain.as_ref().ok_or_else(|| {
        anyhow!(
            "{}: not a pretraining checkpoint of igpt",
            ck_path.display()
        )
    })?;
    let (step, val_bpd, seconds) = last_validation(&dir.join("log.csv"))?;
    let steps = ck.state.as_ref().map_or(step, |s| s.step.max(step));
    let probe_path = dir.join("probe").join("probe.json");
    let text = std::fs::read_to_string(&probe_path)
        .with_context(|| format!("{}", probe_path.display()))?;
    let j: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not JSON", probe_path.display()))?;
    let mut by_layer = Vec::new();
    for l in field(&j, "layers", &probe_path)?
        .as_array()
        .ok_or_else(|| anyhow!("{}: \"layers\" is not a list", probe_path.display()))?
    {
        by_layer.push((
            layer_number(l, "layer", &probe_path)?,
            number(l, "test_accuracy", &probe_path)?,
        ));
    }
    by_layer.sort_by_key(|r| r.0);
    if by_layer.len() != ck.config.layers + 1 {
        bail!(
            "{}: {} layers probed, the model has {} (probe every layer: --layers all)",
            probe_path.display(),
            by_layer.len(),
            ck.config.layers + 1
        );
    }
    let best_layer = layer_number(&j, "best_layer", &probe_path)?;
    let best_test = number(&j, "best_test_accuracy", &probe_path)?;
    Ok(Run {
        objective: args.objective,
        layers: ck.config.layers,
        width: ck.config.width,
        params: ck.config.param_count(),
        tokens: steps * args.batch as u64 * (ck.config.side * ck.config.side) as u64,
        steps,
        val_bpd,
        seconds,
        best_layer,
        best_test,
        by_layer,
    })
}

/// Markdown table rows (header first), one row per run.
pub fn table(runs: &[Run]) -> Vec<String> {
    let mut rows = vec![
        "| run | parameters | steps | tokens | validation bits/dim | best layer (by validation) | its test accuracy | by layer 0..L (test) | loop time |".to_string(),
        "|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    for r in runs {
        let layers: Vec<String> = r
            .by_layer
            .iter()
            .map(|l| format!("{:.2}", 100.0 * l.1))
            .collect();
        rows.push(format!(
            "| {} | {:.2} M | {} | {:.2} M | {:.4}{} | {} of {} | {:.2}% | {} | {:.0} s |",
            r.label(),
            r.params as f64 / 1e6,
            r.steps,
            r.tokens as f64 / 1e6,
            r.val_bpd,
            if r.objective == Objective::Bert {
                " (masked pixels)"
            } else {
                ""
            },
            r.best_layer,
            r.layers,
            100.0 * r.best_test,
            layers.join(" / "),
            r.seconds
        ));
    }
    rows
}

/// Writes the two plots: best-layer test accuracy against validation bits/dim (one
/// point per run; AR runs joined in order of size), and test accuracy by relative depth.
pub fn plot(runs: &[Run], scatter: &Path, depth: &Path) -> Result<()> {
    let mut ar: Vec<&Run> = runs
        .iter()
        .filter(|r| r.objective == Objective::Ar)
        .collect();
    ar.sort_by_key(|r| r.params);
    let mut series = vec![];
    if ar.len() > 1 {
        series.push(Series {
            label: "AR runs, by size".into(),
            points: ar
                .iter()
                .map(|r| (r.val_bpd, 100.0 * r.best_test))
                .collect(),
            color: [160, 160, 160],
            markers: false,
        });
    }
    for (i, r) in runs.iter().enumerate() {
        series.push(Series {
            label: format!(
                "{} ({:.2} M){}",
                r.label(),
                r.params as f64 / 1e6,
                if r.objective == Objective::Bert {
                    ", masked-pixel bits/dim"
                } else {
                    ""
                }
            ),
            points: vec![(r.val_bpd, 100.0 * r.best_test)],
            color: COLORS[i % COLORS.len()],
            markers: true,
        });
    }
    line_plot_at(
        scatter,
        "Probe accuracy against validation bits/dim (equal training tokens)",
        "validation bits/dim",
        "best-layer probe test accuracy (%)",
        &series,
        Legend::MiddleLeft,
    )?;
    let series: Vec<Series> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| Series {
            label: r.label(),
            points: r
                .by_layer
                .iter()
                .map(|l| (l.0 as f64 / r.layers as f64, 100.0 * l.1))
                .collect(),
            color: COLORS[i % COLORS.len()],
            markers: true,
        })
        .collect();
    line_plot_at(
        depth,
        "Probe accuracy by relative depth (layer / L; L = the final norm)",
        "relative depth",
        "probe test accuracy (%)",
        &series,
        Legend::LowerLeft,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_validation_row_and_names_bad_logs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.csv");
        std::fs::write(
            &p,
            "step,lr,train_bpd,val_bpd,tokens_per_s,elapsed_s\n200,1e-3,2.0,1.5,100,10\n400,1e-3,1.8,1.4,100,20\n",
        )
        .unwrap();
        assert_eq!(last_validation(&p).unwrap(), (400, 1.4, 20.0));
        std::fs::write(&p, "step,lr\n1,2\n").unwrap();
        let e = last_validation(&p).unwrap_err().to_string();
        assert!(e.contains("log.csv") && e.contains("val_bpd"), "{e}");
        std::fs::write(&p, "step,val_bpd,elapsed_s\n1,x,3\n").unwrap();
        let e = last_validation(&p).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
