//! `igpt export-hf` against HuggingFace ImageGPT's own files, both ways:
//!
//! - every fixture model (HF's `state_dict()` as safetensors), imported and exported
//!   again, gives back HF's tensors bit for bit, under HF's names and shapes (the fused
//!   `c_attn`, the `Conv1D` `[in, out]` layout, the zero biases), and HF's config;
//! - the exported files, imported again, reproduce the fixtures' logits (1e-4, the
//!   fixture README's f32 tolerance);
//! - a checkpoint of this project (RGB or grey palette, with or without a class head)
//!   survives export then import exactly, weights in F32, F16 or BF16.

use dfdx::prelude::*;
use igpt::io::checkpoint::Checkpoint;
use igpt::io::{hf, hf_export};
use igpt::nn::{cst, Capture, Captures, Gpt};
use igpt_core::{Config, Palette};
use igpt_tests::{cases_with, Fixture};
use rand::{Rng, SeedableRng};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

/// The fixture's model tensors: everything but the inputs and expected outputs.
fn model_tensor_names(f: &Fixture) -> Vec<String> {
    let mut n: Vec<String> = f
        .names()
        .into_iter()
        .filter(|n| n != "input_ids" && !n.starts_with("expected."))
        .collect();
    n.sort();
    n
}

fn import_fixture(f: &Fixture) -> Checkpoint {
    let json = std::fs::read_to_string(f.path.with_extension("json")).unwrap();
    let config = hf::config_from_json(&json).unwrap();
    hf::import(config, &std::fs::read(&f.path).unwrap()).unwrap()
}

fn model_cases() -> Vec<Fixture> {
    cases_with(&["input_ids", "expected.logits", "transformer.wte.weight"]).unwrap()
}

#[test]
fn exported_fixtures_are_hf_tensors_bit_for_bit() {
    let cases = model_cases();
    for f in &cases {
        let ck = import_fixture(f);
        let files = hf_export::export(&ck).unwrap();
        let st = SafeTensors::deserialize(&files.weights).unwrap();
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        assert_eq!(names, model_tensor_names(f), "{}", f.path.display());
        for name in &names {
            let (want_shape, want) = f.f32(name).unwrap();
            let t = st.tensor(name).unwrap();
            assert_eq!(t.dtype(), Dtype::F32, "{name}");
            assert_eq!(t.shape(), &want_shape[..], "{}: {name}", f.path.display());
            let got: Vec<u32> = t
                .data()
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let want: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
            assert!(got == want, "{}: {name} differs", f.path.display());
        }
        // The config gives back the shape, and names HF's class for the model's kind.
        assert_eq!(hf::config_from_json(&files.config).unwrap(), ck.config);
        let want_class = if ck.params.score.is_some() {
            "\"ImageGPTForImageClassification\""
        } else {
            "\"ImageGPTForCausalImageModeling\""
        };
        assert!(files.config.contains(want_class), "{}", files.config);
        assert!(files.preprocessor.is_none(), "no palette, no preprocessor");
        println!("{}: {} tensors identical", f.path.display(), names.len());
    }
}

/// Logits of a checkpoint on the fixture's inputs, as HF computes them.
fn logits(ck: &Checkpoint, f: &Fixture) -> Vec<f32> {
    let dev = Cpu::seed_from_u64(0);
    let gpt: Gpt<f32, Cpu> = ck.model(&dev).unwrap();
    let (shape, ids) = f.i64("input_ids").unwrap();
    let ids: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
    let z = gpt.forward::<NoneTape>(
        &ids,
        shape[0],
        true,
        None,
        Capture::default(),
        &mut Captures::default(),
    );
    match &ck.params.score {
        // Classifier: mean over all positions of the final norm, times score.weightᵀ.
        Some(score) => {
            let w: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(
                score.data.iter().map(|&x| cst::<f32>(x as f64)).collect(),
                (score.rows, score.cols),
            );
            z.mean::<_, Axis<1>>()
                .matmul(w.permute::<_, Axes2<1, 0>>())
                .as_vec()
        }
        None => gpt.logits(z).as_vec(),
    }
}

#[test]
fn reimported_exports_reproduce_the_hf_logits() {
    let dir = tempfile::tempdir().unwrap();
    for f in &model_cases() {
        let out = dir.path().join(f.path.file_stem().unwrap());
        hf_export::export(&import_fixture(f))
            .unwrap()
            .write(&out)
            .unwrap();
        let ck =
            hf::import_files(&out.join("config.json"), &out.join("model.safetensors")).unwrap();
        let got = logits(&ck, f);
        let (_, want) = f.f32("expected.logits").unwrap();
        assert_eq!(got.len(), want.len());
        let diff = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0f32, f32::max);
        println!(
            "{}: logits max abs diff {diff:.2e} (first {:.6} vs {:.6})",
            f.path.display(),
            got[0],
            want[0]
        );
        assert!(
            diff <= 1e-4,
            "{}: logits differ by {diff:e}",
            f.path.display()
        );
    }
}

/// A seeded checkpoint with non-trivial weights everywhere (the heads included).
fn seeded(palette: Palette, classes: Option<usize>, seed: u64) -> Checkpoint {
    let config = Config::new(palette.len(), 4, 32, 4, 2).unwrap();
    let dev = Cpu::seed_from_u64(seed);
    let gpt: Gpt<f32, Cpu> = Gpt::init(&dev, config, classes, seed);
    let mut ck = Checkpoint::from_model(&gpt, Some(palette));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (_, m) in ck.params.iter_mut() {
        for x in &mut m.data {
            *x += rng.gen_range(-0.5f32..0.5);
        }
    }
    ck
}

fn rgb_palette(k: usize, seed: u64) -> Palette {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<u8> = (0..k * 3).map(|_| rng.gen()).collect();
    Palette::new(3, &centres).unwrap()
}

fn grey_palette(k: usize) -> Palette {
    let centres: Vec<u8> = (0..k).map(|i| (i * 255 / (k - 1)) as u8).collect();
    Palette::new(1, &centres).unwrap()
}

/// Export to a folder, then import it as `igpt import-hf --dir` does.
fn round_trip(ck: &Checkpoint, dir: &std::path::Path) -> Checkpoint {
    hf_export::export(ck).unwrap().write(dir).unwrap();
    let mut back =
        hf::import_files(&dir.join("config.json"), &dir.join("model.safetensors")).unwrap();
    back.palette = Some(hf::palette_file(&dir.join("preprocessor_config.json")).unwrap());
    back
}

#[test]
fn export_then_import_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("rgb lm", seeded(rgb_palette(512, 1), None, 1)),
        ("grey lm", seeded(grey_palette(16), None, 2)),
        ("rgb classifier", seeded(rgb_palette(40, 3), Some(7), 3)),
        ("named classifier", {
            let mut ck = seeded(grey_palette(8), Some(3), 4);
            ck.classes = Some(vec!["coat".into(), "bag".into(), "ankle boot".into()]);
            ck
        }),
    ];
    for (what, ck) in &cases {
        let back = round_trip(ck, &dir.path().join(what.replace(' ', "-")));
        assert_eq!(back.config, ck.config, "{what}");
        assert_eq!(back.palette, ck.palette, "{what}: palette");
        assert!(back.params == ck.params, "{what}: weights differ");
        // The checkpoint file written from it is the one written from the original.
        assert_eq!(back.to_bytes().unwrap(), ck.to_bytes().unwrap(), "{what}");
    }
    // A BERT model is refused: HF's ImageGPT would run it causally.
    let mut bert = cases[0].1.clone();
    let pretrain = igpt::io::meta::PretrainArgs {
        data: "data".into(),
        model: bert.config,
        objective: igpt::nn::Objective::Bert,
        steps: 1,
        batch: 1,
        lr: 1e-3,
        warmup: 0,
        adam: Default::default(),
        seed: 0,
        eval_every: 1,
        val_images: 0,
        train_images: 0,
    };
    bert.pretrain = Some(pretrain);
    let err = hf_export::export(&bert).unwrap_err().to_string();
    assert!(err.contains("BERT"), "{err}");
}

/// Encodes f32 values that are exactly representable in `dtype` (F16 normals and zero,
/// or BF16) as that dtype.
fn narrow(values: &[f32], dtype: Dtype) -> Vec<u8> {
    values
        .iter()
        .map(|&x| {
            let b = x.to_bits();
            let h = match dtype {
                Dtype::BF16 => (b >> 16) as u16,
                _ if x == 0.0 => (b >> 16) as u16 & 0x8000,
                _ => {
                    let exp = (b >> 23) & 0xff;
                    (((b >> 16) & 0x8000) | ((exp - 112) << 10) | ((b >> 13) & 0x3ff)) as u16
                }
            };
            assert_eq!(
                match dtype {
                    Dtype::BF16 => hf::bf16_to_f32(h),
                    _ => hf::f16_to_f32(h),
                }
                .to_bits(),
                b,
                "{x} is not exact in {dtype:?}"
            );
            h.to_le_bytes()
        })
        .flat_map(|b| b.into_iter())
        .collect()
}

/// The same safetensors file with every tensor in `dtype`.
fn rewrite(weights: &[u8], dtype: Dtype) -> Vec<u8> {
    let st = SafeTensors::deserialize(weights).unwrap();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let v: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, t.shape().to_vec(), narrow(&v, dtype))
        })
        .collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn half_precision_weights_import_exactly() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for dtype in [Dtype::F16, Dtype::BF16] {
        let mut ck = seeded(grey_palette(16), Some(3), 5);
        // Values every dtype holds exactly: f16 normals in [2^-10, 2^5) and their negatives.
        for (_, m) in ck.params.iter_mut() {
            for x in &mut m.data {
                let bits: u16 = (rng.gen_range(5u16..20) << 10) | rng.gen_range(0u16..1024);
                let v = hf::f16_to_f32(bits);
                *x = if rng.gen() { v } else { -v };
                if dtype == Dtype::BF16 {
                    *x = hf::bf16_to_f32((x.to_bits() >> 16) as u16);
                }
            }
        }
        let files = hf_export::export(&ck).unwrap();
        let narrowed = rewrite(&files.weights, dtype);
        assert!(narrowed.len() < files.weights.len() * 6 / 10, "{dtype:?}");
        let back = hf::import(ck.config, &narrowed).unwrap();
        assert!(back.params == ck.params, "{dtype:?}: weights differ");
    }
}

/// HF's clusters (`clusters_u8 / 127.5 - 1` in f32, from the palette fixture) read back
/// as exactly HF's colours, and the clusters export-hf writes are HF's f32 values bit for
/// bit.
#[test]
fn clusters_match_hf_in_both_directions() {
    let f = &cases_with(&["clusters", "clusters_u8"]).unwrap()[0];
    let (_, want_u8) = f.u8("clusters_u8").unwrap();
    let (_, clusters) = f.f32("clusters").unwrap();
    let rows: Vec<String> = clusters
        .chunks_exact(3)
        .map(|c| format!("[{}, {}, {}]", c[0], c[1], c[2]))
        .collect();
    let json = format!("{{\"clusters\": [{}]}}", rows.join(", "));
    let palette = hf::palette_from_preprocessor(&json).unwrap();
    assert_eq!((palette.channels(), palette.centres()), (3, &want_u8[..]));
    let written = hf_export::preprocessor_json(&palette, 32);
    let nums: Vec<u32> = written
        .split(['[', ']', ',', '\n', ' '])
        .filter_map(|t| t.parse::<f64>().ok())
        .map(|x| (x as f32).to_bits())
        .collect();
    // The numbers of the file: the clusters, then the side (height, width).
    let want: Vec<u32> = clusters.iter().map(|x| x.to_bits()).collect();
    assert_eq!(nums[..want.len()], want[..]);
}
