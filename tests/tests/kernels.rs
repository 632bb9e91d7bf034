//! Every fused CPU kernel against its plain dfdx twin: forward values and gradients of
//! every input, with the max abs difference printed; then the whole model and AdamW.

use dfdx::prelude::*;
use igpt::nn::kernels;
use igpt::nn::{self as model, Gpt, Objective};
use igpt::train::{self, AdamConfig, AdamW};
use igpt_core::Config;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type T3 = Tensor<(usize, usize, usize), f32, Cpu>;

fn rand_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn close(what: &str, fused: &[f32], reference: &[f32], tol: f32) {
    let d = max_diff(fused, reference);
    let scale = reference.iter().fold(0f32, |m, x| m.max(x.abs()));
    println!("{what}: max abs diff {d:.2e} (values up to {scale:.2e})");
    assert!(d <= tol * scale.max(1.0), "{what}: {d} > {tol} x {scale}");
}

#[test]
fn rmsnorm_matches_reference() {
    let dev = Cpu::seed_from_u64(0);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (b, t, c) = (3, 7, 24);
    let x: T3 = dev.tensor_from_vec(rand_vec(&mut rng, b * t * c, 2.0), (b, t, c));
    let g: Tensor<(usize, usize), f32, Cpu> =
        dev.tensor_from_vec(rand_vec(&mut rng, c, 1.5), (1, c));
    let r: T3 = dev.tensor_from_vec(rand_vec(&mut rng, b * t * c, 1.0), (b, t, c));
    let go = |fused: bool| {
        let xt = x.clone().leaky_traced();
        let out = if fused {
            kernels::rmsnorm(xt, &g)
        } else {
            model::rmsnorm(xt, &g)
        };
        let ov = out.retaped::<NoneTape>().as_vec();
        let grads = (out * r.clone()).sum().backward();
        (ov, grads.get(&x).as_vec(), grads.get(&g).as_vec())
    };
    let (fo, fx, fg) = go(true);
    let (ro, rx, rg) = go(false);
    close("rmsnorm out", &fo, &ro, 1e-5);
    close("rmsnorm dx", &fx, &rx, 1e-5);
    close("rmsnorm dg", &fg, &rg, 1e-5);
}

#[test]
fn linear_matches_reference() {
    let dev = Cpu::seed_from_u64(0);
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let (b, t, i, o) = (2, 5, 12, 20);
    let x: T3 = dev.tensor_from_vec(rand_vec(&mut rng, b * t * i, 1.0), (b, t, i));
    let r: T3 = dev.tensor_from_vec(rand_vec(&mut rng, b * t * o, 1.0), (b, t, o));
    for transposed in [false, true] {
        let shape = if transposed { (o, i) } else { (i, o) };
        let w: Tensor<(usize, usize), f32, Cpu> =
            dev.tensor_from_vec(rand_vec(&mut rng, i * o, 1.0), shape);
        let go = |fused: bool| {
            let xt = x.clone().leaky_traced();
            let out = if fused {
                kernels::linear(xt, &w, transposed)
            } else {
                model::linear(xt, &w, transposed)
            };
            let ov = out.retaped::<NoneTape>().as_vec();
            let grads = (out * r.clone()).sum().backward();
            (ov, grads.get(&x).as_vec(), grads.get(&w).as_vec())
        };
        let (fo, fx, fw) = go(true);
        let (ro, rx, rw) = go(false);
        let tag = if transposed { "x·Wᵀ" } else { "x·W" };
        close(&format!("linear {tag} out"), &fo, &ro, 1e-5);
        close(&format!("linear {tag} dx"), &fx, &rx, 1e-5);
        close(&format!("linear {tag} dW"), &fw, &rw, 1e-5);
    }
}

type W = Tensor<(usize, usize), f32, Cpu>;

#[test]
fn mlp_matches_reference() {
    let dev = Cpu::seed_from_u64(0);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (b, t, c) = (2, 5, 12);
    let m: T3 = dev.tensor_from_vec(rand_vec(&mut rng, b * t * c, 2.0), (b, t, c));
    let fc: W = dev.tensor_from_vec(rand_vec(&mut rng, c * 4 * c, 1.0), (c, 4 * c));
    let pr: W = dev.tensor_from_vec(rand_vec(&mut rng, 4 * c * c, 0.5), (4 * c, c));
    let r: T3 = dev.tensor_from_vec(rand_vec(&mut rng, b * t * c, 1.0), (b, t, c));
    let go = |fused: bool| {
        let mt = m.clone().leaky_traced();
        let out = if fused {
            kernels::mlp(mt, &fc, &pr)
        } else {
            model::mlp(mt, &fc, &pr)
        };
        let ov = out.retaped::<NoneTape>().as_vec();
        let grads = (out * r.clone()).sum().backward();
        (
            ov,
            grads.get(&m).as_vec(),
            grads.get(&fc).as_vec(),
            grads.get(&pr).as_vec(),
        )
    };
    let (fo, fm, ff, fp) = go(true);
    let (ro, rm, rf, rp) = go(false);
    close("mlp out", &fo, &ro, 1e-5);
    close("mlp dm", &fm, &rm, 1e-5);
    close("mlp dW_fc", &ff, &rf, 1e-5);
    close("mlp dW_proj", &fp, &rp, 1e-5);
}

#[test]
fn self_attention_matches_reference() {
    let dev = Cpu::seed_from_u64(0);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // 150 positions: two full row blocks of 64 and a partial one.
    for (causal, t) in [(true, 9), (false, 9), (true, 150), (false, 150)] {
        let (b, h, hd) = (2, 3, 4);
        let c = h * hd;
        let a: T3 = dev.tensor_from_vec(rand_vec(&mut rng, b * t * c, 1.5), (b, t, c));
        let r: T3 = dev.tensor_from_vec(rand_vec(&mut rng, b * t * c, 1.0), (b, t, c));
        let ws: Vec<W> = (0..3)
            .map(|_| dev.tensor_from_vec(rand_vec(&mut rng, c * c, 0.6), (c, c)))
            .collect();
        let go = |fused: bool| {
            let at = a.clone().leaky_traced();
            let out = if fused {
                kernels::self_attention(at, &ws[0], &ws[1], &ws[2], h, causal)
            } else {
                model::self_attention(at, &ws[0], &ws[1], &ws[2], h, causal)
            };
            let ov = out.retaped::<NoneTape>().as_vec();
            let grads = (out * r.clone()).sum().backward();
            let dws: Vec<Vec<f32>> = ws.iter().map(|w| grads.get(w).as_vec()).collect();
            (ov, grads.get(&a).as_vec(), dws)
        };
        let (fo, fa, fw) = go(true);
        let (ro, ra, rw) = go(false);
        let tag = format!("{}, T {t}", if causal { "causal" } else { "bidirectional" });
        close(&format!("self_attention ({tag}) out"), &fo, &ro, 1e-5);
        close(&format!("self_attention ({tag}) da"), &fa, &ra, 1e-5);
        for (i, n) in ["dWq", "dWk", "dWv"].iter().enumerate() {
            close(&format!("self_attention ({tag}) {n}"), &fw[i], &rw[i], 1e-5);
        }
    }
}

#[test]
fn head_cross_entropy_matches_reference() {
    let dev = Cpu::seed_from_u64(0);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (b, t, c, v) = (2, 6, 8, 17);
    let z: T3 = dev.tensor_from_vec(rand_vec(&mut rng, b * t * c, 2.0), (b, t, c));
    let w: Tensor<(usize, usize), f32, Cpu> =
        dev.tensor_from_vec(rand_vec(&mut rng, v * c, 1.0), (v, c));
    let target: Vec<usize> = (0..b * t).map(|_| rng.gen_range(0..v)).collect();
    let weight: Vec<f32> = (0..b * t)
        .map(|i| if i % 3 == 0 { 0.0 } else { 0.1 })
        .collect();
    let go = |fused: bool| {
        let zt = z.clone().leaky_traced();
        let l = if fused {
            kernels::head_cross_entropy(zt, &w, &target, &weight)
        } else {
            model::cross_entropy(model::linear(zt, &w, true), &target, &weight)
        };
        let lv = l.retaped::<NoneTape>().as_vec();
        let grads = (l * 1.7f32).backward();
        (lv, grads.get(&z).as_vec(), grads.get(&w).as_vec())
    };
    let (fl, fz, fw) = go(true);
    let (rl, rz, rw) = go(false);
    close("head_cross_entropy loss", &fl, &rl, 1e-6);
    close("head_cross_entropy dz", &fz, &rz, 1e-5);
    close("head_cross_entropy dW", &fw, &rw, 1e-5);
}

/// The whole model: loss and every parameter's gradient, fused against reference; then
/// one AdamW step from identical parameters and gradients, fused update against the
/// tensor-op update (with clipping and weight decay active).
#[test]
fn model_and_adamw_fused_match_reference() {
    let config = Config::new(16, 4, 32, 4, 2).unwrap();
    let dev = Cpu::seed_from_u64(0);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for objective in [Objective::Ar, Objective::Bert] {
        let mut a = Gpt::<f32, Cpu>::init(&dev, config, None, 9);
        // A non-zero head, so that every gradient is non-zero.
        a.params.lm_head = dev.tensor_from_vec(rand_vec(&mut rng, 16 * 32, 0.1), (16, 32));
        let mut b = a.clone();
        b.fused = false;
        let imgs: Vec<Vec<u16>> = (0..3)
            .map(|_| (0..16).map(|_| rng.gen_range(0..16)).collect())
            .collect();
        let refs: Vec<&[u16]> = imgs.iter().map(|v| v.as_slice()).collect();
        let batch = train::make_batch(&refs, config.sos(), objective, &mut rng);
        let la = train::loss::<f32, Cpu, OwnedTape<f32, Cpu>>(&a, &batch);
        let lb = train::loss::<f32, Cpu, OwnedTape<f32, Cpu>>(&b, &batch);
        close(
            &format!("{objective:?} model loss"),
            &la.retaped::<NoneTape>().as_vec(),
            &lb.retaped::<NoneTape>().as_vec(),
            1e-6,
        );
        let (ga, gb) = (la.backward(), lb.backward());
        let mut worst = 0f32;
        for ((name, pa), (_, pb)) in a.params.iter().zip(b.params.iter()) {
            let (x, y) = (ga.get(pa).as_vec(), gb.get(pb).as_vec());
            let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = max_diff(&x, &y);
            assert!(scale > 0.0, "{objective:?} {name}: zero gradient");
            assert!(
                d <= 1e-4 * scale.max(1e-3),
                "{objective:?} {name}: grad diff {d} (scale {scale})"
            );
            worst = worst.max(d);
        }
        println!(
            "{objective:?}: every parameter gradient, fused vs reference: max abs diff {worst:.2e}"
        );

        // AdamW: the same parameters and the same gradients into both updates.
        let cfg = AdamConfig {
            weight_decay: 0.1,
            clip: 0.05,
            ..AdamConfig::default()
        };
        let (mut oa, mut ob) = (AdamW::new(&a.params, cfg), AdamW::new(&b.params, cfg));
        let mut g1 = gb.clone();
        let mut g2 = gb;
        let na = oa.update(&mut a.params, &mut g1, 1e-2, |_| 1.0, a.fused);
        let nb = ob.update(&mut b.params, &mut g2, 1e-2, |_| 1.0, b.fused);
        assert!((na - nb).abs() <= 1e-6 * nb, "grad norms {na} vs {nb}");
        assert!(nb > cfg.clip, "clipping is exercised");
        let mut worst = 0f32;
        for ((name, pa), (_, pb)) in a.params.iter().zip(b.params.iter()) {
            let d = max_diff(&pa.as_vec(), &pb.as_vec());
            assert!(
                d < 1e-6,
                "{objective:?} {name}: parameters after AdamW differ by {d}"
            );
            worst = worst.max(d);
        }
        let mut worst_m = 0f32;
        for (((_, ma), (_, mb)), ((_, va), (_, vb))) in
            oa.m.iter()
                .zip(ob.m.iter())
                .zip(oa.v.iter().zip(ob.v.iter()))
        {
            worst_m = worst_m.max(max_diff(&ma.as_vec(), &mb.as_vec()));
            worst_m = worst_m.max(max_diff(&va.as_vec(), &vb.as_vec()));
        }
        assert!(worst_m < 1e-7);
        println!("{objective:?}: AdamW fused vs reference: parameters max abs diff {worst:.2e}, moments {worst_m:.2e}");
    }
}
