//! The `igpt` binary end to end: the happy path on real images, and every kind of bad
//! input giving one clear error line that names the file, a non-zero exit and no panic.

use igpt_core::Palette;
use std::path::{Path, PathBuf};
use std::process::Command;

fn igpt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_igpt"))
        .args(args)
        .output()
        .expect("run igpt")
}

/// Runs igpt expecting failure; returns the one error line after checking it names all
/// of `needles`.
fn fails(args: &[&str], needles: &[&str]) -> String {
    let out = igpt(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: stderr {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: {:?} lacks {n:?}", lines[0]);
    }
    lines[0].to_string()
}

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write_png(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 20) as u8, 90])
    });
    img.save(path).unwrap();
}

fn palette_bytes(p: &Palette) -> Vec<u8> {
    let mut buf = vec![0u8; p.encoded_len()];
    p.to_bytes(&mut buf).unwrap();
    buf
}

#[test]
fn fit_show_tokenize_on_real_images() {
    let dir = tempfile::tempdir().unwrap();
    let pal = dir.path().join("pal.bin");
    let swatch = dir.path().join("swatch.png");
    let cifar = repo().join("data/cifar10-sample");
    let out = igpt(&[
        "palette",
        "fit",
        "--data",
        s(&cifar),
        "--split",
        "test",
        "--k",
        "16",
        "--iters",
        "10",
        "--side",
        "16",
        "--out",
        s(&pal),
        "--swatch",
        s(&swatch),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = Palette::from_bytes(&std::fs::read(&pal).unwrap()).unwrap();
    assert_eq!((p.len(), p.channels()), (16, 3));
    let img = image::open(&swatch).unwrap();
    assert_eq!((img.width(), img.height()), (16 * 16, 16));

    let shown = dir.path().join("shown.png");
    assert!(igpt(&[
        "palette",
        "show",
        s(&pal),
        "--out",
        s(&shown),
        "--cols",
        "4"
    ])
    .status
    .success());
    assert_eq!(image::open(&shown).unwrap().width(), 64);

    // Tokenize two photos of different sizes at 8x8, in the order given.
    let photos = repo().join("data/photos");
    let a = photos.join("chelsea.png");
    let b = photos.join("coffee.png");
    let preview = dir.path().join("preview.png");
    let out = igpt(&[
        "tokenize",
        "--palette",
        s(&pal),
        "--side",
        "8",
        "--preview",
        s(&preview),
        s(&a),
        s(&b),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<u16>> = stdout
        .lines()
        .map(|l| l.split(' ').map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines
        .iter()
        .all(|l| l.len() == 64 && l.iter().all(|&t| t < 16)));
    assert_ne!(lines[0], lines[1]);
    // The same images in the other order give the same lines swapped.
    let out = igpt(&[
        "tokenize",
        "--palette",
        s(&pal),
        "--side",
        "8",
        s(&b),
        s(&a),
    ]);
    let swapped: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(swapped, stdout.lines().rev().collect::<Vec<_>>());
    let pv = image::open(&preview).unwrap();
    assert_eq!((pv.width(), pv.height()), (2 * 128 + 4, 128));
}

#[test]
fn import_openai_npy() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("kmeans_centers.npy");
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
    bytes.extend_from_slice(h.as_bytes());
    for v in [-1.0f32, 0.0, 1.0, 0.5, -0.5, 0.00392] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&npy, &bytes).unwrap();
    let pal = dir.path().join("p.bin");
    let out = igpt(&["palette", "import", "--npy", s(&npy), "--out", s(&pal)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = Palette::from_bytes(&std::fs::read(&pal).unwrap()).unwrap();
    // round(127.5 * (c + 1)): -1 -> 0, 0 -> 128 (127.5 rounds away from zero), 1 -> 255.
    assert_eq!(p.centres(), &[0, 128, 255, 191, 64, 128]);

    // Truncated data and a wrong magic are refused.
    std::fs::write(&npy, &bytes[..bytes.len() - 3]).unwrap();
    fails(
        &["palette", "import", "--npy", s(&npy), "--out", s(&pal)],
        &["kmeans_centers.npy", "truncated"],
    );
    std::fs::write(&npy, b"not numpy at all").unwrap();
    fails(
        &["palette", "import", "--npy", s(&npy), "--out", s(&pal)],
        &["kmeans_centers.npy", "magic"],
    );
}

#[test]
fn missing_paths() {
    fails(
        &["data", "--data", "/no/such/dataset"],
        &["/no/such/dataset"],
    );
    fails(
        &["palette", "show", "/no/such/pal.bin", "--out", "/tmp/x.png"],
        &["/no/such/pal.bin"],
    );
    let dir = tempfile::tempdir().unwrap();
    let pal = dir.path().join("p.bin");
    std::fs::write(&pal, palette_bytes(&Palette::new(1, &[0, 255]).unwrap())).unwrap();
    fails(
        &["tokenize", "--palette", s(&pal), "/no/such/image.png"],
        &["/no/such/image.png"],
    );
}

#[test]
fn truncated_cifar_record() {
    let dir = tempfile::tempdir().unwrap();
    let raw = std::fs::read(repo().join("data/cifar10-sample/test_batch.bin")).unwrap();
    let f = dir.path().join("test_batch.bin");
    std::fs::write(&f, &raw[..2 * 3073 - 100]).unwrap();
    fails(
        &["data", "--data", s(dir.path()), "--split", "test"],
        &["test_batch.bin", "truncated CIFAR-10 record"],
    );
    // A bad label byte.
    let mut bad = raw[..3073].to_vec();
    bad[0] = 42;
    std::fs::write(&f, &bad).unwrap();
    fails(&["data", "--data", s(&f)], &["test_batch.bin", "label 42"]);
    // The train split of a folder with only a test batch.
    std::fs::write(&f, &raw[..3073]).unwrap();
    fails(&["data", "--data", s(dir.path())], &["data_batch_*.bin"]);
}

#[test]
fn wrong_idx_magic_and_truncated_idx() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("train-images-idx3-ubyte");
    let labels = dir.path().join("train-labels-idx1-ubyte");
    // A labels-file magic where an images file should be.
    std::fs::write(&images, [0, 0, 8, 1, 0, 0, 0, 1, 3]).unwrap();
    std::fs::write(&labels, [0, 0, 8, 1, 0, 0, 0, 1, 3]).unwrap();
    fails(
        &["data", "--data", s(dir.path())],
        &["train-images-idx3-ubyte", "wrong IDX magic 0x00000801"],
    );
    // Right magic, one image of 2x2 declared, 3 bytes present.
    std::fs::write(
        &images,
        [0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3],
    )
    .unwrap();
    fails(
        &["data", "--data", s(dir.path())],
        &["train-images-idx3-ubyte", "truncated IDX data"],
    );
    // Complete images, labels count disagrees.
    std::fs::write(
        &images,
        [0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4],
    )
    .unwrap();
    std::fs::write(&labels, [0, 0, 8, 1, 0, 0, 0, 2, 3, 4]).unwrap();
    fails(
        &["data", "--data", s(dir.path())],
        &["train-labels-idx1-ubyte", "2 labels for 1 images"],
    );
    // Gzip that is not: a gzip magic followed by garbage.
    std::fs::write(&images, [0x1f, 0x8b, 1, 2, 3, 4]).unwrap();
    fails(
        &["data", "--data", s(dir.path())],
        &["train-images-idx3-ubyte", "gzip"],
    );
}

#[test]
fn non_image_in_class_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("cat");
    std::fs::create_dir(&cat).unwrap();
    write_png(&cat.join("a.png"), 8, 8);
    std::fs::write(cat.join("notes.txt"), "not an image").unwrap();
    fails(
        &["data", "--data", s(dir.path())],
        &["notes.txt", "not a readable image"],
    );
    // An empty folder is no dataset.
    let empty = tempfile::tempdir().unwrap();
    fails(&["data", "--data", s(empty.path())], &["no dataset found"]);
}

#[test]
fn mixed_image_sizes_where_one_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("cat");
    let dog = dir.path().join("dog");
    std::fs::create_dir(&cat).unwrap();
    std::fs::create_dir(&dog).unwrap();
    write_png(&cat.join("a.png"), 8, 8);
    write_png(&dog.join("b.png"), 16, 12);
    fails(
        &["data", "--data", s(dir.path())],
        &["b.png", "16x12", "a.png", "8x8", "--side"],
    );
    // With --side the folder loads: palette fit resizes as it reads.
    let pal = dir.path().join("p.bin");
    let out = igpt(&[
        "palette",
        "fit",
        "--data",
        s(dir.path()),
        "--k",
        "4",
        "--side",
        "4",
        "--out",
        s(&pal),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // tokenize without --side wants one size too.
    fails(
        &[
            "tokenize",
            "--palette",
            s(&pal),
            s(&cat.join("a.png")),
            s(&dog.join("b.png")),
        ],
        &["b.png", "16x12", "--side"],
    );
}

#[test]
fn corrupt_and_out_of_range_palettes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img.png");
    write_png(&img, 4, 4);
    let pal = dir.path().join("pal.bin");
    let good = palette_bytes(&Palette::new(3, &[0, 0, 0, 255, 255, 255]).unwrap());
    let tok = |_: ()| {
        fails(
            &["tokenize", "--palette", s(&pal), s(&img)],
            &["pal.bin", "bad palette file"],
        )
    };

    let mut flipped = good.clone();
    flipped[17] ^= 0x40;
    std::fs::write(&pal, &flipped).unwrap();
    assert!(tok(()).contains("checksum"));

    std::fs::write(&pal, &good[..good.len() - 2]).unwrap();
    assert!(tok(()).contains("truncated"));

    std::fs::write(&pal, b"PNG\x00 not a palette file").unwrap();
    assert!(tok(()).contains("magic"));

    // 0 and 513 colours, in otherwise well-formed headers.
    for k in [0u16, 513] {
        let mut b = good[..16].to_vec();
        b[12..14].copy_from_slice(&k.to_le_bytes());
        std::fs::write(&pal, &b).unwrap();
        assert!(tok(()).contains(&format!("palette size {k}")));
    }
    // The good file works.
    std::fs::write(&pal, &good).unwrap();
    let out = igpt(&["tokenize", "--palette", s(&pal), s(&img)]);
    assert!(out.status.success());
}

#[test]
fn bad_arguments() {
    fails(
        &["info", "--width", "30", "--heads", "4"],
        &["not divisible"],
    );
    fails(&["info", "--preset", "XXL"], &["XXL", "unknown preset"]);
    fails(&["info", "--vocab", "600"], &["palette size 600"]);
    // A usage error is one line naming what is missing, exit 1, like every error.
    fails(&["tokenize"], &["--palette", "required"]);
    fails(&["info", "--width", "abc"], &["--width", "abc"]);
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/hf-imagegpt").join(name)
}

#[test]
fn import_hf_and_refuse_biases() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.ckpt");
    let cfg = fixture("tiny.json");
    let w = fixture("tiny.safetensors");
    let r = igpt(&[
        "import-hf",
        "--config",
        s(&cfg),
        "--weights",
        s(&w),
        "--out",
        s(&out),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let ck = igpt::io::checkpoint::Checkpoint::load(&out).unwrap();
    assert_eq!(
        (
            ck.config.layers,
            ck.config.width,
            ck.config.vocab,
            ck.config.side
        ),
        (2, 32, 512, 8)
    );

    // The same weights with one non-zero bias are refused, naming the tensor.
    let bytes = std::fs::read(&w).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    for t in owned.iter_mut() {
        if t.0 == "transformer.h.1.mlp.c_fc.bias" {
            t.3[..4].copy_from_slice(&0.25f32.to_le_bytes());
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let biased = dir.path().join("biased.safetensors");
    std::fs::write(&biased, safetensors::serialize(views, None).unwrap()).unwrap();
    fails(
        &[
            "import-hf",
            "--config",
            s(&cfg),
            "--weights",
            s(&biased),
            "--out",
            s(&out),
        ],
        &[
            "biased.safetensors",
            "transformer.h.1.mlp.c_fc.bias",
            "non-zero",
        ],
    );
    // A config that is not JSON, and a palette of the wrong size.
    let bad = dir.path().join("config.json");
    std::fs::write(&bad, "{ not json").unwrap();
    fails(
        &[
            "import-hf",
            "--config",
            s(&bad),
            "--weights",
            s(&w),
            "--out",
            s(&out),
        ],
        &["config.json", "JSON"],
    );
    let pal = dir.path().join("p.pal");
    std::fs::write(&pal, palette_bytes(&Palette::new(1, &[0, 255]).unwrap())).unwrap();
    fails(
        &[
            "import-hf",
            "--config",
            s(&cfg),
            "--weights",
            s(&w),
            "--palette",
            s(&pal),
            "--out",
            s(&out),
        ],
        &["p.pal", "2 colours", "512"],
    );
}

/// A CIFAR-10 folder holding the 20 sample images as train and test batch, and a grey
/// palette of `k` colours fitted on it at `side`.
fn cifar_and_palette(dir: &Path, k: &str, side: &str) -> (PathBuf, PathBuf) {
    let data = dir.join("cifar");
    std::fs::create_dir(&data).unwrap();
    let src = repo().join("data/cifar10-sample/test_batch.bin");
    std::fs::copy(&src, data.join("data_batch_1.bin")).unwrap();
    std::fs::copy(&src, data.join("test_batch.bin")).unwrap();
    let pal = dir.join("p.pal");
    let fit = [
        "palette",
        "fit",
        "--data",
        s(&data),
        "--k",
        k,
        "--channels",
        "1",
        "--side",
        side,
        "--out",
        s(&pal),
    ];
    assert!(igpt(&fit).status.success());
    (data, pal)
}

#[test]
fn pretrain_resume_from_a_corrupt_checkpoint_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let (data, pal) = cifar_and_palette(dir.path(), "4", "4");
    let run = dir.path().join("run");
    let args = [
        "pretrain",
        "--data",
        s(&data),
        "--palette",
        s(&pal),
        "--layers",
        "1",
        "--width",
        "16",
        "--heads",
        "2",
        "--side",
        "4",
        "--steps",
        "2",
        "--batch",
        "2",
        "--warmup",
        "1",
        "--eval-every",
        "1",
        "--val-images",
        "2",
        "--out",
        s(&run),
    ];
    let r = igpt(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(stdout.contains("step 2"), "{stdout}");
    assert!(run.join("loss.png").is_file() && run.join("log.csv").is_file());
    // A second run into the same folder is refused.
    fails(&args, &["checkpoint.safetensors", "--resume"]);
    // Corrupt the checkpoint's last byte: --resume reports it.
    let ck = run.join("checkpoint.safetensors");
    let mut b = std::fs::read(&ck).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0x10;
    std::fs::write(&ck, &b).unwrap();
    let mut resume = args.to_vec();
    resume.push("--resume");
    fails(&resume, &["checkpoint.safetensors", "checksum mismatch"]);
    std::fs::write(&ck, &b[..100]).unwrap();
    fails(&resume, &["checkpoint.safetensors", "bad checkpoint"]);
}

#[test]
fn probe_and_sample_on_a_small_model() {
    let dir = tempfile::tempdir().unwrap();
    let (data, pal) = cifar_and_palette(dir.path(), "8", "6");
    let run = dir.path().join("run");
    let r = igpt(&[
        "pretrain",
        "--data",
        s(&data),
        "--palette",
        s(&pal),
        "--layers",
        "2",
        "--width",
        "16",
        "--heads",
        "2",
        "--side",
        "6",
        "--steps",
        "3",
        "--batch",
        "4",
        "--warmup",
        "1",
        "--eval-every",
        "3",
        "--val-images",
        "4",
        "--out",
        s(&run),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let ck = run.join("checkpoint.safetensors");
    let out = run.join("probe");
    let r = igpt(&[
        "probe",
        "--checkpoint",
        s(&ck),
        "--data",
        s(&data),
        "--out",
        s(&out),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("probe.json")).unwrap()).unwrap();
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "layers 0, 1 and the final norm");
    for l in layers {
        let acc = l["test_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
    }
    assert!(out.join("probe.png").is_file() && out.join("probe-head.json").is_file());
    // The scaling report reads the run folder: its row carries the probe's best layer.
    let sc = dir.path().join("scaling");
    let r = igpt(&["scaling", "--runs", s(&run), "--out", s(&sc)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let table = std::fs::read_to_string(sc.join("scaling.md")).unwrap();
    let best = json["best_test_accuracy"].as_f64().unwrap();
    let row = table.lines().nth(2).unwrap();
    assert!(
        row.starts_with("| AR 2x16 |") && row.contains(&format!("| {:.2}% |", 100.0 * best)),
        "{table}"
    );
    assert!(sc.join("scaling.png").is_file() && sc.join("scaling-by-layer.png").is_file());
    fails(
        &["scaling", "--runs", s(&out), "--out", s(&sc)],
        &["checkpoint.safetensors"],
    );
    // int8 export, then the core path: classify, eval against the f32 checkpoint, bench.
    let model = dir.path().join("m.igpt");
    let head = out.join("probe-head.json");
    let r = igpt(&[
        "export",
        "--checkpoint",
        s(&ck),
        "--probe",
        s(&head),
        "--out",
        s(&model),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("worst quantization error"));
    let png = dir.path().join("x.png");
    write_png(&png, 9, 7);
    let r = igpt(&["classify", "--model", s(&model), s(&png)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("x.png: class "));
    let r = igpt(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--checkpoint",
        s(&ck),
    ]);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for key in [
        "int8_accuracy=",
        "f32_accuracy=",
        "agreement=",
        "nll_increase_percent=",
    ] {
        assert!(stdout.contains(key), "{stdout}");
    }
    let r = igpt(&["bench", "infer", "--model", s(&model), "--images", "2"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let last = String::from_utf8_lossy(&r.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert!(last.starts_with("speedup="), "{last}");
    // Bad inputs: a corrupt model file, a palette as a model, a broken probe head.
    let mut b = std::fs::read(&model).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 4;
    let bad = dir.path().join("bad.igpt");
    std::fs::write(&bad, &b).unwrap();
    fails(
        &["classify", "--model", s(&bad), s(&png)],
        &["bad.igpt", "checksum"],
    );
    fails(
        &["classify", "--model", s(&pal), s(&png)],
        &["p.pal", "igpt export"],
    );
    std::fs::write(&bad, &b[..b.len() / 3]).unwrap();
    fails(
        &["eval", "--model", s(&bad), "--data", s(&data)],
        &["bad.igpt"],
    );
    let badhead = dir.path().join("head.json");
    std::fs::write(&badhead, "{\"layer\": 1, \"classes\": [\"a\"]}").unwrap();
    fails(
        &[
            "export",
            "--checkpoint",
            s(&ck),
            "--probe",
            s(&badhead),
            "--out",
            s(&bad),
        ],
        &["head.json", "mean"],
    );
    fails(
        &["classify", "--model", s(&model), s(&pal)],
        &["p.pal", "not a readable image"],
    );
    // The raw-pixel baseline through the same code path.
    let raw = dir.path().join("raw");
    let r = igpt(&[
        "probe",
        "--checkpoint",
        s(&ck),
        "--data",
        s(&data),
        "--raw-pixels",
        "--out",
        s(&raw),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("raw pixels: test accuracy"));
    // Samples and completions from the same model: PNG grids of the expected size.
    let grid = dir.path().join("samples.png");
    let r = igpt(&[
        "sample",
        "--checkpoint",
        s(&ck),
        "--n",
        "4",
        "--seed",
        "3",
        "--out",
        s(&grid),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("tokens/s"));
    // 6x6 images enlarged 18x (108 px) in a 2x2 grid with 4 px gaps.
    assert_eq!(image::open(&grid).unwrap().width(), 2 * 108 + 3 * 4);
    let comp = dir.path().join("complete.png");
    let r = igpt(&[
        "sample",
        "--checkpoint",
        s(&ck),
        "--data",
        s(&data),
        "--complete-test",
        "2",
        "--keep-rows",
        "3",
        "--completions",
        "2",
        "--out",
        s(&comp),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let img = image::open(&comp).unwrap();
    // Each row: kept rows, 2 completions, original.
    assert_eq!(
        (img.width(), img.height()),
        (4 * 108 + 5 * 4, 2 * 108 + 3 * 4)
    );
    fails(
        &[
            "sample",
            "--checkpoint",
            s(&ck),
            "--complete-test",
            "2",
            "--keep-rows",
            "3",
            "--out",
            s(&comp),
        ],
        &["--data"],
    );
    fails(
        &[
            "sample",
            "--checkpoint",
            s(&ck),
            "--data",
            s(&data),
            "--complete-test",
            "1",
            "--keep-rows",
            "6",
            "--out",
            s(&comp),
        ],
        &["--keep-rows"],
    );
    // Fine-tuning writes a checkpoint with its class head and a JSON report.
    let ft = dir.path().join("ft");
    let r = igpt(&[
        "finetune",
        "--checkpoint",
        s(&ck),
        "--data",
        s(&data),
        "--steps",
        "4",
        "--batch",
        "4",
        "--eval-every",
        "2",
        "--out",
        s(&ft),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let fck = igpt::io::checkpoint::Checkpoint::load(&ft.join("checkpoint.safetensors")).unwrap();
    assert_eq!(
        fck.params.score.as_ref().map(|s| (s.rows, s.cols)),
        Some((10, 16))
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ft.join("finetune.json")).unwrap()).unwrap();
    assert!((0.0..=1.0).contains(&json["test_accuracy"].as_f64().unwrap()));
    // Bad layer numbers are one clear line.
    fails(
        &[
            "probe",
            "--checkpoint",
            s(&ck),
            "--data",
            s(&data),
            "--layers",
            "7",
            "--out",
            s(&out),
        ],
        &["--layers 7"],
    );
    fails(
        &[
            "probe",
            "--checkpoint",
            s(&ck),
            "--data",
            s(&data),
            "--layers",
            "x",
            "--out",
            s(&out),
        ],
        &["--layers x"],
    );
}

#[test]
fn demo_quick_runs_end_to_end_on_the_embedded_subset() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let r = igpt(&["demo", "--quick", "--out", s(&out)]);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for f in [
        "run/loss.png",
        "probe/probe.png",
        "samples.png",
        "complete.png",
        "model.igpt",
        "summary.json",
        "palette.pal",
    ] {
        assert!(out.join(f).is_file(), "{f} missing; stdout {stdout}");
    }
    for png in [
        "run/loss.png",
        "probe/probe.png",
        "samples.png",
        "complete.png",
    ] {
        image::open(out.join(png)).unwrap();
    }
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    // 10 classes: chance is 10%; the int8 classifier must beat it by 20 points.
    let int8 = v["scratch"]["int8_accuracy"].as_f64().unwrap();
    assert!(int8 >= 0.30, "int8 accuracy {int8}");
    assert_eq!(v["test_images"].as_u64(), Some(200));
    assert!(stdout.contains("int8 export (igpt-core)"), "{stdout}");
    assert!(stdout.contains("vs raw pixels: p"), "{stdout}");
    // Detail goes to demo.log, not the terminal.
    let stderr = String::from_utf8_lossy(&r.stderr);
    let log = std::fs::read_to_string(out.join("demo.log")).unwrap();
    assert!(log.contains("layer 0: test accuracy"), "{log}");
    assert!(!stderr.contains("L-BFGS"), "{stderr}");
    // The exported file is a valid core model with the probe.
    let bytes = std::fs::read(out.join("model.igpt")).unwrap();
    let m = igpt_core::Model::parse(&bytes).unwrap();
    assert!(m.probe().is_some());
    // A second run resumes the finished pretraining and redoes the rest.
    let r = igpt(&["demo", "--quick", "--out", s(&out)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn bench_parity_on_the_cpu_passes_and_bad_folders_fail() {
    let fixtures = repo().join("tests/fixtures/hf-imagegpt");
    let r = igpt(&[
        "bench",
        "parity",
        "--device",
        "cpu",
        "--fixtures",
        s(&fixtures),
    ]);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(stdout.lines().last(), Some("parity=PASS"), "{stdout}");
    for what in [
        "logits vs HF",
        "hidden states vs HF",
        "AR loss vs CPU",
        "gradients vs CPU",
    ] {
        assert!(stdout.contains(what), "{stdout}");
    }
    let dir = tempfile::tempdir().unwrap();
    fails(
        &["bench", "parity", "--fixtures", s(dir.path())],
        &["no HF fixture case"],
    );
    fails(
        &["bench", "parity", "--fixtures", s(&dir.path().join("none"))],
        &["none", "cannot read"],
    );
}

#[test]
fn bench_train_reports_flops() {
    let r = igpt(&[
        "bench", "train", "--device", "cpu", "--layers", "1", "--width", "16", "--heads", "2",
        "--side", "4", "--vocab", "8", "--batch", "2", "--steps", "1",
    ]);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(stdout.contains("model_tflops="), "{stdout}");
    assert!(stdout.lines().last().unwrap().starts_with("tokens_per_s="));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_without_the_feature_is_one_error_line() {
    let want = "error: this igpt was built without the cuda feature: cargo build --release -p igpt --features cuda";
    let dir = tempfile::tempdir().unwrap();
    let x = s(dir.path());
    for args in [
        &[
            "pretrain",
            "--data",
            x,
            "--palette",
            x,
            "--out",
            x,
            "--device",
            "cuda",
        ][..],
        &[
            "finetune",
            "--checkpoint",
            x,
            "--data",
            x,
            "--out",
            x,
            "--device",
            "cuda",
        ],
        &[
            "probe",
            "--checkpoint",
            x,
            "--data",
            x,
            "--out",
            x,
            "--device",
            "cuda",
        ],
        &["sample", "--checkpoint", x, "--out", x, "--device", "cuda"],
        &["bench", "train", "--device", "cuda"],
        &["bench", "parity", "--device", "cuda"],
    ] {
        assert_eq!(fails(args, &[]), want);
    }
}
