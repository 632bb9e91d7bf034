//! Linear probes (the paper's evaluation of a representation): features of every layer
//! from one forward pass per image, standardised, then multinomial logistic regression
//! with an L2 penalty solved to convergence by L-BFGS, the penalty chosen on a held-out
//! 10% of the training set.
//!
//! Feature of layer l (l < L): the mean over positions of block l's first norm output
//! (`expected.probe_features.<l>` in the HF fixtures); layer L: the mean of the final
//! norm output.

use crate::nn::{Capture, Captures, Gpt, Kernels};
use dfdx::prelude::*;
use rayon::prelude::*;

/// Features `[layer][image]` (each `d` long) of `images` (token sequences), computed in
/// batches with one forward pass per batch. AR models read `[SOS, x0 .. x(n-2)]` with the
/// causal mask; BERT models read the whole image unmasked without it.
pub fn features<D: Kernels<f32>>(
    gpt: &Gpt<f32, D>,
    images: &[Vec<u16>],
    batch: usize,
    causal: bool,
    show_progress: bool,
) -> Vec<Vec<Vec<f32>>> {
    let bar = crate::progress::bar(images.len() as u64, "features", show_progress);
    let layers = gpt.config.layers + 1;
    let mut out: Vec<Vec<Vec<f32>>> = vec![Vec::with_capacity(images.len()); layers];
    let sos = gpt.config.sos();
    for chunk in images.chunks(batch.max(1)) {
        let ids = crate::data::tokenize::model_ids(chunk, sos, causal);
        let mut caps = Captures::default();
        let cap = Capture {
            hidden: false,
            probe: true,
        };
        let _ = gpt.forward::<NoneTape>(&ids, chunk.len(), causal, None, cap, &mut caps);
        for (l, f) in caps.probe.iter().enumerate() {
            let v = f.as_vec();
            let d = v.len() / chunk.len();
            out[l].extend(v.chunks_exact(d).map(|r| r.to_vec()));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    out
}

/// Per-feature mean and standard deviation (1 where a feature is constant).
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// Means.
    pub mean: Vec<f32>,
    /// Standard deviations.
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Fits on rows of equal width.
    pub fn fit(x: &[Vec<f32>]) -> Standardizer {
        let d = x.first().map_or(0, |r| r.len());
        let n = x.len().max(1) as f64;
        let mut mean = vec![0f64; d];
        for r in x {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += *v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0f64; d];
        for r in x {
            for ((s, v), m) in var.iter_mut().zip(r).zip(&mean) {
                *s += (*v as f64 - m).powi(2);
            }
        }
        Standardizer {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std: var
                .iter()
                .map(|&s| {
                    let sd = (s / n).sqrt();
                    if sd > 1e-12 {
                        sd as f32
                    } else {
                        1.0
                    }
                })
                .collect(),
        }
    }

    /// `(x - mean) / std`.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        x.iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(v, (m, s))| (v - m) / s)
            .collect()
    }
}

/// A multinomial logistic regression head: `logits = W x + b`, `W` row-major
/// `(classes, d)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logistic {
    /// Classes.
    pub classes: usize,
    /// Input width.
    pub d: usize,
    /// `(classes, d)` weights.
    pub w: Vec<f32>,
    /// `classes` biases.
    pub b: Vec<f32>,
}

impl Logistic {
    /// Class scores of one input.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        (0..self.classes)
            .map(|c| {
                self.b[c]
                    + self.w[c * self.d..(c + 1) * self.d]
                        .iter()
                        .zip(x)
                        .map(|(w, v)| w * v)
                        .sum::<f32>()
            })
            .collect()
    }

    /// The highest-scoring class.
    pub fn predict(&self, x: &[f32]) -> usize {
        let l = self.logits(x);
        (0..self.classes).fold(0, |best, c| if l[c] > l[best] { c } else { best })
    }

    /// Accuracy on labelled rows.
    pub fn accuracy(&self, x: &[Vec<f32>], y: &[u16]) -> f64 {
        let right = x
            .par_iter()
            .zip(y)
            .filter(|(r, &l)| self.predict(r) == l as usize)
            .count();
        right as f64 / x.len().max(1) as f64
    }
}

/// Mean cross-entropy plus `l2/2 · |W|²` (no penalty on biases) and its gradient, at
/// parameters `theta = [W (classes·d), b (classes)]`, for rows `x` (`n·d`, contiguous).
/// The two products (`X·Wᵀ` and `(P - Y)ᵀ·X`) run through `gemm` in f32; sums are f64.
fn objective(
    theta: &[f64],
    x: &[f32],
    d: usize,
    y: &[u16],
    classes: usize,
    l2: f64,
) -> (f64, Vec<f64>) {
    let n = y.len();
    let w32: Vec<f32> = theta[..classes * d].iter().map(|&v| v as f32).collect();
    let b = &theta[classes * d..];
    // Z = X · Wᵀ  (n × classes)
    let mut z = vec![0f32; n * classes];
    crate::nn::kernels::gemm_par(
        n,
        classes,
        d,
        &mut z,
        (classes, 1),
        false,
        x,
        (d, 1),
        &w32,
        (1, d),
    );
    // P - Y, and the loss.
    let loss: f64 = z
        .par_chunks_mut(classes)
        .zip(y.par_iter())
        .map(|(row, &label)| {
            let zs: Vec<f64> = row.iter().zip(b).map(|(&v, &bb)| v as f64 + bb).collect();
            let max = zs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + zs.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            for (c, r) in row.iter_mut().enumerate() {
                *r = ((zs[c] - lse).exp() - if c == label as usize { 1.0 } else { 0.0 }) as f32;
            }
            lse - zs[label as usize]
        })
        .sum();
    // dW = (P - Y)ᵀ · X / n  (classes × d); db = Σ (P - Y) / n
    let mut gw = vec![0f32; classes * d];
    crate::nn::kernels::gemm_par(
        classes,
        d,
        n,
        &mut gw,
        (d, 1),
        false,
        &z,
        (1, classes),
        x,
        (d, 1),
    );
    let mut grad: Vec<f64> = gw.iter().map(|&v| v as f64 / n as f64).collect();
    for c in 0..classes {
        grad.push(
            z.iter()
                .skip(c)
                .step_by(classes)
                .map(|&v| v as f64)
                .sum::<f64>()
                / n as f64,
        );
    }
    let mut loss = loss / n as f64;
    for (i, wv) in theta[..classes * d].iter().enumerate() {
        loss += 0.5 * l2 * wv * wv;
        grad[i] += l2 * wv;
    }
    (loss, grad)
}

/// What a fit reports.
#[derive(Debug, Clone, Copy)]
pub struct FitReport {
    /// L-BFGS iterations.
    pub iters: usize,
    /// Final objective.
    pub loss: f64,
    /// Final gradient norm (the convergence criterion).
    pub grad_norm: f64,
}

/// Fits a multinomial logistic regression with L2 strength `l2` by L-BFGS (memory 10,
/// backtracking Armijo line search) until the gradient norm falls below `tol` or
/// `max_iters` iterations.
pub fn fit_logistic(
    x: &[Vec<f32>],
    y: &[u16],
    classes: usize,
    l2: f64,
    tol: f64,
    max_iters: usize,
) -> (Logistic, FitReport) {
    let d = x[0].len();
    let flat: Vec<f32> = x.concat();
    let x = &flat;
    let dim = classes * d + classes;
    let mut theta = vec![0f64; dim];
    let (mut f, mut g) = objective(&theta, x, d, y, classes, l2);
    let mut hist: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut iters = 0;
    while iters < max_iters && dot(&g, &g).sqrt() > tol {
        iters += 1;
        // Two-loop recursion: direction = -H·g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, yv, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let gamma = hist
            .last()
            .map_or(1.0 / dot(&g, &g).sqrt().max(1e-12), |(s, yv, _)| {
                dot(s, yv) / dot(yv, yv)
            });
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, yv, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let bta = rho * dot(yv, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(qi, si)| *qi += (a - bta) * si);
        }
        let dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let slope = dot(&g, &dir);
        let dir = if slope < 0.0 {
            dir
        } else {
            g.iter().map(|v| -v).collect()
        };
        let slope = dot(&g, &dir);
        // Backtracking line search (Armijo).
        let mut step = 1.0;
        let (mut f_new, mut g_new, mut theta_new);
        loop {
            theta_new = theta
                .iter()
                .zip(&dir)
                .map(|(t, d)| t + step * d)
                .collect::<Vec<_>>();
            (f_new, g_new) = objective(&theta_new, x, d, y, classes, l2);
            if f_new <= f + 1e-4 * step * slope || step < 1e-10 {
                break;
            }
            step *= 0.5;
        }
        let s: Vec<f64> = theta_new.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 {
            hist.push((s, yv, 1.0 / sy));
            if hist.len() > 10 {
                hist.remove(0);
            }
        }
        let improved = f - f_new;
        theta = theta_new;
        f = f_new;
        g = g_new;
        if step < 1e-10 || improved.abs() < 1e-12 * f.abs().max(1.0) {
            break;
        }
    }
    let model = Logistic {
        classes,
        d,
        w: theta[..classes * d].iter().map(|&v| v as f32).collect(),
        b: theta[classes * d..].iter().map(|&v| v as f32).collect(),
    };
    let grad_norm = dot(&g, &g).sqrt();
    (
        model,
        FitReport {
            iters,
            loss: f,
            grad_norm,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn separable_blobs_are_learned_and_the_gradient_vanishes() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let centres = [[3.0f32, 0.0], [0.0, 3.0], [-3.0, -3.0]];
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let c = i % 3;
            x.push(vec![
                centres[c][0] + rng.gen_range(-1.0..1.0),
                centres[c][1] + rng.gen_range(-1.0..1.0),
            ]);
            y.push(c as u16);
        }
        let (m, rep) = fit_logistic(&x, &y, 3, 1e-2, 1e-6, 500);
        assert!(rep.grad_norm < 1e-5, "{rep:?}");
        assert_eq!(m.accuracy(&x, &y), 1.0);
        // The optimum of a strongly convex objective: a finite-difference check that the
        // gradient there is ~0 in every direction.
        let theta: Vec<f64> = m.w.iter().chain(&m.b).map(|&v| v as f64).collect();
        let flat: Vec<f32> = x.concat();
        let (f0, g0) = objective(&theta, &flat, 2, &y, 3, 1e-2);
        for i in 0..theta.len() {
            let mut t = theta.clone();
            t[i] += 1e-3;
            assert!(objective(&t, &flat, 2, &y, 3, 1e-2).0 >= f0 - 1e-7);
            // The analytic gradient against a central difference.
            let mut a = theta.clone();
            a[i] -= 1e-3;
            let fd = (objective(&t, &flat, 2, &y, 3, 1e-2).0
                - objective(&a, &flat, 2, &y, 3, 1e-2).0)
                / 2e-3;
            assert!((fd - g0[i]).abs() < 1e-4, "{i}: {fd} vs {}", g0[i]);
        }
    }

    #[test]
    fn standardizer() {
        let s = Standardizer::fit(&[vec![1.0, 5.0], vec![3.0, 5.0]]);
        assert_eq!(s.mean, vec![2.0, 5.0]);
        assert_eq!(s.std, vec![1.0, 1.0]);
        assert_eq!(s.apply(&[3.0, 6.0]), vec![1.0, 1.0]);
    }
}

/// Settings of a probe run.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// L2 strengths tried (each chosen by validation accuracy on 10% of the training set).
    pub l2_grid: Vec<f64>,
    /// Gradient-norm tolerance of L-BFGS.
    pub tol: f64,
    /// Most L-BFGS iterations per fit.
    pub max_iters: usize,
    /// Seed of the validation split and of the low-data subsets.
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            l2_grid: vec![1e-1, 1e-2, 1e-3, 1e-4, 1e-5],
            tol: 1e-4,
            max_iters: 1000,
            seed: 0,
        }
    }
}

/// The outcome for one feature set (a layer, or the raw pixels).
#[derive(Debug, Clone)]
pub struct LayerResult {
    /// The chosen L2 strength.
    pub l2: f64,
    /// Accuracy on the 10% validation split with it.
    pub val_accuracy: f64,
    /// Test accuracy of the probe refitted on the whole training set.
    pub test_accuracy: f64,
    /// The refitted probe and its standardisation.
    pub head: Logistic,
    /// Standardisation of the features.
    pub standardizer: Standardizer,
    /// The refit's convergence.
    pub report: FitReport,
}

/// Chooses the L2 strength on a seeded 10% validation split of the training rows, refits
/// on all of them, and measures test accuracy.
pub fn probe_features(
    train_x: &[Vec<f32>],
    train_y: &[u16],
    test_x: &[Vec<f32>],
    test_y: &[u16],
    classes: usize,
    cfg: &ProbeConfig,
) -> LayerResult {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut order: Vec<usize> = (0..train_x.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed));
    let n_val = (train_x.len() / 10)
        .max(1)
        .min(train_x.len().saturating_sub(1));
    let (val_idx, fit_idx) = order.split_at(n_val);
    let pick = |idx: &[usize]| -> (Vec<Vec<f32>>, Vec<u16>) {
        (
            idx.iter().map(|&i| train_x[i].clone()).collect(),
            idx.iter().map(|&i| train_y[i]).collect(),
        )
    };
    let (fx, fy) = pick(fit_idx);
    let (vx, vy) = pick(val_idx);
    let st = Standardizer::fit(&fx);
    let fx: Vec<Vec<f32>> = fx.iter().map(|r| st.apply(r)).collect();
    let vx: Vec<Vec<f32>> = vx.iter().map(|r| st.apply(r)).collect();
    let mut best = (f64::NEG_INFINITY, cfg.l2_grid[0]);
    for &l2 in &cfg.l2_grid {
        let (m, _) = fit_logistic(&fx, &fy, classes, l2, cfg.tol, cfg.max_iters);
        let acc = m.accuracy(&vx, &vy);
        if acc > best.0 {
            best = (acc, l2);
        }
    }
    let standardizer = Standardizer::fit(train_x);
    let tx: Vec<Vec<f32>> = train_x.iter().map(|r| standardizer.apply(r)).collect();
    let (head, report) = fit_logistic(&tx, train_y, classes, best.1, cfg.tol, cfg.max_iters);
    let ex: Vec<Vec<f32>> = test_x.iter().map(|r| standardizer.apply(r)).collect();
    LayerResult {
        l2: best.1,
        val_accuracy: best.0,
        test_accuracy: head.accuracy(&ex, test_y),
        head,
        standardizer,
        report,
    }
}

/// A `probe` command.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    /// Checkpoint (with its palette).
    pub checkpoint: std::path::PathBuf,
    /// Dataset (train split to fit, test split to measure).
    pub data: std::path::PathBuf,
    /// Layers to probe (0..=L, L = the final norm); `None`: all.
    pub layers: Option<Vec<usize>>,
    /// Keep only this many training images per class (low-data probes).
    pub labels_per_class: Option<usize>,
    /// Probe the raw pixels at the model's resolution instead of the model's features.
    pub raw_pixels: bool,
    /// Use only the first N training / test images (0: all).
    pub limit: (usize, usize),
    /// Output folder: probe.json, probe-head.json, probe.png.
    pub out: std::path::PathBuf,
    /// Images per forward pass.
    pub batch: usize,
    /// Solver settings.
    pub cfg: ProbeConfig,
}

/// A split's tokens, raw pixels (scaled to [0, 1]), labels and class names.
struct Labelled {
    tokens: Vec<Vec<u16>>,
    pixels: Vec<Vec<f32>>,
    labels: Vec<u16>,
    classes: Vec<String>,
}

fn labelled(
    path: &std::path::Path,
    split: crate::data::Split,
    palette: &igpt_core::Palette,
    side: usize,
    limit: usize,
) -> anyhow::Result<Labelled> {
    let t = crate::data::tokenize::split(path, split, palette, side, limit)?;
    Ok(Labelled {
        pixels: t
            .pixels
            .iter()
            .map(|p| p.iter().map(|&v| v as f32 / 255.0).collect())
            .collect(),
        tokens: t.tokens,
        labels: t.labels,
        classes: t.classes,
    })
}

/// Runs a probe: per-layer (or raw-pixel) test accuracy, written to `run.out` as JSON,
/// the best layer's head, and a plot of accuracy by layer. Returns `(layer, result)`
/// pairs (layer `usize::MAX` for raw pixels). Features come from the CPU.
pub fn run(r: &ProbeRun, show_progress: bool) -> anyhow::Result<Vec<(usize, LayerResult)>> {
    run_on(&dfdx::prelude::Cpu::default(), r, show_progress)
}

/// [`run`] with the features computed on any device (`--device`); the logistic
/// regressions run on the CPU.
pub fn run_on<D: crate::nn::device::ModelDevice>(
    dev: &D,
    r: &ProbeRun,
    show_progress: bool,
) -> anyhow::Result<Vec<(usize, LayerResult)>> {
    use anyhow::{ensure, Context};
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let ck = crate::io::checkpoint::Checkpoint::load(&r.checkpoint)?;
    let palette = ck
        .palette
        .clone()
        .with_context(|| format!("{}: the checkpoint has no palette", r.checkpoint.display()))?;
    let side = ck.config.side;
    for &l in r.layers.iter().flatten() {
        ensure!(
            l <= ck.config.layers,
            "--layers {l}: the model has layers 0..={}",
            ck.config.layers
        );
    }
    let Labelled {
        tokens: mut tr_tok,
        pixels: mut tr_px,
        labels: mut tr_y,
        classes,
    } = labelled(
        &r.data,
        crate::data::Split::Train,
        &palette,
        side,
        r.limit.0,
    )?;
    let Labelled {
        tokens: te_tok,
        pixels: te_px,
        labels: te_y,
        ..
    } = labelled(&r.data, crate::data::Split::Test, &palette, side, r.limit.1)?;
    if let Some(k) = r.labels_per_class {
        ensure!(k > 0, "--labels-per-class must be positive");
        let mut order: Vec<usize> = (0..tr_y.len()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
            r.cfg.seed ^ 0x1abe1,
        ));
        let mut taken = vec![0usize; classes.len()];
        let keep: Vec<usize> = order
            .into_iter()
            .filter(|&i| {
                let c = tr_y[i] as usize;
                let ok = taken[c] < k;
                taken[c] += ok as usize;
                ok
            })
            .collect();
        tr_tok = keep.iter().map(|&i| tr_tok[i].clone()).collect();
        tr_px = keep.iter().map(|&i| tr_px[i].clone()).collect();
        tr_y = keep.iter().map(|&i| tr_y[i]).collect();
    }
    ensure!(tr_y.len() >= 2, "too few training images to probe");
    let n_classes = classes.len();
    let mut results = Vec::new();
    if r.raw_pixels {
        results.push((
            usize::MAX,
            probe_features(&tr_px, &tr_y, &te_px, &te_y, n_classes, &r.cfg),
        ));
    } else {
        let objective = ck.objective() == crate::nn::Objective::Bert;
        let gpt: Gpt<f32, D> = ck.model(dev)?;
        let t0 = std::time::Instant::now();
        let ftr = features(&gpt, &tr_tok, r.batch, !objective, show_progress);
        let fte = features(&gpt, &te_tok, r.batch, !objective, show_progress);
        if show_progress {
            crate::progress::message(format!(
                "features of {} + {} images from one forward pass each: {:.1} s",
                tr_tok.len(),
                te_tok.len(),
                t0.elapsed().as_secs_f64()
            ));
        }
        let layers: Vec<usize> = r
            .layers
            .clone()
            .unwrap_or_else(|| (0..=ck.config.layers).collect());
        let bar = crate::progress::bar(layers.len() as u64, "probe", show_progress);
        for &l in &layers {
            ensure!(
                l <= ck.config.layers,
                "--layers {l}: the model has layers 0..={}",
                ck.config.layers
            );
            let res = probe_features(&ftr[l], &tr_y, &fte[l], &te_y, n_classes, &r.cfg);
            crate::progress::note(&bar, show_progress, format!(
                "layer {l}: test accuracy {:.2}% (L2 {:e}, validation {:.2}%, {} L-BFGS iterations, |grad| {:.1e})",
                100.0 * res.test_accuracy,
                res.l2,
                100.0 * res.val_accuracy,
                res.report.iters,
                res.report.grad_norm
            ));
            bar.inc(1);
            results.push((l, res));
        }
        bar.finish_and_clear();
    }
    std::fs::create_dir_all(&r.out)
        .with_context(|| format!("{}: cannot create", r.out.display()))?;
    let best = results
        .iter()
        .max_by(|a, b| a.1.val_accuracy.total_cmp(&b.1.val_accuracy))
        .context("no layer probed")?;
    let name = |l: usize| {
        if l == usize::MAX {
            "raw_pixels".to_string()
        } else {
            l.to_string()
        }
    };
    let json = serde_json::json!({
        "checkpoint": r.checkpoint.to_string_lossy(),
        "data": r.data.to_string_lossy(),
        "train_images": tr_y.len(),
        "test_images": te_y.len(),
        "labels_per_class": r.labels_per_class,
        "layers": results.iter().map(|(l, x)| serde_json::json!({
            "layer": name(*l), "l2": x.l2, "val_accuracy": x.val_accuracy,
            "test_accuracy": x.test_accuracy, "iters": x.report.iters, "grad_norm": x.report.grad_norm,
        })).collect::<Vec<_>>(),
        "best_layer": name(best.0),
        "best_test_accuracy": best.1.test_accuracy,
    });
    crate::io::write_atomic(
        &r.out.join("probe.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    let head = serde_json::json!({
        "layer": name(best.0), "classes": classes, "mean": best.1.standardizer.mean,
        "std": best.1.standardizer.std, "weight": best.1.head.w, "bias": best.1.head.b,
    });
    crate::io::write_atomic(&r.out.join("probe-head.json"), head.to_string().as_bytes())?;
    if !r.raw_pixels {
        let pts: Vec<(f64, f64)> = results
            .iter()
            .map(|(l, x)| (*l as f64, 100.0 * x.test_accuracy))
            .collect();
        crate::io::plot::line_plot(
            &r.out.join("probe.png"),
            "LINEAR PROBE ACCURACY BY LAYER",
            "layer (L = final norm)",
            "test accuracy %",
            &[crate::io::plot::Series {
                label: "probe".into(),
                points: pts,
                color: crate::io::plot::COLORS[0],
                markers: true,
            }],
        )?;
    }
    Ok(results)
}
