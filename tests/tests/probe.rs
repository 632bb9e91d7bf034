//! The linear probe against a reference solution, and its L2 selection on small data.
//!
//! `tests/fixtures/probe/*.safetensors` hold scikit-learn's multinomial logistic
//! regressions on the first 500 training images of `data/fashion-mnist-subset` at 14x14
//! (see the README there and `make_fixture.py`). Each file is a case; the test fails when
//! the folder holds none.

use anyhow::{bail, ensure, Context, Result};
use igpt::data::{load, Split};
use igpt::eval::probe::{fit_logistic, probe_features, Logistic, ProbeConfig, Standardizer};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    igpt_tests::repo_root().join("tests/fixtures/probe")
}

fn subset() -> PathBuf {
    igpt_tests::repo_root().join("data/fashion-mnist-subset")
}

/// A fixture file: its tensors as f64 or i64 values with shapes, and its metadata.
struct Reference {
    path: PathBuf,
    f64s: HashMap<String, (Vec<usize>, Vec<f64>)>,
    i64s: HashMap<String, (Vec<usize>, Vec<i64>)>,
    meta: HashMap<String, String>,
}

impl Reference {
    fn open(path: &Path) -> Result<Reference> {
        let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .with_context(|| format!("{}: not safetensors", path.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{}: not safetensors", path.display()))?;
        let (mut f64s, mut i64s) = (HashMap::new(), HashMap::new());
        for (name, t) in st.tensors() {
            let words = t.data().chunks_exact(8).map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                b
            });
            match t.dtype() {
                Dtype::F64 => {
                    f64s.insert(
                        name,
                        (t.shape().to_vec(), words.map(f64::from_le_bytes).collect()),
                    );
                }
                Dtype::I64 => {
                    i64s.insert(
                        name,
                        (t.shape().to_vec(), words.map(i64::from_le_bytes).collect()),
                    );
                }
                d => bail!("{}: {name} is {d:?}", path.display()),
            }
        }
        Ok(Reference {
            path: path.to_path_buf(),
            f64s,
            i64s,
            meta: header.metadata().clone().unwrap_or_default(),
        })
    }

    fn f64(&self, name: &str) -> Result<&(Vec<usize>, Vec<f64>)> {
        self.f64s
            .get(name)
            .with_context(|| format!("{}: no F64 tensor {name}", self.path.display()))
    }

    fn i64(&self, name: &str) -> Result<&(Vec<usize>, Vec<i64>)> {
        self.i64s
            .get(name)
            .with_context(|| format!("{}: no I64 tensor {name}", self.path.display()))
    }

    fn meta(&self, key: &str) -> Result<&str> {
        self.meta
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("{}: no metadata {key}", self.path.display()))
    }
}

fn cases() -> Result<Vec<Reference>> {
    let dir = fixture_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("fixture folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    ensure!(
        !paths.is_empty(),
        "no *.safetensors in {}: a test without cases proves nothing",
        dir.display()
    );
    paths.iter().map(|p| Reference::open(p)).collect()
}

fn fnv1a64(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The first `n` images of a split at `side`, as rows scaled to [0, 1], with labels;
/// checks the pixels and labels against the fixture's checksum.
fn rows(
    split: Split,
    side: usize,
    n: usize,
    fnv: Option<&str>,
) -> Result<(Vec<Vec<f32>>, Vec<u16>)> {
    let ds = load(&subset(), split, Some(side))?.truncate(n);
    ensure!(ds.len() == n, "{n} images wanted, {} read", ds.len());
    if let Some(want) = fnv {
        let got = fnv1a64(
            ds.pixels
                .iter()
                .copied()
                .chain(ds.labels.iter().map(|&l| l as u8)),
        );
        ensure!(
            format!("{got:016x}") == want,
            "{split:?} pixels/labels checksum {got:016x}, the fixture was made from {want}"
        );
    }
    let x = (0..ds.len())
        .map(|i| ds.image(i).iter().map(|&v| v as f32 / 255.0).collect())
        .collect();
    Ok((x, ds.labels))
}

fn head_of(w: &[f64], b: &[f64], classes: usize, d: usize) -> Logistic {
    Logistic {
        classes,
        d,
        w: w.iter().map(|&v| v as f32).collect(),
        b: b.iter().map(|&v| v as f32).collect(),
    }
}

/// Prediction and top-2 margin of every row.
fn predictions(h: &Logistic, x: &[Vec<f32>]) -> Vec<(usize, f32)> {
    x.iter()
        .map(|r| {
            let l = h.logits(r);
            let p = h.predict(r);
            let second = (0..l.len())
                .filter(|&c| c != p)
                .map(|c| l[c])
                .fold(f32::NEG_INFINITY, f32::max);
            (p, l[p] - second)
        })
        .collect()
}

#[test]
fn fit_logistic_matches_scikit_learn() -> Result<()> {
    for case in cases()? {
        let side: usize = case.meta("side")?.parse()?;
        let n_train: usize = case.meta("train_images")?.parse()?;
        let n_test: usize = case.meta("test_images")?.parse()?;
        let (xtr, ytr) = rows(
            Split::Train,
            side,
            n_train,
            Some(case.meta("train_fnv1a64")?),
        )?;
        let (xte, yte) = rows(Split::Test, side, n_test, Some(case.meta("test_fnv1a64")?))?;
        let st = Standardizer::fit(&xtr);
        let xtr: Vec<Vec<f32>> = xtr.iter().map(|r| st.apply(r)).collect();
        let xte: Vec<Vec<f32>> = xte.iter().map(|r| st.apply(r)).collect();
        let d = side * side;
        let (_, l2s) = case.f64("l2")?;
        let (_, objectives) = case.f64("objective")?;
        let (_, train_acc) = case.f64("train_accuracy")?;
        let (_, test_acc) = case.f64("test_accuracy")?;
        let (wshape, weights) = case.f64("weight")?;
        let (_, biases) = case.f64("bias")?;
        let (_, train_pred) = case.i64("train_pred")?;
        let (_, test_pred) = case.i64("test_pred")?;
        let classes = wshape[1];
        ensure!(
            wshape == &vec![l2s.len(), classes, d],
            "{}: weight shape {wshape:?}",
            case.path.display()
        );
        for (i, &l2) in l2s.iter().enumerate() {
            let sk = head_of(
                &weights[i * classes * d..(i + 1) * classes * d],
                &biases[i * classes..(i + 1) * classes],
                classes,
                d,
            );
            // Same inputs, same objective: ours evaluated at scikit-learn's solution gives
            // the value it reported.
            let at_sk = sk.objective(&xtr, &ytr, l2);
            assert!(
                (at_sk - objectives[i]).abs() <= 1e-9 * objectives[i],
                "l2 {l2}: our objective at scikit-learn's weights {at_sk} vs its {}",
                objectives[i]
            );
            let t0 = std::time::Instant::now();
            let (ours, rep) = fit_logistic(&xtr, &ytr, classes, l2, 1e-8, 20_000);
            let secs = t0.elapsed().as_secs_f64();
            let f = ours.objective(&xtr, &ytr, l2);
            eprintln!(
                "l2 {l2}: objective {f:.12} (scikit-learn {:.12}, {:+.2e}), {} iterations, |grad| {:.1e}, {secs:.2} s",
                objectives[i],
                f - objectives[i],
                rep.iters,
                rep.grad_norm
            );
            assert!(rep.grad_norm <= 1e-8, "l2 {l2}: not converged: {rep:?}");
            // Strictly convex: both at the minimum, to a relative 1e-9.
            assert!(
                (f - objectives[i]).abs() <= 1e-9 * objectives[i],
                "l2 {l2}: objective {f} vs scikit-learn's {}",
                objectives[i]
            );
            // The same minimiser: weights agree (biases up to a common shift, which the
            // softmax ignores).
            let wmax = sk.w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let wdiff = ours
                .w
                .iter()
                .zip(&sk.w)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let centre = |b: &[f32]| {
                let m = b.iter().sum::<f32>() / b.len() as f32;
                b.iter().map(|v| v - m).collect::<Vec<_>>()
            };
            let (bo, bs) = (centre(&ours.b), centre(&sk.b));
            let bmax = bs.iter().fold(1f32, |m, v| m.max(v.abs()));
            let bdiff = bo
                .iter()
                .zip(&bs)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            eprintln!("  weights differ by {wdiff:.1e} (largest {wmax:.2}), centred biases by {bdiff:.1e} (largest {bmax:.2})");
            assert!(
                wdiff <= 1e-2 * wmax,
                "l2 {l2}: weights differ by {wdiff} (max {wmax})"
            );
            assert!(
                bdiff <= 1e-2 * bmax,
                "l2 {l2}: biases differ by {bdiff} (max {bmax})"
            );
            // The same predictions, on the training and the test rows; scikit-learn's own
            // predictions agree with its weights as we evaluate them.
            for (name, x, y, want, acc) in [
                (
                    "train",
                    &xtr,
                    &ytr,
                    &train_pred[i * n_train..(i + 1) * n_train],
                    train_acc[i],
                ),
                (
                    "test",
                    &xte,
                    &yte,
                    &test_pred[i * n_test..(i + 1) * n_test],
                    test_acc[i],
                ),
            ] {
                let p_sk = predictions(&sk, x);
                let p_ours = predictions(&ours, x);
                for (j, ((&w, &(s, margin)), &(o, _))) in
                    want.iter().zip(&p_sk).zip(&p_ours).enumerate()
                {
                    // A row within float rounding of a tie is the only allowed difference.
                    if margin > 1e-4 {
                        assert_eq!(w as usize, s, "l2 {l2}: {name} row {j}, scikit-learn's own");
                        assert_eq!(o, s, "l2 {l2}: {name} row {j} (margin {margin})");
                    }
                }
                let a = ours.accuracy(x, y);
                assert!(
                    (a - acc).abs() <= 1.0 / x.len() as f64,
                    "l2 {l2}: {name} accuracy {a} vs scikit-learn's {acc}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn l2_selection_does_not_pick_the_strongest_on_the_demo_subset() -> Result<()> {
    // The demo's 2,000 training and 500 test images at 14x14: selecting by accuracy on a
    // 200-row split tied 1e-1 with 1e-2 and kept 1e-1 (79.8% test; 1e-2 and 1e-3 reach
    // 83.8%). Validation log-loss by 5-fold cross-validation must land inside the grid.
    let (xtr, ytr) = rows(Split::Train, 14, 2000, None)?;
    let (xte, yte) = rows(Split::Test, 14, 500, None)?;
    let cfg = ProbeConfig::default();
    let t0 = std::time::Instant::now();
    let r = probe_features(&xtr, &ytr, &xte, &yte, 10, &cfg)?;
    eprintln!(
        "chosen L2 {:e} ({}), validation loss {:.4}, accuracy {:.2}%, test {:.2}%, {:.1} s; scores {:?}",
        r.l2,
        r.selection.validation.describe(),
        r.val_loss,
        100.0 * r.val_accuracy,
        100.0 * r.test_accuracy,
        t0.elapsed().as_secs_f64(),
        r.selection.scores
    );
    assert_eq!(
        r.selection.validation,
        igpt::eval::probe::Validation::KFold(5)
    );
    assert!(
        (1e-4..=1e-2).contains(&r.l2),
        "chosen L2 {:e}, outside 1e-4..=1e-2",
        r.l2
    );
    assert!(!r.selection.at_edge && r.selection.widened == (0, 0));
    // The choice is the lowest validation loss of the grid.
    let best = r
        .selection
        .scores
        .iter()
        .map(|s| s.val_loss)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(r.val_loss, best);
    assert!(
        r.test_accuracy >= 0.82,
        "test accuracy {:.2}%",
        100.0 * r.test_accuracy
    );
    Ok(())
}
