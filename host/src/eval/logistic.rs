//! Multinomial logistic regression with an L2 penalty, solved to convergence by L-BFGS:
//! the classifier of the linear probes, and the per-feature standardisation before it.
//!
//! The objective is on the mean loss: `Σ CE / n + l2/2 · |W|²` (no penalty on the
//! biases). scikit-learn's `LogisticRegression(C=…)` minimises `C · Σ CE + |W|²/2`, the
//! same minimiser when `l2 = 1 / (C · n)`.

use rayon::prelude::*;

/// Per-feature mean and standard deviation (1 where a feature is constant).
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// Means.
    pub mean: Vec<f32>,
    /// Standard deviations.
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Fits on rows of equal width (population standard deviation).
    pub fn fit(x: &[Vec<f32>]) -> Standardizer {
        Standardizer::fit_rows(x.iter().map(|r| r.as_slice()))
    }

    /// [`Standardizer::fit`] on any rows.
    pub fn fit_rows<'a>(rows: impl Iterator<Item = &'a [f32]> + Clone) -> Standardizer {
        let d = rows.clone().next().map_or(0, |r| r.len());
        let n = rows.clone().count().max(1) as f64;
        let mut mean = vec![0f64; d];
        for r in rows.clone() {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += *v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0f64; d];
        for r in rows {
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

    /// The rows standardised, concatenated into one `n·d` matrix.
    pub fn apply_flat<'a>(&self, rows: impl Iterator<Item = &'a [f32]>) -> Vec<f32> {
        let mut out = Vec::new();
        for r in rows {
            out.extend(
                r.iter()
                    .zip(self.mean.iter().zip(&self.std))
                    .map(|(v, (m, s))| (v - m) / s),
            );
        }
        out
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

    /// The highest-scoring class (the first of equal scores).
    pub fn predict(&self, x: &[f32]) -> usize {
        argmax(&self.logits(x))
    }

    /// Accuracy on labelled rows.
    pub fn accuracy(&self, x: &[Vec<f32>], y: &[u16]) -> f64 {
        let right = self.correct(x, y).iter().filter(|&&c| c).count();
        right as f64 / x.len().max(1) as f64
    }

    /// Per labelled row, whether the head classifies it right.
    pub fn correct(&self, x: &[Vec<f32>], y: &[u16]) -> Vec<bool> {
        x.par_iter()
            .zip(y)
            .map(|(r, &l)| self.predict(r) == l as usize)
            .collect()
    }

    /// Mean cross-entropy on labelled rows, in f64.
    pub fn log_loss(&self, x: &[Vec<f32>], y: &[u16]) -> f64 {
        let theta = self.theta();
        let sum: f64 = x
            .par_iter()
            .zip(y)
            .map(|(r, &l)| row_eval(&theta, r, self.d, l, self.classes).0)
            .sum();
        sum / x.len().max(1) as f64
    }

    /// The objective [`fit_logistic`] minimises, in f64: mean cross-entropy plus
    /// `l2/2 · |W|²`.
    pub fn objective(&self, x: &[Vec<f32>], y: &[u16], l2: f64) -> f64 {
        self.log_loss(x, y) + 0.5 * l2 * self.w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>()
    }

    /// `[W, b]` in f64 (the solver's parameter vector).
    fn theta(&self) -> Vec<f64> {
        self.w.iter().chain(&self.b).map(|&v| v as f64).collect()
    }

    /// The head of a solver's parameter vector `[W, b]`.
    pub(crate) fn from_theta(theta: &[f64], classes: usize, d: usize) -> Logistic {
        Logistic {
            classes,
            d,
            w: theta[..classes * d].iter().map(|&v| v as f32).collect(),
            b: theta[classes * d..].iter().map(|&v| v as f32).collect(),
        }
    }
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |best, c| if v[c] > v[best] { c } else { best })
}

/// Cross-entropy (f64) and whether the prediction is right, for one row at `theta`.
fn row_eval(theta: &[f64], x: &[f32], d: usize, label: u16, classes: usize) -> (f64, bool) {
    let z: Vec<f64> = (0..classes)
        .map(|c| {
            theta[classes * d + c]
                + theta[c * d..(c + 1) * d]
                    .iter()
                    .zip(x)
                    .map(|(w, &v)| w * v as f64)
                    .sum::<f64>()
        })
        .collect();
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    let best = (0..classes).fold(0, |b, c| if z[c] > z[b] { c } else { b });
    (lse - z[label as usize], best == label as usize)
}

/// Summed cross-entropy and number of right predictions of the parameters `theta` on
/// rows `x` (`n·d`, contiguous): what validation measures.
pub(crate) fn eval_flat(
    theta: &[f64],
    x: &[f32],
    d: usize,
    y: &[u16],
    classes: usize,
) -> (f64, usize) {
    x.par_chunks_exact(d.max(1))
        .zip(y.par_iter())
        .map(|(r, &l)| {
            let (ce, ok) = row_eval(theta, r, d, l, classes);
            (ce, ok as usize)
        })
        .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Mean cross-entropy plus `l2/2 · |W|²` (no penalty on biases) and its gradient, at
/// parameters `theta = [W (classes·d), b (classes)]`, for rows `x` (`n·d`, contiguous).
/// The two products (`X·Wᵀ` and `(P - Y)ᵀ·X`) run through `gemm` in f32; sums are f64.
pub(crate) fn objective(
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
        .map_init(
            || vec![0f64; classes],
            |zs, (row, &label)| {
                for ((s, &v), &bb) in zs.iter_mut().zip(row.iter()).zip(b) {
                    *s = v as f64 + bb;
                }
                let zl = zs[label as usize];
                let max = zs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                // One exponential per class: e = exp(z - max), p = e / Σe.
                zs.iter_mut().for_each(|v| *v = (*v - max).exp());
                let sum: f64 = zs.iter().sum();
                for (c, r) in row.iter_mut().enumerate() {
                    *r = (zs[c] / sum - if c == label as usize { 1.0 } else { 0.0 }) as f32;
                }
                max + sum.ln() - zl
            },
        )
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

/// [`objective`] computed in f64 throughout (each row widened from f32 as it is read):
/// what the last iterations and the final report use, where the f32 products' rounding
/// (about 1e-7 of the loss) would hide the remaining decrease from the line search.
/// Rows are summed in fixed chunks, in order, so the value does not depend on the
/// threads.
pub(crate) fn objective_f64(
    theta: &[f64],
    x: &[f32],
    d: usize,
    y: &[u16],
    classes: usize,
    l2: f64,
) -> (f64, Vec<f64>) {
    let n = y.len();
    let (w, b) = theta.split_at(classes * d);
    let chunk = n.div_ceil(32).max(64);
    let parts: Vec<(f64, Vec<f64>)> = x
        .par_chunks(chunk * d.max(1))
        .zip(y.par_chunks(chunk))
        .map(|(xc, yc)| {
            let mut g = vec![0f64; classes * d + classes];
            let mut loss = 0f64;
            let mut xr = vec![0f64; d];
            let mut z = vec![0f64; classes];
            for (r, &label) in xc.chunks_exact(d.max(1)).zip(yc) {
                for (a, &v) in xr.iter_mut().zip(r) {
                    *a = v as f64;
                }
                for (c, zc) in z.iter_mut().enumerate() {
                    *zc = b[c] + dot8(&w[c * d..(c + 1) * d], &xr);
                }
                let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let zl = z[label as usize];
                z.iter_mut().for_each(|v| *v = (*v - max).exp());
                let sum: f64 = z.iter().sum();
                loss += max + sum.ln() - zl;
                for (c, &e) in z.iter().enumerate() {
                    let p = e / sum - if c == label as usize { 1.0 } else { 0.0 };
                    g[classes * d + c] += p;
                    for (gi, &xi) in g[c * d..(c + 1) * d].iter_mut().zip(&xr) {
                        *gi += p * xi;
                    }
                }
            }
            (loss, g)
        })
        .collect();
    let mut loss = 0f64;
    let mut grad = vec![0f64; classes * d + classes];
    for (l, g) in parts {
        loss += l;
        grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
    }
    let inv = 1.0 / n.max(1) as f64;
    loss *= inv;
    grad.iter_mut().for_each(|v| *v *= inv);
    for (i, wv) in w.iter().enumerate() {
        loss += 0.5 * l2 * wv * wv;
        grad[i] += l2 * wv;
    }
    (loss, grad)
}

/// A dot product with eight independent partial sums (vectorisable without reordering
/// a single sum).
fn dot8(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// What a fit reports.
#[derive(Debug, Clone, Copy)]
pub struct FitReport {
    /// L-BFGS iterations.
    pub iters: usize,
    /// Final objective (evaluated in f64).
    pub loss: f64,
    /// Final gradient norm (evaluated in f64; the convergence criterion).
    pub grad_norm: f64,
}

/// Fits a multinomial logistic regression with L2 strength `l2` by L-BFGS (memory 10,
/// backtracking Armijo line search) from zero until the gradient norm falls below `tol`
/// or `max_iters` iterations. The iterations run on f32 products until the f32 rounding
/// stops progress or the tolerance is met there, then on in f64 until the f64 gradient
/// meets it.
pub fn fit_logistic(
    x: &[Vec<f32>],
    y: &[u16],
    classes: usize,
    l2: f64,
    tol: f64,
    max_iters: usize,
) -> (Logistic, FitReport) {
    let d = x.first().map_or(0, |r| r.len());
    let flat: Vec<f32> = x.concat();
    let theta = vec![0f64; classes * d + classes];
    let (theta, rep) = lbfgs(&flat, d, y, classes, l2, tol, max_iters, theta);
    (Logistic::from_theta(&theta, classes, d), rep)
}

/// [`fit_logistic`] on a contiguous `n·d` matrix from a starting point `theta` (`[W, b]`,
/// `classes·d + classes` values; a warm start along an L2 path). Returns the parameters.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lbfgs(
    x: &[f32],
    d: usize,
    y: &[u16],
    classes: usize,
    l2: f64,
    tol: f64,
    max_iters: usize,
    mut theta: Vec<f64>,
) -> (Vec<f64>, FitReport) {
    let eval = |t: &[f64], precise: bool| {
        if precise {
            objective_f64(t, x, d, y, classes, l2)
        } else {
            objective(t, x, d, y, classes, l2)
        }
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut precise = false;
    let (mut f, mut g) = eval(&theta, precise);
    let mut hist: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    let mut scale: Option<f64> = None;
    let mut iters = 0;
    loop {
        // Converged, or stalled, in f32: check and go on in f64 (the f32 curvature pairs
        // are dropped: their differences are mostly rounding by now).
        if dot(&g, &g).sqrt() <= tol {
            if precise {
                break;
            }
            precise = true;
            (f, g) = eval(&theta, precise);
            hist.clear();
            continue;
        }
        if iters >= max_iters {
            break;
        }
        iters += 1;
        // Two-loop recursion: direction = -H·g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, yv, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        // The initial Hessian scale: from the newest pair, else the last one known (after
        // the switch to f64), else a unit first step.
        if let Some((s, yv, _)) = hist.last() {
            scale = Some(dot(s, yv) / dot(yv, yv));
        }
        let gamma = scale.unwrap_or(1.0 / dot(&g, &g).sqrt().max(1e-12));
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
        let accepted = loop {
            let theta_new: Vec<f64> = theta.iter().zip(&dir).map(|(t, d)| t + step * d).collect();
            let (f_new, g_new) = eval(&theta_new, precise);
            // Armijo; in f64 also Hager and Zhang's approximate Wolfe condition (the
            // directional derivative fell to at most 0.8 of its size past the minimum,
            // the value within rounding): near the optimum a decrease of the loss gets
            // smaller than its rounding before the gradient is small.
            let approx = precise
                && f_new <= f + 1e-13 * f.abs().max(1.0)
                && dot(&g_new, &dir) <= -0.8 * slope;
            if f_new <= f + 1e-4 * step * slope || approx {
                break Some((theta_new, f_new, g_new));
            }
            if step < 1e-10 {
                break None;
            }
            step *= 0.5;
        };
        let stop = match accepted {
            None => true,
            Some((theta_new, f_new, g_new)) => {
                let s: Vec<f64> = theta_new.iter().zip(&theta).map(|(a, b)| a - b).collect();
                let yv: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
                // Keep pairs of positive curvature, relative to their size (an absolute
                // floor would drop every pair near the optimum, where steps are small,
                // and leave gradient descent).
                let sy = dot(&s, &yv);
                if sy > 1e-10 * dot(&s, &s).sqrt() * dot(&yv, &yv).sqrt() && sy > 0.0 {
                    hist.push((s, yv, 1.0 / sy));
                    if hist.len() > 10 {
                        hist.remove(0);
                    }
                }
                let improved = f - f_new;
                theta = theta_new;
                f = f_new;
                g = g_new;
                // f32 values round at about 1e-7 of the loss: a stall there moves on to
                // f64, which stops only when the line search fails.
                !precise && improved.abs() < 1e-12 * f.abs().max(1.0)
            }
        };
        if stop {
            if precise {
                break;
            }
            precise = true;
            (f, g) = eval(&theta, precise);
            hist.clear();
        }
    }
    if !precise {
        (f, g) = eval(&theta, true);
    }
    let grad_norm = dot(&g, &g).sqrt();
    (
        theta,
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
        // The f64 objective of the fitted head agrees with the solver's.
        assert!(
            (m.objective(&x, &y, 1e-2) - rep.loss).abs() < 1e-6,
            "{rep:?}"
        );
        // The optimum of a strongly convex objective: a finite-difference check that the
        // gradient there is ~0 in every direction.
        let theta = m.theta();
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
        // Validation's sums agree with the head's own measures.
        let (ce, right) = eval_flat(&theta, &flat, 2, &y, 3);
        assert!((ce / 300.0 - m.log_loss(&x, &y)).abs() < 1e-6);
        assert_eq!(right, 300);
    }

    #[test]
    fn the_f64_objective_agrees_with_the_f32_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (n, d, c) = (150, 13, 4);
        let x: Vec<f32> = (0..n * d).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let y: Vec<u16> = (0..n).map(|_| rng.gen_range(0..c as u16)).collect();
        let theta: Vec<f64> = (0..c * d + c).map(|_| rng.gen_range(-0.5..0.5)).collect();
        let (f32v, g32) = objective(&theta, &x, d, &y, c, 1e-2);
        let (f64v, g64) = objective_f64(&theta, &x, d, &y, c, 1e-2);
        assert!((f32v - f64v).abs() < 1e-5 * f64v, "{f32v} {f64v}");
        for (a, b) in g32.iter().zip(&g64) {
            assert!((a - b).abs() < 1e-5, "{a} {b}");
        }
        // Its gradient against central differences, to f64 precision.
        for i in (0..theta.len()).step_by(7) {
            let (mut p, mut m) = (theta.clone(), theta.clone());
            p[i] += 1e-5;
            m[i] -= 1e-5;
            let fd = (objective_f64(&p, &x, d, &y, c, 1e-2).0
                - objective_f64(&m, &x, d, &y, c, 1e-2).0)
                / 2e-5;
            assert!((fd - g64[i]).abs() < 1e-8, "{i}: {fd} vs {}", g64[i]);
        }
    }

    #[test]
    fn a_warm_start_reaches_the_same_optimum() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x: Vec<Vec<f32>> = (0..200)
            .map(|_| (0..5).map(|_| rng.gen_range(-1.0..1.0)).collect())
            .collect();
        let y: Vec<u16> = x
            .iter()
            .map(|r| ((r[0] + 0.5 * r[1] > 0.0) as u16) + (r[2] > 0.5) as u16)
            .collect();
        let flat = x.concat();
        let cold = lbfgs(&flat, 5, &y, 3, 1e-3, 1e-7, 2000, vec![0.0; 18]);
        let warm_from = lbfgs(&flat, 5, &y, 3, 1e-1, 1e-7, 2000, vec![0.0; 18]).0;
        let warm = lbfgs(&flat, 5, &y, 3, 1e-3, 1e-7, 2000, warm_from);
        assert!(
            (cold.1.loss - warm.1.loss).abs() < 1e-6,
            "{cold:?} {warm:?}"
        );
        assert!(cold.1.grad_norm < 1e-6 && warm.1.grad_norm < 1e-6);
    }

    #[test]
    fn standardizer() {
        let s = Standardizer::fit(&[vec![1.0, 5.0], vec![3.0, 5.0]]);
        assert_eq!(s.mean, vec![2.0, 5.0]);
        assert_eq!(s.std, vec![1.0, 1.0]);
        assert_eq!(s.apply(&[3.0, 6.0]), vec![1.0, 1.0]);
        let rows = [vec![1.0f32, 5.0], vec![3.0, 5.0]];
        assert_eq!(
            s.apply_flat(rows.iter().map(|r| r.as_slice())),
            vec![-1.0, 0.0, 1.0, 0.0]
        );
    }
}
