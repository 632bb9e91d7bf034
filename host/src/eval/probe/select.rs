//! Choosing the L2 strength of a probe, and fitting it.
//!
//! The criterion is the validation log-loss (mean cross-entropy of the held-out rows),
//! which does not tie the way accuracy does on a few hundred rows. Below
//! [`ProbeConfig::cv_below`] training rows (10,000 by default) the validation rows are
//! every row in turn, by stratified k-fold cross-validation (5 folds by default); above
//! it, one stratified held-out 10%. Standardisation is fitted on each fold's fitting rows
//! only. When the best strength is the strongest or the weakest of a grid of several, the
//! grid is extended by factors of 10 in that direction, at most [`ProbeConfig::widen`]
//! times each way. Along the grid each fit starts from the previous one's solution (a
//! warm start: the objective is strictly convex, so only the time changes).
//!
//! The L2 is on the mean loss (`Σ CE / n + l2/2 · |W|²`) and the final probe is refitted
//! on all training rows with the chosen value. scikit-learn's `C` is `1 / (l2 · n)`.

use super::super::logistic::{eval_flat, lbfgs, FitReport, Logistic, Standardizer};
use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Settings of a probe: the L2 search and the solver.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// L2 strengths tried (on the mean loss). With one value the L2 is fixed: it is
    /// still measured on validation, but the grid is not widened.
    pub l2_grid: Vec<f64>,
    /// Gradient-norm tolerance of L-BFGS.
    pub tol: f64,
    /// Most L-BFGS iterations per fit.
    pub max_iters: usize,
    /// Seed of the validation folds and of the low-data subsets.
    pub seed: u64,
    /// Folds of the cross-validation (at least 2; at most one per training row).
    pub folds: usize,
    /// Cross-validate below this many training rows; from it on, one held-out 10%.
    pub cv_below: usize,
    /// Most extensions of the grid by a factor of 10 past each edge.
    pub widen: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            l2_grid: vec![1e-1, 1e-2, 1e-3, 1e-4, 1e-5],
            tol: 1e-4,
            max_iters: 1000,
            seed: 0,
            folds: 5,
            cv_below: 10_000,
            widen: 3,
        }
    }
}

impl ProbeConfig {
    /// Checks every setting (errors name the `igpt probe` flag).
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.l2_grid.is_empty(), "--l2 needs at least one value");
        for &v in &self.l2_grid {
            ensure!(
                v.is_finite() && v > 0.0 && v < 1e6,
                "--l2 {v}: not a positive finite strength below 1e6"
            );
        }
        ensure!(
            self.tol.is_finite() && self.tol > 0.0,
            "the solver tolerance {} is not positive and finite",
            self.tol
        );
        ensure!(
            self.max_iters > 0,
            "the solver needs at least one iteration"
        );
        ensure!(self.folds >= 2, "--folds {}: at least 2", self.folds);
        ensure!(
            self.widen <= 10,
            "--widen {}: at most 10 extensions",
            self.widen
        );
        Ok(())
    }
}

/// How validation rows were drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Stratified k-fold cross-validation: every training row is validated once.
    KFold(usize),
    /// One stratified held-out split of this many rows.
    Holdout(usize),
}

impl Validation {
    /// A description for reports.
    pub fn describe(&self) -> String {
        match self {
            Validation::KFold(k) => format!("{k}-fold cross-validation"),
            Validation::Holdout(n) => format!("held-out 10% ({n} rows)"),
        }
    }
}

/// Validation measures of one L2 strength.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct L2Score {
    /// The strength.
    pub l2: f64,
    /// Mean cross-entropy of the validation rows (the criterion).
    pub val_loss: f64,
    /// Accuracy of the validation rows.
    pub val_accuracy: f64,
}

/// The outcome of the L2 search.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// How validation rows were drawn.
    pub validation: Validation,
    /// Every strength tried, strongest first.
    pub scores: Vec<L2Score>,
    /// Index of the chosen one in `scores` (lowest validation loss).
    pub chosen: usize,
    /// Extensions of the grid past its strongest and its weakest end.
    pub widened: (usize, usize),
    /// True when the choice is still the strongest or the weakest strength tried with
    /// several tried (the widening stopped at its bound).
    pub at_edge: bool,
}

impl Selection {
    /// The chosen strength and its validation measures.
    pub fn best(&self) -> L2Score {
        self.scores[self.chosen]
    }
}

/// Fold of each row (`0..k`): rows shuffled with `seed`, then ordered by label (stably),
/// then dealt round-robin, so that every fold holds about `1/k` of each class and the
/// folds' sizes differ by at most one.
pub fn stratified_folds(y: &[u16], k: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..y.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    order.sort_by_key(|&i| y[i]);
    let mut fold = vec![0; y.len()];
    for (pos, &i) in order.iter().enumerate() {
        fold[i] = pos % k.max(1);
    }
    fold
}

/// One fit/validation split, standardised on its fitting rows.
struct Split {
    fx: Vec<f32>,
    fy: Vec<u16>,
    vx: Vec<f32>,
    vy: Vec<u16>,
}

fn split(x: &[Vec<f32>], y: &[u16], fold: &[usize], val: usize) -> Split {
    let fit = || (0..x.len()).filter(|&i| fold[i] != val);
    let held = || (0..x.len()).filter(|&i| fold[i] == val);
    let st = Standardizer::fit_rows(fit().map(|i| x[i].as_slice()));
    Split {
        fx: st.apply_flat(fit().map(|i| x[i].as_slice())),
        fy: fit().map(|i| y[i]).collect(),
        vx: st.apply_flat(held().map(|i| x[i].as_slice())),
        vy: held().map(|i| y[i]).collect(),
    }
}

/// Chooses the L2 strength for rows `x` (labels `y`, `classes` classes) by validation
/// log-loss; see the module's documentation. Returns an error for fewer than 2 rows or
/// rows of unequal width.
pub fn select_l2(
    x: &[Vec<f32>],
    y: &[u16],
    classes: usize,
    cfg: &ProbeConfig,
) -> Result<Selection> {
    Ok(search(x, y, classes, cfg)?.0)
}

/// [`select_l2`], also returning the first split's solution at the chosen strength (a warm
/// start for the refit).
fn search(
    x: &[Vec<f32>],
    y: &[u16],
    classes: usize,
    cfg: &ProbeConfig,
) -> Result<(Selection, Vec<f64>)> {
    cfg.validate()?;
    let n = x.len();
    ensure!(n >= 2, "{n} training rows: a probe needs at least 2");
    ensure!(y.len() == n, "{} labels for {n} rows", y.len());
    let d = x[0].len();
    ensure!(
        x.iter().all(|r| r.len() == d),
        "feature rows of unequal width"
    );
    ensure!(
        y.iter().all(|&l| (l as usize) < classes),
        "a label is not below the {classes} classes"
    );
    let (validation, fold, splits) = if n < cfg.cv_below {
        let k = cfg.folds.min(n);
        (Validation::KFold(k), stratified_folds(y, k, cfg.seed), k)
    } else {
        let fold = stratified_folds(y, 10, cfg.seed);
        let rows = fold.iter().filter(|&&f| f == 0).count();
        (Validation::Holdout(rows), fold, 1)
    };
    let val_rows: usize = match validation {
        Validation::KFold(_) => n,
        Validation::Holdout(rows) => rows,
    };
    let mut grid: Vec<f64> = cfg.l2_grid.clone();
    grid.sort_by(|a, b| b.total_cmp(a));
    grid.dedup();
    let dim = classes * d + classes;
    let fit = |s: &Split, l2: f64, from: Vec<f64>| {
        lbfgs(&s.fx, d, &s.fy, classes, l2, cfg.tol, cfg.max_iters, from).0
    };
    // The grid, strongest first, each split warm-starting along it. `sums[i]`: summed
    // validation cross-entropy and right answers at `l2s[i]` over the splits; `ends`: each
    // split's solutions at the strongest and weakest strength (where a widening starts);
    // `first`: split 0's solution at every strength.
    let mut l2s = grid.clone();
    let mut sums = vec![(0f64, 0usize); l2s.len()];
    let mut ends: Vec<(Vec<f64>, Vec<f64>)> = Vec::with_capacity(splits);
    let mut first: Vec<Vec<f64>> = Vec::new();
    for s in 0..splits {
        let sp = split(x, y, &fold, s);
        let mut theta = vec![0f64; dim];
        let mut strongest = None;
        for (i, &l2) in l2s.iter().enumerate() {
            theta = fit(&sp, l2, theta);
            let (ce, right) = eval_flat(&theta, &sp.vx, d, &sp.vy, classes);
            sums[i].0 += ce;
            sums[i].1 += right;
            if i == 0 {
                strongest = Some(theta.clone());
            }
            if s == 0 {
                first.push(theta.clone());
            }
        }
        ends.push((strongest.unwrap_or_else(|| theta.clone()), theta));
    }
    let argmin = |sums: &[(f64, usize)]| {
        (0..sums.len()).fold(0, |b, i| if sums[i].0 < sums[b].0 { i } else { b })
    };
    let mut chosen = argmin(&sums);
    let mut widened = (0, 0);
    let can_widen = grid.len() > 1;
    loop {
        let up = chosen == 0 && widened.0 < cfg.widen;
        let down = chosen + 1 == l2s.len() && widened.1 < cfg.widen;
        if !can_widen || !(up || down) {
            break;
        }
        let l2 = if up {
            l2s[0] * 10.0
        } else {
            l2s[l2s.len() - 1] / 10.0
        };
        let mut sum = (0f64, 0usize);
        let mut theta0 = None;
        for (s, end) in ends.iter_mut().enumerate() {
            let sp = split(x, y, &fold, s);
            let from = if up { end.0.clone() } else { end.1.clone() };
            let theta = fit(&sp, l2, from);
            let (ce, right) = eval_flat(&theta, &sp.vx, d, &sp.vy, classes);
            sum.0 += ce;
            sum.1 += right;
            if s == 0 {
                theta0 = Some(theta.clone());
            }
            if up {
                end.0 = theta;
            } else {
                end.1 = theta;
            }
        }
        let theta0 = theta0.unwrap_or_else(|| vec![0f64; dim]);
        if up {
            widened.0 += 1;
            l2s.insert(0, l2);
            sums.insert(0, sum);
            first.insert(0, theta0);
        } else {
            widened.1 += 1;
            l2s.push(l2);
            sums.push(sum);
            first.push(theta0);
        }
        chosen = argmin(&sums);
    }
    let at_edge = l2s.len() > 1 && (chosen == 0 || chosen + 1 == l2s.len());
    let scores = l2s
        .iter()
        .zip(&sums)
        .map(|(&l2, &(ce, right))| L2Score {
            l2,
            val_loss: ce / val_rows as f64,
            val_accuracy: right as f64 / val_rows as f64,
        })
        .collect();
    let warm = first.swap_remove(chosen);
    Ok((
        Selection {
            validation,
            scores,
            chosen,
            widened,
            at_edge,
        },
        warm,
    ))
}

/// The outcome for one feature set (a layer, layers concatenated, or the raw pixels).
#[derive(Debug, Clone)]
pub struct LayerResult {
    /// The chosen L2 strength.
    pub l2: f64,
    /// Validation log-loss with it (the selection criterion).
    pub val_loss: f64,
    /// Validation accuracy with it (the layer-selection criterion).
    pub val_accuracy: f64,
    /// Test accuracy of the probe refitted on the whole training set.
    pub test_accuracy: f64,
    /// Per test image, whether that probe classified it right (paired comparisons of two
    /// probes on the same images: [`crate::eval::paired`]).
    pub test_correct: Vec<bool>,
    /// The refitted probe and its standardisation.
    pub head: Logistic,
    /// Standardisation of the features.
    pub standardizer: Standardizer,
    /// The refit's convergence.
    pub report: FitReport,
    /// The L2 search.
    pub selection: Selection,
}

/// Chooses the L2 strength by validation log-loss ([`select_l2`]), refits on all training
/// rows, and measures test accuracy.
pub fn probe_features(
    train_x: &[Vec<f32>],
    train_y: &[u16],
    test_x: &[Vec<f32>],
    test_y: &[u16],
    classes: usize,
    cfg: &ProbeConfig,
) -> Result<LayerResult> {
    let (selection, warm) = search(train_x, train_y, classes, cfg)?;
    let best = selection.best();
    let d = train_x[0].len();
    ensure!(
        test_x.iter().all(|r| r.len() == d) && test_x.len() == test_y.len(),
        "test rows do not match the training rows' width or labels"
    );
    let standardizer = Standardizer::fit(train_x);
    let tx = standardizer.apply_flat(train_x.iter().map(|r| r.as_slice()));
    let (theta, report) = lbfgs(
        &tx,
        d,
        train_y,
        classes,
        best.l2,
        cfg.tol,
        cfg.max_iters,
        warm,
    );
    let head = Logistic::from_theta(&theta, classes, d);
    let ex: Vec<Vec<f32>> = test_x.iter().map(|r| standardizer.apply(r)).collect();
    let test_correct = head.correct(&ex, test_y);
    let right = test_correct.iter().filter(|&&c| c).count();
    Ok(LayerResult {
        l2: best.l2,
        val_loss: best.val_loss,
        val_accuracy: best.val_accuracy,
        test_accuracy: right as f64 / test_correct.len().max(1) as f64,
        test_correct,
        head,
        standardizer,
        report,
        selection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn folds_are_stratified_and_balanced() {
        // 4 of each of 10 classes into 5 folds: every fold gets 8 rows, no class more than
        // once per fold.
        let y: Vec<u16> = (0..40).map(|i| (i % 10) as u16).collect();
        let f = stratified_folds(&y, 5, 3);
        for k in 0..5 {
            let rows: Vec<usize> = (0..40).filter(|&i| f[i] == k).collect();
            assert_eq!(rows.len(), 8, "fold {k}");
            let mut classes: Vec<u16> = rows.iter().map(|&i| y[i]).collect();
            classes.sort();
            classes.dedup();
            assert_eq!(classes.len(), 8, "fold {k} repeats a class");
        }
        assert_ne!(f, stratified_folds(&y, 5, 4), "the seed shuffles");
    }

    fn blobs(n: usize, noise: f32, flip: f64, seed: u64) -> (Vec<Vec<f32>>, Vec<u16>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..n {
            let c = i % 3;
            let mut r: Vec<f32> = (0..8).map(|_| noise * rng.gen_range(-1.0..1.0)).collect();
            r[c] += 1.0;
            x.push(r);
            y.push(if rng.gen_bool(flip) {
                rng.gen_range(0..3)
            } else {
                c as u16
            });
        }
        (x, y)
    }

    #[test]
    fn the_grid_widens_toward_strong_penalties_on_noise() {
        // Labels unrelated to the features: the best probe predicts the class frequencies,
        // i.e. the strongest penalty; a grid of weak ones must widen upward to its bound.
        let (x, y) = blobs(60, 1.0, 1.0, 5);
        let cfg = ProbeConfig {
            l2_grid: vec![1e-4, 1e-5],
            widen: 2,
            ..Default::default()
        };
        let s = select_l2(&x, &y, 3, &cfg).unwrap();
        assert_eq!(s.widened, (2, 0), "{s:?}");
        assert_eq!(s.scores.len(), 4);
        assert_eq!(s.chosen, 0);
        assert!((s.best().l2 - 1e-2).abs() < 1e-12);
        assert!(s.at_edge);
        assert_eq!(s.validation, Validation::KFold(5));
        // A fixed L2 (one value) is never widened.
        let one = ProbeConfig {
            l2_grid: vec![1e-4],
            ..Default::default()
        };
        let s = select_l2(&x, &y, 3, &one).unwrap();
        assert_eq!((s.scores.len(), s.widened, s.at_edge), (1, (0, 0), false));
    }

    #[test]
    fn the_grid_widens_toward_weak_penalties_on_clean_data() {
        // Clean, well-separated classes: weaker penalties keep lowering the validation
        // loss, so a grid of strong ones widens downward and stops inside or at its bound.
        let (x, y) = blobs(150, 0.2, 0.0, 6);
        let cfg = ProbeConfig {
            l2_grid: vec![10.0, 1.0],
            widen: 3,
            ..Default::default()
        };
        let s = select_l2(&x, &y, 3, &cfg).unwrap();
        assert!(s.widened.1 >= 1 && s.widened.0 == 0, "{s:?}");
        assert!(s.best().l2 < 1.0, "{s:?}");
        // Strongest first throughout.
        assert!(s.scores.windows(2).all(|w| w[0].l2 > w[1].l2));
        assert!(s.best().val_accuracy > 0.95);
    }

    #[test]
    fn large_sets_hold_out_ten_percent_and_bad_input_is_an_error() {
        let (x, y) = blobs(300, 0.5, 0.1, 7);
        let cfg = ProbeConfig {
            cv_below: 100,
            ..Default::default()
        };
        let s = select_l2(&x, &y, 3, &cfg).unwrap();
        assert_eq!(s.validation, Validation::Holdout(30));
        assert!(select_l2(&x[..1], &y[..1], 3, &cfg).is_err());
        assert!(select_l2(&x, &y, 2, &cfg).is_err(), "label 2 of 2 classes");
        let bad = ProbeConfig {
            l2_grid: vec![f64::NAN],
            ..Default::default()
        };
        assert!(select_l2(&x, &y, 3, &bad).is_err());
        let r = probe_features(&x, &y, &x, &y, 3, &ProbeConfig::default()).unwrap();
        assert!(r.test_accuracy > 0.8 && r.report.grad_norm < 1e-3, "{r:?}");
    }
}
