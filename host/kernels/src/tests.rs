//! Each vector kernel of every set this CPU runs against igpt-core's portable function,
//! compared bit for bit, on shapes that exercise every remainder (rows not a multiple of
//! the tile, a last group shorter than 32, positions not a multiple of 8 or 16, rows of
//! `16k + 8` values), on extreme int8 values and on NaN / infinite inputs. A set the CPU
//! lacks is skipped with a line saying so; every test also checks (by the thread's
//! kernel-call count) that the vector kernels did run rather than the portable fallback.
use super::*;
use igpt_core::quant::write_qmat;
use rand::{Rng, SeedableRng};

fn rng() -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(7)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The vector sets this CPU runs; prints a skip line for each it lacks.
fn sets(test: &str) -> Vec<KernelSet> {
    let mut run = Vec::new();
    for k in KernelSet::ALL.into_iter().skip(1) {
        if k.supported() {
            run.push(k);
        } else if k.arch() == Some(std::env::consts::ARCH) {
            let why = k.check().err().map(|e| e.to_string()).unwrap_or_default();
            eprintln!("{test}: skipped ({why}; its kernels never run here)");
        }
    }
    run
}

fn hits() -> usize {
    HITS.with(|h| h.get())
}

/// Operations of `set` with no packed matrices (the products then run the portable code).
#[cfg(target_arch = "x86_64")]
fn ops(set: KernelSet) -> FastOps<'static> {
    let p = Box::leak(Box::new(Packed {
        blocks: Vec::new(),
        head: None,
        kernels: set,
    }));
    p.ops()
}

/// `Packed` of `set` holding `m` as every block matrix of layer 0.
fn packed_of(m: &QMat<'_>, set: KernelSet) -> Option<Packed> {
    let pm = PackedMat::new(m, set)?;
    Some(Packed {
        blocks: vec![std::array::from_fn(|_| Some(pm.clone()))],
        head: None,
        kernels: set,
    })
}

fn qmat_bytes(w: &[f32], o: usize, c: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; igpt_core::format::qmat_bytes(o, c)];
    write_qmat(w, o, c, &mut bytes).unwrap();
    bytes
}

/// Both products of `packed` against the portable ones, for `t` rows of `xq`.
fn compare_products(packed: &Packed, m: &QMat<'_>, xq: &[i8], t: usize, what: &str) {
    let mut r = rng();
    let (o, c) = (m.rows, m.cols);
    let g = ck::groups(c);
    let xs: Vec<f32> = (0..t * g).map(|_| r.gen_range(0.001..0.1)).collect();
    for add in [false, true] {
        let init: Vec<f32> = (0..t * o).map(|_| r.gen_range(-1.0..1.0)).collect();
        let before = hits();
        let (mut a, mut b) = (init.clone(), init.clone());
        packed.ops().matmul(0, Mat::Q, &mut a, xq, &xs[..t], m, add);
        ck::matmul_q_ref(&mut b, xq, &xs[..t], m, add);
        assert_eq!(bits(&a), bits(&b), "{what}: matmul add={add}");
        let (mut a, mut b) = (init.clone(), init);
        packed.ops().matmul_grouped(0, &mut a, xq, &xs, m, add);
        ck::matmul_qg(&mut b, xq, &xs, m, add);
        assert_eq!(bits(&a), bits(&b), "{what}: grouped add={add}");
        assert_eq!(
            hits(),
            before + 2,
            "{what}: the vector products did not run"
        );
    }
}

#[test]
fn int8_products_equal_portable() {
    let mut r = rng();
    for set in sets("int8_products_equal_portable") {
        let mut compared = 0;
        for &(o, c) in &[
            (16, 4),
            (48, 36),
            (64, 128),
            (80, 96),
            (128, 100),
            (16, 512),
        ] {
            let w: Vec<f32> = (0..o * c).map(|_| r.gen_range(-1.0..1.0)).collect();
            let bytes = qmat_bytes(&w, o, c);
            let m = QMat::from_bytes(&bytes, o, c).unwrap();
            let packed = packed_of(&m, set).unwrap();
            for t in [1usize, 2, 3, 4, 5, 7, 16] {
                let xq: Vec<i8> = (0..t * c).map(|_| r.gen_range(-127..=127)).collect();
                compare_products(&packed, &m, &xq, t, &format!("{set} o={o} c={c} t={t}"));
                compared += 1;
            }
        }
        assert_eq!(compared, 6 * 7);
        // Shapes the kernels do not take are refused at packing (the portable code runs).
        let bytes = vec![0u8; igpt_core::format::qmat_bytes(15, 8)];
        assert!(PackedMat::new(&QMat::from_bytes(&bytes, 15, 8).unwrap(), set).is_none());
        let bytes = vec![0u8; igpt_core::format::qmat_bytes(16, 6)];
        assert!(PackedMat::new(&QMat::from_bytes(&bytes, 16, 6).unwrap(), set).is_none());
    }
}

#[test]
fn int8_products_are_exact_on_extreme_values() {
    // The largest products: every one ±127·127 with the same sign, and −128 activations
    // (the core's quantizer never makes them, as checked here, but `Ops::matmul` takes any
    // i8): ±128·127 (and ±128·128 with the −128 weights below). Pair sums of up to
    // ±32258 / ±32512 / ±32768 — the limits of a 16-bit pair sum (`vpmaddubsw` would
    // saturate at 32767; `vpmaddwd` and `vpdpbusd` sum into i32).
    assert_eq!(igpt_core::quant::round_q(-1e30), -127);
    assert_eq!(igpt_core::quant::round_q(f32::NEG_INFINITY), -127);
    assert_eq!(igpt_core::quant::round_q(-127.5), -127);
    let (o, c, t) = (32usize, 64usize, 8usize);
    // Rows: all +127, all −127, alternating signs, and ±127 by a pattern.
    let w: Vec<f32> = (0..o * c)
        .map(|i| match (i / c) % 4 {
            0 => 1.0,
            1 => -1.0,
            2 => {
                if i % 2 == 0 {
                    1.0
                } else {
                    -1.0
                }
            }
            _ => {
                if (i * 7) % 3 == 0 {
                    -1.0
                } else {
                    1.0
                }
            }
        })
        .collect();
    let bytes = qmat_bytes(&w, o, c);
    assert!(bytes[o * 4..].iter().all(|&b| b == 127 || b == 0x81));
    let m = QMat::from_bytes(&bytes, o, c).unwrap();
    let xrows: [fn(usize) -> i8; 8] = [
        |_| 127,
        |_| -127,
        |_| -128,
        |i| if i % 2 == 0 { 127 } else { -128 },
        |i| if i % 2 == 0 { -127 } else { 127 },
        |i| if (i / 2) % 2 == 0 { -128 } else { 127 },
        |i| if i % 3 == 0 { 0 } else { -128 },
        |i| ((i * 37) % 256) as u8 as i8,
    ];
    let xq: Vec<i8> = (0..t * c).map(|i| xrows[i / c](i % c)).collect();
    // The i32 sums of two of those rows, by hand.
    let dot = |x: &[i8], wr: &[u8]| ck::dot_i8(x, wr);
    assert_eq!(
        dot(&xq[..c], &bytes[o * 4..o * 4 + c]),
        127 * 127 * c as i32
    );
    assert_eq!(
        dot(&xq[2 * c..3 * c], &bytes[o * 4 + c..o * 4 + 2 * c]),
        128 * 127 * c as i32
    );
    for set in sets("int8_products_are_exact_on_extreme_values") {
        let packed = packed_of(&m, set).unwrap();
        compare_products(&packed, &m, &xq, t, &format!("{set} extremes"));
    }
    // A weight of −128 (only a damaged file has one; the exporter's quantizer writes
    // [−127, 127]): every set takes it exactly.
    let mut damaged = bytes.clone();
    damaged[o * 4 + 5] = 0x80;
    damaged[o * 4 + c + 9] = 0x80;
    damaged[o * 4 + 2 * c..o * 4 + 3 * c].fill(0x80);
    let md = QMat::from_bytes(&damaged, o, c).unwrap();
    assert_eq!(
        dot(&xq[2 * c..3 * c], &damaged[o * 4 + 2 * c..o * 4 + 3 * c]),
        128 * 128 * c as i32
    );
    for set in sets("int8_products_are_exact_on_extreme_values (-128 weights)") {
        let p = packed_of(&md, set).unwrap();
        compare_products(&p, &md, &xq, t, &format!("{set} -128 weights"));
    }
}

// The NEON sets use igpt-core's own functions here: x86-64 sets only.
#[cfg(target_arch = "x86_64")]
#[test]
fn attention_equals_portable() {
    let mut r = rng();
    for set in sets("attention_equals_portable") {
        let mut ran = 0;
        // (24, 24) and (40, 8): head widths only the 8-lane kernel takes.
        for &(d, hd) in &[(64usize, 32usize), (48, 16), (128, 128), (24, 24), (40, 8)] {
            // Every tile height (1-6 rows) and remainders of 8 and 16 positions.
            for &(p0, t) in &[
                (0usize, 1usize),
                (0, 7),
                (0, 37),
                (0, 5),
                (0, 3),
                (0, 10),
                (5, 1),
                (20, 13),
                (3, 6),
                (4, 4),
                (1, 2),
            ] {
                for causal in [true, false] {
                    if !causal && p0 > 0 {
                        continue;
                    }
                    let span = p0 + t;
                    let q: Vec<f32> = (0..t * d).map(|_| r.gen_range(-2.0..2.0)).collect();
                    let k: Vec<f32> = (0..span * d).map(|_| r.gen_range(-2.0..2.0)).collect();
                    let v: Vec<f32> = (0..span * d).map(|_| r.gen_range(-2.0..2.0)).collect();
                    let a = AttnArgs {
                        q: &q,
                        keys: &k,
                        vals: &v,
                        p0,
                        causal,
                        width: d,
                        head_dim: hd,
                        scale: 1.0 / (hd as f32).sqrt(),
                    };
                    let mut sc = vec![0f32; span * (hd + 1)];
                    let (mut fast, mut plain) = (vec![9f32; t * d], vec![7f32; t * d]);
                    let before = hits();
                    ops(set).attention(&mut fast, &a, &mut sc);
                    ran += hits() - before;
                    ck::attention(&mut plain, &a, &mut sc);
                    let what = format!("{set} d={d} hd={hd} p0={p0} t={t} causal={causal}");
                    assert_eq!(bits(&fast), bits(&plain), "{what}");
                }
            }
        }
        // AVX-512 takes head widths of 16..=128 in steps of 16, the 8-lane kernel all
        // multiples of 8.
        let want = if set == KernelSet::Avx512 { 3 } else { 5 };
        assert_eq!(ran, want * 17, "{set}: vector attention calls");
    }
}

// The NEON sets use igpt-core's own functions here: x86-64 sets only.
#[cfg(target_arch = "x86_64")]
#[test]
fn attention_with_nan_and_infinite_scores_equals_portable() {
    // Damaged scales can make keys NaN or infinite: the softmax must skip NaN in its max
    // as `f32::max` does, and `fast_exp` must keep NaN.
    let mut r = rng();
    let (d, hd, t) = (32usize, 16usize, 21usize);
    for set in sets("attention_with_nan_and_infinite_scores_equals_portable") {
        for case in 0..4 {
            let q: Vec<f32> = (0..t * d).map(|_| r.gen_range(-2.0..2.0)).collect();
            let mut k: Vec<f32> = (0..t * d).map(|_| r.gen_range(-2.0..2.0)).collect();
            let v: Vec<f32> = (0..t * d).map(|_| r.gen_range(-2.0..2.0)).collect();
            match case {
                0 => k[3 * d + 1] = f32::NAN,
                1 => k[5 * d + 2] = f32::INFINITY,
                2 => k.iter_mut().step_by(d).for_each(|x| *x = f32::NAN),
                _ => {
                    k[d] = f32::NEG_INFINITY;
                    k[7 * d + 17] = f32::NAN;
                }
            }
            let a = AttnArgs {
                q: &q,
                keys: &k,
                vals: &v,
                p0: 0,
                causal: true,
                width: d,
                head_dim: hd,
                scale: 0.25,
            };
            let mut sc = vec![0f32; t * (hd + 1)];
            let (mut fast, mut plain) = (vec![0f32; t * d], vec![0f32; t * d]);
            ops(set).attention(&mut fast, &a, &mut sc);
            ck::attention(&mut plain, &a, &mut sc);
            // NaN payloads aside, the same values: NaN exactly where the core has NaN.
            for (i, (x, y)) in fast.iter().zip(&plain).enumerate() {
                assert!(
                    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                    "{set} case {case} [{i}]: {x} vs {y}"
                );
            }
            assert!(plain.iter().any(|x| x.is_nan()) || case == 1);
        }
    }
}

// The NEON sets use igpt-core's own functions here: x86-64 sets only.
#[cfg(target_arch = "x86_64")]
#[test]
fn norm_quantize_and_gelu_equal_portable() {
    let mut r = rng();
    for set in sets("norm_quantize_and_gelu_equal_portable") {
        // 48 = 3·16; 40 = 2·16 + 8 (the 8-lane kernels' half-chunk; AVX-512 falls back).
        for d in [48usize, 40, 128] {
            for t in [37usize, 16, 3] {
                let gain: Vec<u8> = (0..d)
                    .flat_map(|_| r.gen_range(0.3f32..1.5).to_le_bytes())
                    .collect();
                let mut x: Vec<f32> = (0..t * d).map(|_| r.gen_range(-3.0..3.0)).collect();
                // A zero row (scale 0) and a row with one huge value.
                x[d..2 * d].fill(0.0);
                x[2 * d + 3] = 1e6;
                let run = |set: KernelSet| {
                    let (mut tmp, mut q, mut s) =
                        (vec![0f32; t * d], vec![0i8; t * d], vec![0f32; t]);
                    ops(set).norm_quant(&x, d, &gain, &mut tmp, &mut q, &mut s);
                    let (mut q2, mut s2) = (vec![0i8; t * d], vec![0f32; t]);
                    ops(set).quantize(&x, d, &mut q2, &mut s2);
                    (bits(&tmp), q, bits(&s), q2, bits(&s2))
                };
                let before = hits();
                let fast = run(set);
                let want = if set == KernelSet::Avx512 && d % 16 != 0 {
                    0
                } else {
                    2
                };
                assert_eq!(hits() - before, want, "{set} d={d}: vector calls");
                assert_eq!(fast, run(KernelSet::Portable), "{set} norm d={d} t={t}");
            }
        }
        // Groups of 32 sixteen / eight at a time and one at a time.
        for (t, m) in [(5usize, 64usize), (3, 512), (7, 96), (1, 32), (2, 288)] {
            let mut h: Vec<f32> = (0..t * m).map(|_| r.gen_range(-6.0..6.0)).collect();
            h[..32].fill(0.0);
            h[(t * m / 2 + 8).min(t * m - 2)] = 3e4;
            h[t * m - 1] = -7e3;
            let gelu = |set: KernelSet| {
                let mut h = h.clone();
                let (mut q, mut s) = (vec![0i8; t * m], vec![0f32; t * ck::groups(m)]);
                ops(set).gelu_quant(&mut h, m, &mut q, &mut s);
                (bits(&h), q, bits(&s))
            };
            let before = hits();
            let fast = gelu(set);
            assert_eq!(hits() - before, 1, "{set}: vector gelu");
            assert_eq!(fast, gelu(KernelSet::Portable), "{set} gelu t={t} m={m}");
        }
    }
}

// The NEON sets use igpt-core's own functions here: x86-64 sets only.
#[cfg(target_arch = "x86_64")]
#[test]
fn quantizers_handle_nan_and_infinity_as_the_core() {
    // NaN quantizes to 0 and is skipped by the row maximum; an infinite value makes the
    // scale infinite and every value 0 (`v · 0`, NaN for the infinity itself, so 0).
    let d = 48usize;
    let mut x: Vec<f32> = (0..4 * d).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    x[5] = f32::NAN;
    x[d + 7] = f32::INFINITY;
    x[2 * d + 9] = f32::NEG_INFINITY;
    x[3 * d..4 * d].fill(f32::NAN);
    let mut h: Vec<f32> = x.iter().cycle().take(2 * 96).copied().collect();
    h[33] = f32::NAN;
    for set in sets("quantizers_handle_nan_and_infinity_as_the_core") {
        let run = |set: KernelSet| {
            let (mut q, mut s) = (vec![0i8; 4 * d], vec![0f32; 4]);
            ops(set).quantize(&x, d, &mut q, &mut s);
            let mut hh = h.clone();
            let (mut hq, mut hs) = (vec![0i8; h.len()], vec![0f32; h.len() / 32]);
            ops(set).gelu_quant(&mut hh, 96, &mut hq, &mut hs);
            let nan_eq = |v: Vec<f32>| {
                v.into_iter()
                    .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
                    .collect::<Vec<_>>()
            };
            (q, bits(&s), nan_eq(hh), hq, nan_eq(hs))
        };
        assert_eq!(run(set), run(KernelSet::Portable), "{set}");
    }
}

// The NEON sets use igpt-core's own functions here: x86-64 sets only.
#[cfg(target_arch = "x86_64")]
#[test]
fn exp_and_lane_sum_twins_are_exact() {
    let mut xs: Vec<f32> = (0..20_000).map(|i| -100.0 + i as f32 * 0.0097).collect();
    xs.extend([
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        0.0,
        -87.0,
        88.0,
        1e-40,
    ]);
    let plain: Vec<f32> = xs.iter().map(|&x| ck::fast_exp(x)).collect();
    assert!(plain[20_000].is_nan());
    let mut r = rng();
    let lanes: Vec<[f32; 16]> = (0..100)
        .map(|_| std::array::from_fn(|_| r.gen_range(-1e3..1e3)))
        .collect();
    for set in sets("exp_and_lane_sum_twins_are_exact") {
        use std::arch::x86_64::*;
        let mut fast = Vec::with_capacity(xs.len());
        let mut sums = Vec::new();
        match set {
            KernelSet::Avx512 => {
                for ch in xs.chunks(16) {
                    let mut buf = [0f32; 16];
                    buf[..ch.len()].copy_from_slice(ch);
                    // SAFETY: AVX-512 F present (the set is supported); `buf` holds 16.
                    unsafe {
                        let v = avx512::exp16(_mm512_loadu_ps(buf.as_ptr()));
                        _mm512_storeu_ps(buf.as_mut_ptr(), v);
                    }
                    fast.extend_from_slice(&buf[..ch.len()]);
                }
                for l in &lanes {
                    // SAFETY: as above.
                    sums.push(unsafe { avx512::tree_sum(_mm512_loadu_ps(l.as_ptr())) });
                }
            }
            _ => {
                for ch in xs.chunks(8) {
                    let mut buf = [0f32; 8];
                    buf[..ch.len()].copy_from_slice(ch);
                    // SAFETY: AVX2 present (the set is supported); `buf` holds 8.
                    unsafe {
                        let v = avx2::exp8(_mm256_loadu_ps(buf.as_ptr()));
                        _mm256_storeu_ps(buf.as_mut_ptr(), v);
                    }
                    fast.extend_from_slice(&buf[..ch.len()]);
                }
                for l in &lanes {
                    // SAFETY: as above; `l` holds 16.
                    sums.push(unsafe {
                        avx2::tree_sum(
                            _mm256_loadu_ps(l.as_ptr()),
                            _mm256_loadu_ps(l.as_ptr().add(8)),
                        )
                    });
                }
            }
        }
        for (i, (a, b)) in fast.iter().zip(&plain).enumerate() {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{set} exp({}) = {a}, core {b}",
                xs[i]
            );
        }
        let want: Vec<f32> = lanes.iter().map(|l| ck::sum_f32(l)).collect();
        assert_eq!(bits(&sums), bits(&want), "{set} tree sums");
    }
}

#[test]
fn kernel_sets_parse_and_refuse_with_one_line() {
    assert_eq!(KernelSet::choose(None), Ok(KernelSet::best()));
    assert_eq!(KernelSet::choose(Some(" ")), Ok(KernelSet::best()));
    assert_eq!(KernelSet::choose(Some("portable")), Ok(KernelSet::Portable));
    assert!(KernelSet::best().supported());
    assert_eq!(KernelSet::available()[0], KernelSet::Portable);
    // A set of the other architecture is refused naming it.
    let (other, arch) = if cfg!(target_arch = "aarch64") {
        ("avx2", "x86_64")
    } else {
        ("neon", "aarch64")
    };
    let e = KernelSet::choose(Some(other)).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("IGPT_KERNELS={other}: ")) && e.contains(arch),
        "{e}"
    );
    let e = KernelSet::choose(Some("sse9")).unwrap_err().to_string();
    assert!(
        e.contains("unknown kernel set") && e.contains("avxvnni") && e.contains("neondot"),
        "{e}"
    );
    for k in KernelSet::ALL {
        assert_eq!(
            KernelSet::parse(&k.name().to_uppercase()).is_ok(),
            k.supported()
        );
        let r = KernelSet::choose(Some(k.name()));
        if k.supported() {
            assert_eq!(r, Ok(k));
        } else {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("lacks") && !e.contains('\n'), "{e}");
            assert!(k
                .check()
                .unwrap_err()
                .to_string()
                .starts_with("kernel set "));
            eprintln!("refused as expected: {e}");
        }
    }
    let best = KernelSet::best();
    assert!(KernelSet::ALL.iter().all(|k| !k.supported() || *k <= best));
}

/// A committed model file, by its path from the repository root.
fn committed(path: &str) -> Vec<u8> {
    let full = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

#[test]
fn whole_models_equal_portable() {
    // The two committed models: the firmware's (d 128, head width 32, 4 layers) and the
    // shipped 6x192 (head width 32), through the dispatched forward of every set this
    // CPU runs: next-pixel logits, KV-cached steps and classifications.
    let mut r = rng();
    let mut compared = 0;
    for path in [
        "firmware-examples/models/fm-fw.igpt",
        "models/fm-ar-6x192.igpt",
    ] {
        let bytes = committed(path);
        let model = Model::parse(&bytes).unwrap();
        let c = *model.config();
        assert!(model.has_head() && model.probe().is_some(), "{path}");
        for set in sets("whole_models_equal_portable") {
            let packed = Packed::with_kernels(&model, set).unwrap();
            let img: Vec<u16> = (0..c.seq_len())
                .map(|_| r.gen_range(0..c.vocab as u16))
                .collect();
            let before = hits();
            let n = check_against_portable(&model, &packed, &img)
                .unwrap_or_else(|e| panic!("{path}: {e:#}"));
            assert!(
                hits() > before,
                "{set} {path}: the vector kernels did not run"
            );
            assert_eq!(n, 2 * c.seq_len() + 1);
            compared += 1;
            eprintln!(
                "{set} {path}: logits, {} KV-cached steps and the classification equal the portable core",
                c.seq_len()
            );
        }
    }
    eprintln!("whole_models_equal_portable: {compared} set x model comparisons");
}
