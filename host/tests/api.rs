//! The library facade on the shipped model: `Classifier` gives what the int8 path
//! underneath gives, `Pretrained` what the probe and sampling code give, and bad input is
//! an error naming the file.

use igpt::{Classifier, Pretrained};
use std::path::{Path, PathBuf};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

const INT8: &str = "models/fm-ar-6x192.igpt";
const F32: &str = "models/fm-ar-6x192.safetensors";

fn example_images() -> Vec<PathBuf> {
    ["ankle-boot", "bag", "trouser"]
        .iter()
        .map(|n| Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/images/{n}.png")))
        .collect()
}

#[test]
fn classifier_matches_the_int8_path_and_names_classes() {
    let mut c = Classifier::open(repo(INT8)).unwrap();
    let labels = c.labels();
    assert_eq!(labels.len(), 10);
    let bytes = std::fs::read(repo(INT8)).unwrap();
    let model = igpt_core::Model::parse(&bytes).unwrap();
    let side = model.config().side;
    for path in example_images() {
        let got = c.classify_path(&path).unwrap();
        let tokens = igpt::data::tokenize::image(&path, model.palette(), side).unwrap();
        let want =
            &igpt::int8::run::classify_all(&model, std::slice::from_ref(&tokens)).unwrap()[0];
        assert_eq!(got.class, want.class, "{}", path.display());
        assert_eq!(got.probs, want.probs.to_vec());
        assert_eq!(got.label, labels[got.class]);
        assert_eq!(c.classify_tokens(&tokens).unwrap(), got);
        let sum: f32 = got.probs.iter().sum();
        assert!((sum - 1.0).abs() < 1e-3, "probabilities sum to {sum}");
        println!(
            "{}: {} (p = {:.3})",
            path.display(),
            got.label,
            got.probability()
        );
    }
    // One call for many images gives what one call per image gives.
    let each: Vec<_> = example_images()
        .iter()
        .map(|p| c.classify_path(p).unwrap())
        .collect();
    assert_eq!(c.classify_paths(&example_images()).unwrap(), each);
    // The shipped model gets these three Fashion-MNIST test images right.
    let names: Vec<String> = example_images()
        .iter()
        .map(|p| c.classify_path(p).unwrap().label.to_lowercase())
        .collect();
    assert!(names[0].contains("boot"), "{names:?}");
    assert!(names[1].contains("bag"), "{names:?}");
    assert!(names[2].contains("trouser"), "{names:?}");
}

#[test]
fn classifier_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.igpt");
    std::fs::write(&junk, b"junk").unwrap();
    let err = Classifier::open(&junk).err().unwrap();
    assert!(format!("{err:#}").contains("junk.igpt"), "{err:#}");
    let mut c = Classifier::open(repo(INT8)).unwrap();
    let err = c.classify_path(dir.path().join("none.png")).unwrap_err();
    assert!(format!("{err:#}").contains("none.png"), "{err:#}");
    assert!(c.classify_tokens(&[0; 3]).is_err(), "wrong length");
    let mut batch = example_images();
    batch.insert(1, dir.path().join("gone.png"));
    let err = c.classify_paths(&batch).unwrap_err();
    assert!(format!("{err:#}").contains("gone.png"), "{err:#}");
}

#[test]
fn pretrained_features_and_samples_match_the_modules_underneath() {
    let m = Pretrained::open(repo(F32)).unwrap();
    let c = m.config();
    assert!(m.is_autoregressive());
    let images = example_images();
    let tokens: Vec<Vec<u16>> = images.iter().map(|p| m.tokenize_path(p).unwrap()).collect();
    let all = m.features(&tokens).unwrap();
    assert_eq!(all.len(), c.layers + 1);
    let one = m.features_path(&images[1]).unwrap();
    for l in 0..=c.layers {
        assert_eq!(one[l].len(), c.width);
        let diff = one[l]
            .iter()
            .zip(&all[l][1])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "layer {l}: batch of 1 vs 3 differ by {diff}");
    }
    // Sampling: seeded, tokens in the palette, prefixes kept.
    let a = m.sample(2, 1.0, 7).unwrap();
    assert_eq!(a, m.sample(2, 1.0, 7).unwrap());
    assert!(a.iter().flatten().all(|&t| (t as usize) < c.vocab));
    assert_eq!(a.len(), 2);
    let prefix = tokens[0][..c.side * 3].to_vec();
    let done = m.complete(std::slice::from_ref(&prefix), 0.0, 0).unwrap();
    assert_eq!(done[0][..prefix.len()], prefix[..]);
    assert_eq!(done[0].len(), c.seq_len());
    let png = tempfile::tempdir().unwrap();
    m.save_png(&done[0], png.path().join("c.png")).unwrap();
    assert!(m.save_png(&done[0][1..], png.path().join("d.png")).is_err());
    assert!(m.features(&[vec![0; 5]]).is_err());
    assert!(m.features(&[vec![u16::MAX; c.seq_len()]]).is_err());
    assert!(m.sample(1, f32::NAN, 0).is_err());
}
