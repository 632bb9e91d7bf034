//! The dfdx model against HuggingFace ImageGPT, number for number: every model case in
//! the fixture folder (`IGPT_HF_FIXTURES`), imported through `igpt import-hf`'s code path,
//! must reproduce the stored logits, every hidden state and every probe feature within
//! the fixture README's tolerances: 1e-4 in f32, 2e-5 in f64.

use dfdx::prelude::*;
use igpt::io::hf;
use igpt::nn::{cst, Capture, Captures, Float, Gpt, Kernels};
use igpt_tests::{cases_with, Fixture};

fn max_diff(got: &[f64], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - *w as f64).abs())
        .fold(0.0, f64::max)
}

fn check<E: Float>(f: &Fixture, tol: f64, fused: bool) -> usize
where
    Cpu: Kernels<E>,
{
    let json_path = f.path.with_extension("json");
    let json = std::fs::read_to_string(&json_path).unwrap();
    let config = hf::config_from_json(&json).unwrap();
    let ck = hf::import(config, &std::fs::read(&f.path).unwrap()).unwrap();
    let dev = Cpu::seed_from_u64(0);
    let mut gpt: Gpt<E, Cpu> = ck.model(&dev).unwrap();
    gpt.fused = fused;
    let (ishape, ids) = f.i64("input_ids").unwrap();
    let (b, t) = (ishape[0], ishape[1]);
    let ids: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
    let mut caps = Captures::default();
    let capture = Capture {
        hidden: true,
        probe: true,
    };
    let z = gpt.forward::<NoneTape>(&ids, b, true, None, capture, &mut caps);
    let to64 = |v: Vec<E>| -> Vec<f64> { v.into_iter().map(|x| x.to_f64().unwrap()).collect() };
    let mut checked = 0;
    let ty = format!(
        "{}{}",
        std::any::type_name::<E>(),
        if fused { "" } else { " reference" }
    );
    let mut report = |name: &str, got: Vec<f64>| {
        let (_, want) = f.f32(name).unwrap();
        let diff = max_diff(&got, &want);
        println!(
            "{} [{ty}] {name}: max abs diff {diff:.2e} (first {:.6} vs {:.6})",
            f.path.display(),
            got[0],
            want[0]
        );
        assert!(
            diff <= tol,
            "{}: {name} differs by {diff:e} > {tol:e}",
            f.path.display()
        );
        checked += 1;
    };
    for (i, h) in caps.hidden.iter().enumerate() {
        report(&format!("expected.hidden_states.{i}"), to64(h.as_vec()));
    }
    for l in 0..config.layers {
        report(
            &format!("expected.probe_features.{l}"),
            to64(caps.probe[l].as_vec()),
        );
    }
    let logits = if let Some(score) = &ck.params.score {
        // Classifier: mean over all positions (SOS included) of the final norm, times
        // score.weightᵀ.
        let w: Tensor<(usize, usize), E, Cpu> = dev.tensor_from_vec(
            score.data.iter().map(|&x| cst::<E>(x as f64)).collect(),
            (score.rows, score.cols),
        );
        to64(
            z.mean::<_, Axis<1>>()
                .matmul(w.permute::<_, Axes2<1, 0>>())
                .as_vec(),
        )
    } else {
        to64(gpt.logits(z).as_vec())
    };
    let _ = t;
    report("expected.logits", logits);
    checked
}

#[test]
fn every_hf_model_case_matches_in_f32_fused() {
    let cases = cases_with(&["input_ids", "expected.logits", "expected.hidden_states.0"]).unwrap();
    let n: usize = cases.iter().map(|f| check::<f32>(f, 1e-4, true)).sum();
    assert!(n >= 3 * cases.len());
}

#[test]
fn every_hf_model_case_matches_in_f32_reference() {
    let cases = cases_with(&["input_ids", "expected.logits", "expected.hidden_states.0"]).unwrap();
    let n: usize = cases.iter().map(|f| check::<f32>(f, 1e-4, false)).sum();
    assert!(n >= 3 * cases.len());
}

#[test]
fn every_hf_model_case_matches_in_f64() {
    let cases = cases_with(&["input_ids", "expected.logits", "expected.hidden_states.0"]).unwrap();
    let n: usize = cases.iter().map(|f| check::<f64>(f, 2e-5, true)).sum();
    assert!(n >= 3 * cases.len());
}
