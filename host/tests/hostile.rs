//! Hostile input against the `igpt` binary: what a careless or malicious user would
//! try, command by command, in the classes of the hardening issue, plus a property test
//! that runs commands with random hostile argument values and mutated input files.
//!
//! Every case asserts: no panic, no allocation abort, no signal, no hang (a time limit
//! per run); on bad input exit 1 with one `error:` line (the last line of standard
//! error, the only one starting so) naming the file or flag; and every input file
//! byte-identical afterwards. The number of cases run is printed.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

thread_local! {
    /// Runs of igpt by this test (each test runs on its own thread).
    static CASES: Cell<usize> = const { Cell::new(0) };
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Runs igpt with a time limit; kills it and fails the test when it hangs.
fn run(args: &[String], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_igpt"))
        .args(args)
        .env("IGPT_NO_PROGRESS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start igpt");
    let t0 = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{args:?}: still running after {limit:?} (a hang); stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    CASES.with(|c| c.set(c.get() + 1));
    child.wait_with_output().expect("output")
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

/// No panic, no abort, no signal: exit 0 or 1; on 1 the last stderr line is the one
/// `error:` line. Returns that line (empty on success).
fn sane(a: &[String], out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "{a:?}: exit {:?} (signal or crash); stderr: {err}",
        out.status
    );
    for bad in [
        "panicked",
        "RUST_BACKTRACE",
        "memory allocation of",
        "stack overflow",
    ] {
        assert!(!err.contains(bad), "{a:?}: {bad}: {err}");
    }
    if code == Some(0) {
        return String::new();
    }
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{a:?}: want one error line, got: {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: "),
        "{a:?}: the error is not the last line: {err}"
    );
    last.to_string()
}

/// Expects exit 1 with one error line containing every needle.
fn refused(a: &[&str], needles: &[&str]) -> String {
    let a = args(a);
    let out = run(&a, Duration::from_secs(60));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{a:?}: expected a refusal; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = sane(&a, &out);
    for n in needles {
        assert!(line.contains(n), "{a:?}: {line:?} lacks {n:?}");
    }
    line
}

/// Expects success.
fn works(a: &[&str]) -> String {
    let a = args(a);
    let out = run(&a, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{a:?}: failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Hashes of every file under `dir` (its inputs), to prove a command changed none.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, u32> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.insert(p.clone(), igpt_core::crc32(&std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// The inputs every case reads: a palette, a seeded checkpoint and probe head, an int8
/// model, test vectors, images, a dataset; built once into `dir/in`.
struct Inputs {
    dir: PathBuf,
    data: PathBuf,
    pal: PathBuf,
    ck: PathBuf,
    head: PathBuf,
    model: PathBuf,
    vec: PathBuf,
    png: PathBuf,
    jpg: PathBuf,
    hf_json: PathBuf,
    hf_weights: PathBuf,
}

fn inputs(root: &Path) -> Inputs {
    let dir = root.join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("fm");
    std::fs::create_dir_all(&data).unwrap();
    for f in std::fs::read_dir(repo().join("data/fashion-mnist-subset"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
    }
    let p = |n: &str| dir.join(n);
    let pal = p("p.pal");
    works(&[
        "palette",
        "fit",
        "--data",
        &s(&data),
        "--k",
        "8",
        "--side",
        "8",
        "--sample",
        "20000",
        "--out",
        &s(&pal),
    ]);
    let (ck, head) = (p("ck.safetensors"), p("head.json"));
    works(&[
        "init",
        "--palette",
        &s(&pal),
        "--preset",
        "test",
        "--side",
        "8",
        "--out",
        &s(&ck),
        "--probe-head",
        &s(&head),
        "--probe-layer",
        "1",
    ]);
    let model = p("m.igpt");
    works(&[
        "export",
        "--checkpoint",
        &s(&ck),
        "--probe",
        &s(&head),
        "--out",
        &s(&model),
    ]);
    let vec = p("m.vec");
    works(&[
        "export-vectors",
        "--model",
        &s(&model),
        "--data",
        &s(&data),
        "--count",
        "3",
        "--out",
        &s(&vec),
    ]);
    let png = p("a.png");
    let img = image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
    });
    img.save(&png).unwrap();
    let jpg = p("a.jpg");
    img.save(&jpg).unwrap();
    let hf = repo().join("tests/fixtures/hf-imagegpt");
    let (hf_json, hf_weights) = (p("tiny.json"), p("tiny.safetensors"));
    std::fs::copy(hf.join("tiny.json"), &hf_json).unwrap();
    std::fs::copy(hf.join("tiny.safetensors"), &hf_weights).unwrap();
    Inputs {
        dir,
        data,
        pal,
        ck,
        head,
        model,
        vec,
        png,
        jpg,
        hf_json,
        hf_weights,
    }
}

#[test]
fn hostile_cases_by_class() {
    let tmp = tempfile::tempdir().unwrap();
    let i = inputs(tmp.path());
    let before = snapshot(&i.dir);
    let o = |n: &str| s(&tmp.path().join(n));
    let (data, pal, ck, head, model) = (s(&i.data), s(&i.pal), s(&i.ck), s(&i.head), s(&i.model));

    // 1. Sizes from arguments are bounded before allocating.
    refused(
        &[
            "palette",
            "show",
            &pal,
            "--cell",
            "4294967296",
            "--out",
            &o("sw.png"),
        ],
        &["--cell"],
    );
    refused(
        &[
            "palette",
            "show",
            &pal,
            "--cols",
            "100000",
            "--out",
            &o("sw.png"),
        ],
        &["--cols"],
    );
    refused(&["info", "--width", "1000000000"], &["width"]);
    refused(&["info", "--layers", "1000000"], &["layers"]);
    refused(
        &[
            "init",
            "--palette",
            &pal,
            "--width",
            "16384",
            "--layers",
            "1024",
            "--heads",
            "8",
            "--out",
            &o("big.safetensors"),
        ],
        &["GiB"],
    );
    refused(
        &[
            "pretrain",
            "--data",
            &data,
            "--palette",
            &pal,
            "--preset",
            "test",
            "--side",
            "8",
            "--batch",
            "100000000",
            "--out",
            &o("r1"),
        ],
        &["--batch"],
    );
    refused(
        &[
            "pretrain",
            "--data",
            &data,
            "--palette",
            &pal,
            "--width",
            "4096",
            "--layers",
            "64",
            "--heads",
            "8",
            "--side",
            "64",
            "--batch",
            "4096",
            "--out",
            &o("r2"),
        ],
        &["GiB", "--batch"],
    );
    refused(
        &[
            "sample",
            "--checkpoint",
            &ck,
            "--n",
            "1000000000",
            "--out",
            &o("s.png"),
        ],
        &["--n"],
    );
    refused(
        &[
            "sample",
            "--checkpoint",
            &ck,
            "--data",
            &data,
            "--complete-test",
            "2",
            "--keep-rows",
            "2",
            "--completions",
            "100000000",
            "--out",
            &o("s.png"),
        ],
        &["--completions"],
    );
    refused(
        &[
            "bench",
            "train",
            "--preset",
            "test",
            "--batch",
            "1000000000",
        ],
        &["--batch"],
    );
    refused(
        &[
            "pretrain",
            "--data",
            &data,
            "--palette",
            "/dev/zero",
            "--preset",
            "test",
            "--out",
            &o("r3"),
        ],
        &["/dev/zero"],
    );
    refused(
        &[
            "probe",
            "--checkpoint",
            &ck,
            "--data",
            &data,
            "--threads",
            "1000",
            "--out",
            &o("pr"),
        ],
        &["--threads"],
    );
    // A gzip IDX member that inflates past what its header promises (or a header that
    // promises more than this machine has) is refused without inflating it all.
    let bomb = tmp.path().join("bomb");
    std::fs::create_dir_all(&bomb).unwrap();
    for f in std::fs::read_dir(&i.data).unwrap().flatten() {
        std::fs::copy(f.path(), bomb.join(f.file_name())).unwrap();
    }
    {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut header = vec![0, 0, 8, 3];
        for d in [10u32, 28, 28] {
            header.extend_from_slice(&d.to_be_bytes());
        }
        enc.write_all(&header).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..200 {
            enc.write_all(&zeros).unwrap();
        }
        std::fs::write(
            bomb.join("train-images-idx3-ubyte.gz"),
            enc.finish().unwrap(),
        )
        .unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut header = vec![0, 0, 8, 3];
        for d in [4_000_000_000u32, 4_000_000_000, 4] {
            header.extend_from_slice(&d.to_be_bytes());
        }
        enc.write_all(&header).unwrap();
        std::fs::write(
            bomb.join("t10k-images-idx3-ubyte.gz"),
            enc.finish().unwrap(),
        )
        .unwrap();
    }
    refused(
        &["data", "--data", &s(&bomb)],
        &["train-images-idx3-ubyte.gz"],
    );
    refused(
        &["data", "--data", &s(&bomb), "--split", "test"],
        &["t10k-images-idx3-ubyte.gz"],
    );

    // 2. Non-finite or nonsensical numbers.
    let ft = |extra: &[&str]| {
        let mut a = vec![
            "finetune",
            "--checkpoint",
            ck.as_str(),
            "--data",
            data.as_str(),
            "--steps",
            "2",
            "--train-images",
            "40",
            "--test-images",
            "10",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    for (flag, v) in [
        ("--lr", "nan"),
        ("--lr", "-1"),
        ("--lr", "0"),
        ("--lr", "inf"),
        ("--head-lr-scale", "nan"),
        ("--gen-weight", "-1"),
        ("--weight-decay", "nan"),
    ] {
        let mut a = ft(&[flag, v]);
        a.extend(["--out".to_string(), o("ft-bad")]);
        let refs: Vec<&str> = a.iter().map(|x| x.as_str()).collect();
        refused(&refs, &[flag]);
    }
    for (flag, v) in [
        ("--weight-decay", "nan"),
        ("--lr", "1e30"),
        ("--clip", "-1"),
        ("--lr", "nan"),
    ] {
        refused(
            &[
                "pretrain",
                "--data",
                &data,
                "--palette",
                &pal,
                "--preset",
                "test",
                "--side",
                "8",
                "--steps",
                "2",
                flag,
                v,
                "--out",
                &o("r4"),
            ],
            &[flag],
        );
    }
    for t in ["nan", "-1", "-inf", "inf", "1e9"] {
        refused(
            &[
                "sample",
                "--checkpoint",
                &ck,
                "--temperature",
                t,
                "--out",
                &o("s.png"),
            ],
            &["--temperature"],
        );
    }
    for l2 in ["inf", "nan", "-1"] {
        refused(
            &[
                "probe",
                "--checkpoint",
                &ck,
                "--data",
                &data,
                "--l2",
                l2,
                "--out",
                &o("pr2"),
            ],
            &["--l2"],
        );
    }

    // 3. Non-finite values inside files whose checksum is valid.
    let nan_model = tmp.path().join("nan.igpt");
    {
        let bytes = std::fs::read(&i.model).unwrap();
        let (h, _) = igpt_core::format::read(&bytes).unwrap();
        let p = h.probe.as_ref().unwrap();
        let mut std_bytes = p.std.to_vec();
        std_bytes[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        let probe = igpt_core::format::ProbeRecord {
            std: &std_bytes,
            ..*p
        };
        let mut blob = h.tensors.to_vec();
        let h2 = igpt_core::format::Header {
            probe: Some(probe),
            tensors: &blob,
            ..h
        };
        let mut out = vec![0u8; igpt_core::format::max_len(&h2)];
        let n = igpt_core::format::write(&h2, &mut out).unwrap();
        std::fs::write(&nan_model, &out[..n]).unwrap();
        // And a NaN matrix scale (the first scale of the token embedding).
        blob[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
        let h3 = igpt_core::format::Header {
            tensors: &blob,
            ..h
        };
        let mut out = vec![0u8; igpt_core::format::max_len(&h3)];
        let n = igpt_core::format::write(&h3, &mut out).unwrap();
        std::fs::write(tmp.path().join("inf.igpt"), &out[..n]).unwrap();
    }
    for m in [s(&nan_model), o("inf.igpt")] {
        refused(
            &["classify", "--model", &m, &s(&i.png)],
            &[&m, "non-finite"],
        );
        refused(
            &["eval", "--model", &m, "--data", &data],
            &[&m, "non-finite"],
        );
        refused(
            &[
                "export-vectors",
                "--model",
                &m,
                "--data",
                &data,
                "--out",
                &o("v2.vec"),
            ],
            &[&m, "non-finite"],
        );
    }
    let nan_ck = tmp.path().join("nan.safetensors");
    {
        let mut c = igpt::io::checkpoint::Checkpoint::load(&i.ck).unwrap();
        c.params.blocks[0].q.data[3] = f32::NAN;
        c.save(&nan_ck).unwrap();
    }
    let nan_ck = s(&nan_ck);
    refused(
        &["sample", "--checkpoint", &nan_ck, "--out", &o("s.png")],
        &[&nan_ck, "NaN"],
    );
    refused(
        &["export", "--checkpoint", &nan_ck, "--out", &o("e.igpt")],
        &[&nan_ck, "NaN"],
    );
    refused(
        &[
            "probe",
            "--checkpoint",
            &nan_ck,
            "--data",
            &data,
            "--out",
            &o("pr3"),
        ],
        &[&nan_ck, "NaN"],
    );
    let mut bad_head: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&i.head).unwrap()).unwrap();
    bad_head["std"][0] = serde_json::json!(-1.0);
    std::fs::write(tmp.path().join("bad-head.json"), bad_head.to_string()).unwrap();
    refused(
        &[
            "export",
            "--checkpoint",
            &ck,
            "--probe",
            &o("bad-head.json"),
            "--out",
            &o("e.igpt"),
        ],
        &["bad-head.json", "standard deviation"],
    );

    // 4. A failed result never exits 0.
    let fx = tmp.path().join("fixtures");
    std::fs::create_dir_all(&fx).unwrap();
    let hf = repo().join("tests/fixtures/hf-imagegpt");
    for f in ["tiny.json", "tiny.safetensors"] {
        std::fs::copy(hf.join(f), fx.join(f)).unwrap();
    }
    let full = std::fs::read(fx.join("tiny.safetensors")).unwrap();
    std::fs::write(fx.join("tiny.safetensors"), &full[..full.len() / 2]).unwrap();
    refused(
        &["bench", "parity", "--fixtures", &s(&fx)],
        &["tiny.safetensors"],
    );
    let half = tmp.path().join("half.jpg");
    let jb = std::fs::read(&i.jpg).unwrap();
    std::fs::write(&half, &jb[..jb.len() / 2]).unwrap();
    refused(&["classify", "--model", &model, &s(&half)], &["half.jpg"]);

    // 5. An output that is one of the command's inputs is refused; devices are written
    // in place.
    refused(&["palette", "show", &pal, "--out", &pal], &[&pal, "input"]);
    refused(&["export", "--checkpoint", &ck, "--out", &ck], &["input"]);
    refused(
        &[
            "export",
            "--checkpoint",
            &ck,
            "--probe",
            &head,
            "--out",
            &head,
        ],
        &["input"],
    );
    refused(&["sample", "--checkpoint", &ck, "--out", &ck], &["input"]);
    refused(
        &[
            "tokenize",
            "--palette",
            &pal,
            "--preview",
            &s(&i.png),
            &s(&i.png),
        ],
        &["input"],
    );
    refused(
        &[
            "export-vectors",
            "--model",
            &model,
            "--data",
            &data,
            "--out",
            &model,
        ],
        &["input"],
    );
    refused(
        &[
            "import-hf",
            "--config",
            &s(&i.hf_json),
            "--weights",
            &s(&i.hf_weights),
            "--out",
            &s(&i.hf_weights),
        ],
        &["input"],
    );
    let link = tmp.path().join("link.pal");
    std::os::unix::fs::symlink(&i.pal, &link).unwrap();
    refused(&["palette", "show", &pal, "--out", &s(&link)], &["input"]);
    works(&["export", "--checkpoint", &ck, "--out", "/dev/null"]);
    {
        use std::os::unix::fs::FileTypeExt;
        let ft = std::fs::metadata("/dev/null").unwrap().file_type();
        assert!(ft.is_char_device(), "/dev/null was replaced");
    }
    // A legal 250-character file name works (its temporary name stays under 255 bytes).
    let long = tmp.path().join(format!("{}.pal", "p".repeat(246)));
    works(&[
        "palette",
        "grid",
        "--channels",
        "1",
        "--levels",
        "8",
        "--out",
        &s(&long),
    ]);
    assert!(long.is_file());

    // 6. Ordinary use loses nothing.
    let pre = tmp.path().join("pre");
    works(&[
        "pretrain",
        "--data",
        &data,
        "--palette",
        &pal,
        "--preset",
        "test",
        "--side",
        "8",
        "--steps",
        "2",
        "--eval-every",
        "2",
        "--val-images",
        "8",
        "--train-images",
        "64",
        "--out",
        &s(&pre),
    ]);
    let pre_ck = s(&pre.join("checkpoint.safetensors"));
    let pre_bytes = std::fs::read(&pre_ck).unwrap();
    refused(
        &[
            "finetune",
            "--checkpoint",
            &pre_ck,
            "--data",
            &data,
            "--steps",
            "2",
            "--out",
            &s(&pre),
        ],
        &["checkpoint.safetensors", "exists"],
    );
    assert_eq!(
        std::fs::read(&pre_ck).unwrap(),
        pre_bytes,
        "the pretraining checkpoint changed"
    );
    // Resuming with another palette of the same size is refused.
    let pal2 = tmp.path().join("p2.pal");
    works(&[
        "palette",
        "grid",
        "--channels",
        "1",
        "--levels",
        "8",
        "--out",
        &s(&pal2),
    ]);
    refused(
        &[
            "pretrain",
            "--data",
            &data,
            "--palette",
            &s(&pal2),
            "--preset",
            "test",
            "--side",
            "8",
            "--steps",
            "2",
            "--eval-every",
            "2",
            "--val-images",
            "8",
            "--train-images",
            "64",
            "--out",
            &s(&pre),
            "--resume",
        ],
        &["palette"],
    );
    // Resuming with other arguments names the field.
    refused(
        &[
            "pretrain",
            "--data",
            &data,
            "--palette",
            &pal,
            "--preset",
            "test",
            "--side",
            "8",
            "--steps",
            "2",
            "--eval-every",
            "2",
            "--val-images",
            "8",
            "--train-images",
            "64",
            "--lr",
            "0.001",
            "--out",
            &s(&pre),
            "--resume",
        ],
        &["`lr`"],
    );
    // A path spelled differently is the same dataset.
    let dotted = format!("{}/./", data);
    works(&[
        "pretrain",
        "--data",
        &dotted,
        "--palette",
        &pal,
        "--preset",
        "test",
        "--side",
        "8",
        "--steps",
        "2",
        "--eval-every",
        "2",
        "--val-images",
        "8",
        "--train-images",
        "64",
        "--out",
        &s(&pre),
        "--resume",
    ]);
    // The demo refuses a folder made with other arguments, before touching it.
    let demo = tmp.path().join("demo");
    std::fs::create_dir_all(&demo).unwrap();
    std::fs::write(demo.join("demo.json"), r#"{"quick":false,"data":null}"#).unwrap();
    std::fs::write(demo.join("palette.pal"), b"keep me").unwrap();
    refused(
        &["demo", "--quick", "--out", &s(&demo)],
        &["other arguments"],
    );
    assert_eq!(std::fs::read(demo.join("palette.pal")).unwrap(), b"keep me");
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    refused(
        &["demo", "--quick", "--out", &s(&other)],
        &["not a demo folder"],
    );
    // An image folder whose test split lacks a class keeps the train split's labels.
    let folders = tmp.path().join("folders");
    for (split, classes) in [
        ("train", &["ant", "bee", "cat"][..]),
        ("test", &["bee", "cat"][..]),
    ] {
        for c in classes {
            let d = folders.join(split).join(c);
            std::fs::create_dir_all(&d).unwrap();
            for k in 0..2 {
                image::RgbImage::from_pixel(8, 8, image::Rgb([k * 90, 20, 200]))
                    .save(d.join(format!("{k}.png")))
                    .unwrap();
            }
        }
    }
    let test_split = igpt::data::load(&folders, igpt::data::Split::Test, None).unwrap();
    assert_eq!(test_split.classes, vec!["ant", "bee", "cat"]);
    assert_eq!(test_split.labels, vec![1, 1, 2, 2]);
    std::fs::create_dir_all(folders.join("test").join("dog")).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
        .save(folders.join("test/dog/0.png"))
        .unwrap();
    refused(
        &["data", "--data", &s(&folders), "--split", "test"],
        &["dog", "not a class of the train split"],
    );
    // A temporary left by a killed writer is removed by the next write of its target.
    let target = tmp.path().join("grid.pal");
    let stale = tmp.path().join(".grid.pal.999999999.tmp");
    std::fs::write(&stale, vec![0u8; 1 << 20]).unwrap();
    works(&[
        "palette",
        "grid",
        "--channels",
        "1",
        "--levels",
        "4",
        "--out",
        &s(&target),
    ]);
    assert!(!stale.exists(), "the stale temporary is still there");

    // 7. Errors name the file or the flag.
    let other_ck = tmp.path().join("other.safetensors");
    works(&[
        "init",
        "--palette",
        &pal,
        "--preset",
        "test",
        "--side",
        "8",
        "--width",
        "64",
        "--out",
        &s(&other_ck),
    ]);
    refused(
        &[
            "eval",
            "--model",
            &model,
            "--data",
            &data,
            "--checkpoint",
            &s(&other_ck),
        ],
        &[&s(&other_ck), &model],
    );
    // strip: a weights-only copy loads everywhere a checkpoint does; it never writes
    // over its input; a file that is not a checkpoint is named.
    let stripped = tmp.path().join("stripped.safetensors");
    works(&["strip", "--checkpoint", &ck, "--out", &s(&stripped)]);
    works(&[
        "export",
        "--checkpoint",
        &s(&stripped),
        "--probe",
        &head,
        "--out",
        &o("stripped.igpt"),
    ]);
    refused(
        &["strip", "--checkpoint", &ck, "--out", &ck],
        &[&ck, "also an input"],
    );
    refused(
        &["strip", "--checkpoint", &pal, "--out", &o("x.safetensors")],
        &[&pal],
    );
    let no_head = tmp.path().join("nohead.igpt");
    works(&["export", "--checkpoint", &ck, "--out", &s(&no_head)]);
    refused(
        &["classify", "--model", &s(&no_head), &s(&i.png)],
        &[&s(&no_head), "no probe head"],
    );
    refused(
        &["eval", "--model", &s(&no_head), "--data", &data],
        &[&s(&no_head), "no probe head"],
    );

    // Every input is as it was.
    assert_eq!(
        snapshot(&i.dir),
        before,
        "a command changed one of its inputs"
    );
    assert!(i.vec.is_file());
    println!(
        "hostile cases by class: {} runs of igpt, all as required",
        CASES.with(|c| c.get())
    );
}

/// A small deterministic generator (no external crate needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.next() as usize % xs.len()]
    }
    fn chance(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

#[test]
fn random_hostile_arguments_and_files() {
    let tmp = tempfile::tempdir().unwrap();
    let i = inputs(tmp.path());
    let before = snapshot(&i.dir);
    let mutants = tmp.path().join("mut");
    std::fs::create_dir_all(&mutants).unwrap();
    // Hostile values for numeric flags, and a valid small one.
    let hostile = [
        "-1",
        "0",
        "nan",
        "inf",
        "-inf",
        "1e30",
        "4294967296",
        "18446744073709551616",
        "abc",
        "",
        "0.5",
        "1",
    ];
    // (command words, fixed arguments, numeric flags with a valid small value, input files)
    let (data, pal, ck, head, model) = (s(&i.data), s(&i.pal), s(&i.ck), s(&i.head), s(&i.model));
    type Spec<'a> = (
        &'a [&'a str],
        Vec<String>,
        &'a [(&'a str, &'a str)],
        Vec<(&'a str, String)>,
    );
    let specs: Vec<Spec> = vec![
        (
            &["palette", "fit"],
            args(&["--split", "test"]),
            &[
                ("--k", "4"),
                ("--side", "6"),
                ("--sample", "500"),
                ("--iters", "3"),
                ("--channels", "1"),
            ],
            vec![("--data", data.clone())],
        ),
        (
            &["palette", "show"],
            vec![],
            &[("--cols", "4"), ("--cell", "2")],
            vec![("", pal.clone())],
        ),
        (
            &["palette", "grid"],
            vec![],
            &[("--channels", "1"), ("--levels", "4")],
            vec![],
        ),
        (
            &["tokenize"],
            vec![],
            &[("--side", "6")],
            vec![("--palette", pal.clone()), ("", s(&i.png))],
        ),
        (
            &["info"],
            vec![],
            &[
                ("--width", "32"),
                ("--layers", "2"),
                ("--heads", "4"),
                ("--side", "8"),
                ("--vocab", "16"),
            ],
            vec![],
        ),
        (
            &["init"],
            vec![],
            &[
                ("--width", "32"),
                ("--layers", "1"),
                ("--heads", "4"),
                ("--side", "6"),
                ("--probe-layer", "1"),
                ("--classes", "3"),
            ],
            vec![("--palette", pal.clone())],
        ),
        (
            &["pretrain"],
            args(&[
                "--preset",
                "test",
                "--val-images",
                "8",
                "--train-images",
                "32",
            ]),
            &[
                ("--side", "6"),
                ("--steps", "1"),
                ("--batch", "2"),
                ("--lr", "0.001"),
                ("--warmup", "1"),
                ("--weight-decay", "0"),
                ("--clip", "1"),
                ("--eval-every", "1"),
            ],
            vec![("--data", data.clone()), ("--palette", pal.clone())],
        ),
        (
            &["finetune"],
            args(&["--train-images", "30", "--test-images", "5"]),
            &[
                ("--steps", "1"),
                ("--batch", "2"),
                ("--lr", "0.001"),
                ("--eval-every", "1"),
                ("--patience", "1"),
                ("--head-lr-scale", "2"),
                ("--gen-weight", "0.5"),
            ],
            vec![("--checkpoint", ck.clone()), ("--data", data.clone())],
        ),
        (
            &["probe"],
            args(&["--train-images", "40", "--test-images", "10"]),
            &[("--batch", "16"), ("--l2", "0.01")],
            vec![("--checkpoint", ck.clone()), ("--data", data.clone())],
        ),
        (
            &["sample"],
            vec![],
            &[
                ("--n", "2"),
                ("--temperature", "1"),
                ("--top-k", "3"),
                ("--seed", "1"),
            ],
            vec![("--checkpoint", ck.clone())],
        ),
        (
            &["export"],
            vec![],
            &[],
            vec![("--checkpoint", ck.clone()), ("--probe", head.clone())],
        ),
        (
            &["export-vectors"],
            vec![],
            &[("--count", "2")],
            vec![("--model", model.clone()), ("--data", data.clone())],
        ),
        (
            &["classify"],
            vec![],
            &[],
            vec![("--model", model.clone()), ("", s(&i.png))],
        ),
        (
            &["eval"],
            vec![],
            &[("--limit", "5"), ("--nll-images", "2")],
            vec![("--model", model.clone()), ("--data", data.clone())],
        ),
        (
            &["bench", "train"],
            args(&["--preset", "test"]),
            &[("--side", "6"), ("--batch", "2"), ("--steps", "1")],
            vec![],
        ),
        (
            &["bench", "infer"],
            vec![],
            &[("--images", "2"), ("--batch", "2"), ("--rounds", "1")],
            vec![("--model", model.clone())],
        ),
    ];
    let mut rng = Lcg(0x1234_5678);
    let n_cases = 400;
    for case in 0..n_cases {
        let (words, fixed, nums, files) = rng.pick(&specs);
        let mut a: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        a.extend(fixed.iter().cloned());
        for (flag, good) in nums.iter() {
            let v = if rng.chance(35) {
                rng.pick(&hostile).to_string()
            } else {
                good.to_string()
            };
            a.push(flag.to_string());
            a.push(v);
        }
        for (flag, path) in files.iter() {
            let p = if rng.chance(30) {
                // A mutated copy: truncated, bit-flipped, empty, a folder, or /dev/zero.
                let src = Path::new(path);
                let m = mutants.join(format!(
                    "{case}-{}",
                    src.file_name().unwrap().to_string_lossy()
                ));
                match rng.next() % 5 {
                    0 if src.is_file() => {
                        let b = std::fs::read(src).unwrap();
                        let cut = rng.next() as usize % b.len().max(1);
                        std::fs::write(&m, &b[..cut]).unwrap();
                    }
                    1 if src.is_file() => {
                        let mut b = std::fs::read(src).unwrap();
                        for _ in 0..4 {
                            let at = rng.next() as usize % b.len().max(1);
                            b[at] ^= 1 << (rng.next() % 8);
                        }
                        std::fs::write(&m, &b).unwrap();
                    }
                    2 => std::fs::write(&m, b"").unwrap(),
                    3 => std::fs::create_dir_all(&m).unwrap(),
                    _ => {
                        let _ = std::os::unix::fs::symlink("/dev/zero", &m);
                    }
                }
                s(&m)
            } else {
                path.clone()
            };
            if !flag.is_empty() {
                a.push(flag.to_string());
            }
            a.push(p);
        }
        let out_path = tmp.path().join(format!("out-{case}"));
        if !matches!(
            words[0],
            "info" | "classify" | "eval" | "bench" | "tokenize"
        ) {
            a.push("--out".into());
            a.push(s(&out_path));
        }
        let output = run(&a, Duration::from_secs(60));
        let line = sane(&a, &output);
        if output.status.code() == Some(1) {
            // The error names one of the flags or files of the command line.
            let named = a
                .iter()
                .filter(|x| x.starts_with("--") || x.contains('/'))
                .any(|x| line.contains(x.as_str()))
                || line.contains("--");
            assert!(named, "{a:?}: {line:?} names no flag or file");
        }
    }
    assert_eq!(
        snapshot(&i.dir),
        before,
        "a command changed one of its inputs"
    );
    println!("random hostile cases: {n_cases} commands ({} runs of igpt with the inputs' setup), no panic, abort or hang; every failure one error line naming a flag or file; inputs unchanged", CASES.with(|c| c.get()));
}

// ---------------------------------------------------------------------------------------
// Issue 28: nothing lost, nothing silently wrong. Table-driven: every case runs, a failure
// names its case, and the count of cases and passes is printed.

/// A named case of a table.
type Case<'a> = (String, Box<dyn Fn() + 'a>);

/// Runs every case (a panic fails that case only), prints the counts, then fails the test
/// naming every failed case.
fn run_table(table: &str, cases: Vec<Case<'_>>) {
    let n = cases.len();
    let mut failed = Vec::new();
    for (name, f) in cases {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(&f)).is_err() {
            failed.push(name);
        }
    }
    println!(
        "{table}: {n} cases, {} passed{}",
        n - failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failed: {failed:?}")
        }
    );
    assert!(failed.is_empty(), "{table}: failed cases: {failed:?}");
}

fn case<'a>(name: impl Into<String>, f: impl Fn() + 'a) -> Case<'a> {
    (name.into(), Box::new(f))
}

/// The bytes of each path (None: absent), to prove a failing command replaced nothing.
fn contents(paths: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    paths.iter().map(|p| std::fs::read(p).ok()).collect()
}

/// Expects a refusal naming every needle, with `kept` exactly as before.
fn refused_keeping(a: &[&str], needles: &[&str], kept: &[PathBuf]) {
    let before = contents(kept);
    refused(a, needles);
    assert!(
        contents(kept) == before,
        "{a:?}: a failing command changed one of {kept:?}"
    );
}

/// A PNG chunk: length, type, data, CRC of type and data.
fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&igpt_core::crc32(&body).to_be_bytes());
}

/// A PNG header of any size and colour type, with one tiny IDAT and IEND.
fn png_of(w: u32, h: u32, depth: u8, color: u8) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A GIF of `w`x`h` with an image descriptor of the same size and no pixels.
fn gif_of(w: u16, h: u16) -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend_from_slice(&w.to_le_bytes());
    g.extend_from_slice(&h.to_le_bytes());
    g.extend_from_slice(&[0, 0, 0, 0x2c, 0, 0, 0, 0]);
    g.extend_from_slice(&w.to_le_bytes());
    g.extend_from_slice(&h.to_le_bytes());
    g.extend_from_slice(&[0, 2, 1, 0x2c, 0, 0x3b]);
    g
}

/// An IDX pair (images `[n, h, w]` of zeros, labels `[n]`) in `dir` with `prefix`.
fn write_idx(dir: &Path, prefix: &str, n: u32, h: u32, w: u32) {
    let mut img = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        img.extend_from_slice(&d.to_be_bytes());
    }
    img.resize(img.len() + (n * h * w) as usize, 0);
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), img).unwrap();
    let mut lab = vec![0, 0, 8, 1];
    lab.extend_from_slice(&n.to_be_bytes());
    lab.extend((0..n).map(|i| (i % 10) as u8));
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
}

/// Rewrites the JSON header of a safetensors file (tensor data and checkpoint metadata
/// untouched, so an igpt checkpoint's CRC still holds).
fn rewrite_header(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut h);
    let mut text = serde_json::to_vec(&h).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// Sets f32 values of one tensor of a safetensors file in place (HF files: no CRC).
fn poke_tensor(bytes: &mut [u8], name: &str, values: &[(usize, f32)]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = h[name]["data_offsets"][0].as_u64().unwrap() as usize + 8 + n;
    for &(i, v) in values {
        bytes[start + 4 * i..start + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// A k x 3 float32 .npy of `values`.
fn npy_f32(k: usize, values: &[f32]) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({k}, 3), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A JPEG of noise, whole (`None`) or with its scan data cut after `keep` bytes and its
/// end marker appended.
fn noise_jpeg(keep: Option<usize>) -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([
            (x * 37 % 251) as u8,
            (y * 91 % 241) as u8,
            ((x ^ y) * 13) as u8,
        ])
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Jpeg).unwrap();
    let b = buf.into_inner();
    let Some(keep) = keep else { return b };
    let sos = b.windows(2).position(|w| w == [0xff, 0xda]).unwrap();
    let len = u16::from_be_bytes([b[sos + 2], b[sos + 3]]) as usize;
    let mut out = b[..sos + 2 + len + keep].to_vec();
    out.extend_from_slice(&[0xff, 0xd9]);
    out
}

#[test]
fn nothing_lost_nothing_silently_wrong() {
    use igpt::io::checkpoint::Checkpoint;
    use igpt::nn::ParamName;
    let tmp = tempfile::tempdir().unwrap();
    let i = inputs(tmp.path());
    let before = snapshot(&i.dir);
    let t = tmp.path();
    let o = |n: &str| s(&t.join(n));
    let (data, pal, ck, head, model) = (s(&i.data), s(&i.pal), s(&i.ck), s(&i.head), s(&i.model));
    let fm_train = i.data.join("train-images-idx3-ubyte.gz");
    let cifar = t.join("cifar1");
    std::fs::create_dir_all(&cifar).unwrap();
    std::fs::copy(
        repo().join("data/cifar10-sample/test_batch.bin"),
        cifar.join("data_batch_1.bin"),
    )
    .unwrap();

    // 2. Check everything, then write: a failing command replaces no earlier file.
    let keep = t.join("keep");
    std::fs::create_dir_all(&keep).unwrap();
    let k = |n: &str| keep.join(n);
    let mut cases: Vec<Case> = Vec::new();
    for (n, bytes) in [
        ("ck.safetensors", &b"old checkpoint"[..]),
        ("ph.json", b"old head"),
        ("keep.pal", b"old palette"),
        ("m.igpt", b"old model"),
        ("hf.safetensors", b"old import"),
    ] {
        std::fs::write(k(n), bytes).unwrap();
    }
    let init = |extra: &[&str]| -> Vec<String> {
        let mut a = args(&[
            "init",
            "--palette",
            &pal,
            "--preset",
            "test",
            "--side",
            "8",
            "--out",
            &s(&k("ck.safetensors")),
        ]);
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let kept = vec![k("ck.safetensors"), k("ph.json")];
    for (name, extra, needle) in [
        (
            "init --probe-layer 99",
            vec!["--probe-head", "PH", "--probe-layer", "99"],
            "--probe-layer",
        ),
        (
            "init --classes 0",
            vec!["--probe-head", "PH", "--classes", "0"],
            "--classes",
        ),
        (
            "init --classes 300",
            vec!["--probe-head", "PH", "--classes", "300"],
            "--classes",
        ),
        (
            "init --probe-head in a missing folder",
            vec!["--probe-head", "MISSING"],
            "missing",
        ),
        (
            "init --probe-head is a folder",
            vec!["--probe-head", "DIR"],
            "is a folder",
        ),
        (
            "init --vocab 16 with 8 colours",
            vec!["--vocab", "16"],
            "--vocab",
        ),
    ] {
        let kept = kept.clone();
        let ph = s(&k("ph.json"));
        let missing = s(&keep.join("missing/dir/ph.json"));
        let dir = s(&keep);
        cases.push(case(name, move || {
            let extra: Vec<&str> = extra
                .iter()
                .map(|x| match *x {
                    "PH" => ph.as_str(),
                    "MISSING" => missing.as_str(),
                    "DIR" => dir.as_str(),
                    x => x,
                })
                .collect();
            let a = init(&extra);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            refused_keeping(&a, &[needle], &kept);
        }));
    }
    for (name, swatch, needle) in [
        (
            "palette fit --swatch in a missing folder",
            s(&keep.join("missing/dir/s.png")),
            "missing",
        ),
        ("palette fit --swatch is a folder", s(&keep), "is a folder"),
    ] {
        let (data, keep_pal) = (data.clone(), k("keep.pal"));
        cases.push(case(name, move || {
            refused_keeping(
                &[
                    "palette",
                    "fit",
                    "--data",
                    &data,
                    "--k",
                    "4",
                    "--sample",
                    "1000",
                    "--out",
                    &s(&keep_pal),
                    "--swatch",
                    &swatch,
                ],
                &[needle],
                std::slice::from_ref(&keep_pal),
            )
        }));
    }
    // A probe whose folder holds a folder named probe.png: its earlier files stay.
    let pdir = t.join("probe-kept");
    std::fs::create_dir_all(pdir.join("probe.png")).unwrap();
    std::fs::write(pdir.join("probe.json"), "old").unwrap();
    std::fs::write(pdir.join("probe-head.json"), "old").unwrap();
    {
        let (ck, data, pdir) = (ck.clone(), data.clone(), pdir.clone());
        cases.push(case("probe: probe.png is a folder", move || {
            refused_keeping(
                &[
                    "probe",
                    "--checkpoint",
                    &ck,
                    "--data",
                    &data,
                    "--train-images",
                    "40",
                    "--test-images",
                    "10",
                    "--out",
                    &s(&pdir),
                ],
                &["probe.png", "is a folder"],
                &[pdir.join("probe.json"), pdir.join("probe-head.json")],
            )
        }));
    }
    let npy255 = t.join("c255.npy");
    std::fs::write(
        &npy255,
        npy_f32(
            4,
            &[
                0., 0., 0., 85., 85., 85., 170., 170., 170., 255., 255., 255.,
            ],
        ),
    )
    .unwrap();
    {
        let (npy255, keep_pal) = (s(&npy255), k("keep.pal"));
        cases.push(case("palette import of 0..255 centres", move || {
            refused_keeping(
                &[
                    "palette",
                    "import",
                    "--npy",
                    &npy255,
                    "--out",
                    &s(&keep_pal),
                ],
                &["c255.npy", "[-1, 1]"],
                std::slice::from_ref(&keep_pal),
            )
        }));
    }
    {
        let npy_ok = t.join("c1.npy");
        std::fs::write(&npy_ok, npy_f32(2, &[-1., -1., -1., 1., 1., 1.])).unwrap();
        let out = o("imported.pal");
        cases.push(case("palette import of -1..1 centres works", move || {
            works(&["palette", "import", "--npy", &s(&npy_ok), "--out", &out]);
        }));
    }
    for (name, out, needle) in [
        (
            "export --out in a missing folder",
            s(&keep.join("missing/m.igpt")),
            "missing",
        ),
        ("export --out is a folder", s(&keep), "is a folder"),
        (
            "tokenize --preview in a missing folder",
            s(&keep.join("missing/p.png")),
            "missing",
        ),
    ] {
        let (ck, head, pal, png) = (ck.clone(), head.clone(), pal.clone(), s(&i.png));
        cases.push(case(name, move || {
            if name.starts_with("export") {
                refused(
                    &[
                        "export",
                        "--checkpoint",
                        &ck,
                        "--probe",
                        &head,
                        "--out",
                        &out,
                    ],
                    &[needle],
                );
            } else {
                refused(
                    &["tokenize", "--palette", &pal, "--preview", &out, &png],
                    &[needle],
                );
            }
        }));
    }

    // 3. Degenerate images, refused by the loader (one place) whatever the command.
    let zero = t.join("zero");
    std::fs::create_dir_all(&zero).unwrap();
    let mut zero_images: Vec<(String, Vec<u8>)> = vec![
        ("w0.pgm".into(), b"P5\n0 4\n255\n".to_vec()),
        ("h0.pgm".into(), b"P5\n4 0\n255\n".to_vec()),
        ("w0.ppm".into(), b"P6\n0 4\n255\n".to_vec()),
        ("h0.ppm".into(), b"P6\n4 0\n255\n".to_vec()),
        ("zero.ppm".into(), b"P6\n0 0\n255\n".to_vec()),
        (
            "w0.pam".into(),
            b"P7\nWIDTH 0\nHEIGHT 4\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n".to_vec(),
        ),
        (
            "h0.pam".into(),
            b"P7\nWIDTH 4\nHEIGHT 0\nDEPTH 1\nMAXVAL 255\nTUPLTYPE GRAYSCALE\nENDHDR\n".to_vec(),
        ),
        ("w0.gif".into(), gif_of(0, 4)),
        ("h0.gif".into(), gif_of(4, 0)),
        ("w0.png".into(), png_of(0, 4, 8, 2)),
    ];
    for keep_bytes in [0usize, 10, 20] {
        zero_images.push((format!("cut{keep_bytes}.jpg"), noise_jpeg(Some(keep_bytes))));
    }
    for (name, bytes) in &zero_images {
        let f = zero.join(name);
        std::fs::write(&f, bytes).unwrap();
        // The same image in a class folder.
        let ds = t.join(format!("ds-{name}"));
        std::fs::create_dir_all(ds.join("a")).unwrap();
        std::fs::copy(&f, ds.join("a").join(name)).unwrap();
        let commands: Vec<(&str, Vec<String>)> = vec![
            ("classify", args(&["classify", "--model", &model, &s(&f)])),
            ("tokenize", args(&["tokenize", "--palette", &pal, &s(&f)])),
            (
                "tokenize --side",
                args(&["tokenize", "--palette", &pal, "--side", "8", &s(&f)]),
            ),
            (
                "tokenize --preview",
                args(&[
                    "tokenize",
                    "--palette",
                    &pal,
                    "--preview",
                    &o(&format!("pv-{name}.png")),
                    &s(&f),
                ]),
            ),
            ("data", args(&["data", "--data", &s(&ds)])),
            (
                "palette fit",
                args(&[
                    "palette",
                    "fit",
                    "--data",
                    &s(&ds),
                    "--k",
                    "2",
                    "--side",
                    "4",
                    "--out",
                    &o(&format!("pf-{name}.pal")),
                ]),
            ),
        ];
        for (what, a) in commands {
            let needle = name.clone();
            cases.push(case(format!("{what} of {name}"), move || {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                refused(&a, &[&needle]);
            }));
        }
    }
    {
        let (model, jpg) = (model.clone(), s(&i.jpg));
        let noise = t.join("noise.jpg");
        std::fs::write(&noise, noise_jpeg(None)).unwrap();
        cases.push(case("whole JPEGs still classify", move || {
            works(&["classify", "--model", &model, &jpg, &s(&noise)]);
        }));
    }
    // IDX files with a zero image dimension.
    for (h, w) in [(0u32, 0u32), (0, 8), (8, 0)] {
        let d = t.join(format!("idx-{h}x{w}"));
        std::fs::create_dir_all(&d).unwrap();
        write_idx(&d, "train", 20, h, w);
        write_idx(&d, "t10k", 10, h, w);
        let ds = s(&d);
        let commands: Vec<(&str, Vec<String>)> = vec![
            ("data", args(&["data", "--data", &ds])),
            (
                "palette fit",
                args(&[
                    "palette",
                    "fit",
                    "--data",
                    &ds,
                    "--k",
                    "2",
                    "--out",
                    &o(&format!("i{h}{w}.pal")),
                ]),
            ),
            (
                "probe --raw-pixels",
                args(&[
                    "probe",
                    "--raw-pixels",
                    "--side",
                    "4",
                    "--data",
                    &ds,
                    "--out",
                    &o(&format!("ip{h}{w}")),
                ]),
            ),
            (
                "pretrain",
                args(&[
                    "pretrain",
                    "--data",
                    &ds,
                    "--palette",
                    &pal,
                    "--preset",
                    "test",
                    "--side",
                    "8",
                    "--steps",
                    "2",
                    "--out",
                    &o(&format!("ir{h}{w}")),
                ]),
            ),
            ("eval", args(&["eval", "--model", &model, "--data", &ds])),
        ];
        for (what, a) in commands {
            cases.push(case(format!("{what} of IDX [n, {h}, {w}]"), move || {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                refused(&a, &["idx3-ubyte"]);
            }));
        }
    }

    // 4. One data file is not a train/test pair.
    for (what, file) in [
        ("IDX", s(&fm_train)),
        ("CIFAR", s(&cifar.join("data_batch_1.bin"))),
    ] {
        let commands: Vec<(&str, Vec<String>)> = vec![
            (
                "probe --raw-pixels",
                args(&[
                    "probe",
                    "--raw-pixels",
                    "--side",
                    "8",
                    "--data",
                    &file,
                    "--out",
                    &o("sf-probe"),
                ]),
            ),
            (
                "probe",
                args(&[
                    "probe",
                    "--checkpoint",
                    &ck,
                    "--data",
                    &file,
                    "--out",
                    &o("sf-probe2"),
                ]),
            ),
            (
                "pretrain",
                args(&[
                    "pretrain",
                    "--data",
                    &file,
                    "--palette",
                    &pal,
                    "--preset",
                    "test",
                    "--side",
                    "8",
                    "--steps",
                    "2",
                    "--out",
                    &o("sf-run"),
                ]),
            ),
            (
                "finetune",
                args(&[
                    "finetune",
                    "--checkpoint",
                    &ck,
                    "--data",
                    &file,
                    "--steps",
                    "2",
                    "--out",
                    &o("sf-ft"),
                ]),
            ),
        ];
        for (cmd, a) in commands {
            let file = file.clone();
            cases.push(case(format!("{cmd} on one {what} file"), move || {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                refused(&a, &[&file, "one data file"]);
                for d in ["sf-probe", "sf-probe2", "sf-run", "sf-ft"] {
                    assert!(!t.join(d).exists(), "{d}: a failed run left its folder");
                }
            }));
        }
    }
    {
        let (file, pal) = (s(&fm_train), pal.clone());
        cases.push(case(
            "pretrain on one IDX file without validation works",
            move || {
                works(&[
                    "pretrain",
                    "--data",
                    &file,
                    "--palette",
                    &pal,
                    "--preset",
                    "test",
                    "--side",
                    "8",
                    "--steps",
                    "2",
                    "--batch",
                    "2",
                    "--eval-every",
                    "2",
                    "--val-images",
                    "0",
                    "--out",
                    &o("sf-noval"),
                ]);
            },
        ));
    }

    // 5. Finite but absurd numbers in files.
    let good_head: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&i.head).unwrap()).unwrap();
    type HeadEdit = Box<dyn Fn(&mut serde_json::Value)>;
    let head_variants: Vec<(&str, HeadEdit)> = vec![
        (
            "std 1e-45",
            Box::new(|h| h["std"][0] = serde_json::json!(1e-45)),
        ),
        ("std 0", Box::new(|h| h["std"][0] = serde_json::json!(0.0))),
        (
            "std 3e38",
            Box::new(|h| h["std"][1] = serde_json::json!(3e38)),
        ),
        (
            "weight 3e38",
            Box::new(|h| h["weight"][0] = serde_json::json!(3e38)),
        ),
        (
            "weight -3e38",
            Box::new(|h| h["weight"][5] = serde_json::json!(-3e38)),
        ),
        (
            "bias 3e38",
            Box::new(|h| h["bias"][0] = serde_json::json!(3e38)),
        ),
        (
            "mean 3e38",
            Box::new(|h| h["mean"][0] = serde_json::json!(3e38)),
        ),
        (
            "3000 classes",
            Box::new(|h| {
                let d = h["mean"].as_array().unwrap().len();
                h["classes"] =
                    serde_json::json!((0..3000).map(|c| c.to_string()).collect::<Vec<_>>());
                h["bias"] = serde_json::json!(vec![0.0; 3000]);
                h["weight"] = serde_json::json!(vec![0.01; 3000 * d]);
            }),
        ),
        (
            "std missing a value",
            Box::new(|h| {
                h["std"].as_array_mut().unwrap().pop();
            }),
        ),
    ];
    for (name, edit) in head_variants {
        let mut h = good_head.clone();
        edit(&mut h);
        let f = t.join(format!("head-{}.json", name.replace(' ', "_")));
        std::fs::write(&f, serde_json::to_vec(&h).unwrap()).unwrap();
        let (ck, out) = (ck.clone(), k("m.igpt"));
        cases.push(case(
            format!("export of a probe head with {name}"),
            move || {
                refused_keeping(
                    &[
                        "export",
                        "--checkpoint",
                        &ck,
                        "--probe",
                        &s(&f),
                        "--out",
                        &s(&out),
                    ],
                    &[&s(&f)],
                    std::slice::from_ref(&out),
                );
            },
        ));
    }
    // Checkpoints: absurd weights (valid CRC), and tensors of the wrong arrangement.
    let good = Checkpoint::load(&i.ck).unwrap();
    let mut ck_variants: Vec<(String, PathBuf)> = Vec::new();
    for (name, which) in [
        ("lm_head all 3e38", ParamName::LmHead),
        ("wte one 3e38", ParamName::Wte),
        ("wpe one -3e38", ParamName::Wpe),
    ] {
        let mut c = good.clone();
        for (n, m) in c.params.iter_mut() {
            if n == which {
                if name.contains("all") {
                    m.data.iter_mut().for_each(|x| *x = 3e38);
                } else {
                    m.data[3] = if name.contains('-') { -3e38 } else { 3e38 };
                }
            }
        }
        let f = t.join(format!("ck-{}.safetensors", name.replace(' ', "_")));
        c.save(&f).unwrap();
        ck_variants.push((name.to_string(), f));
    }
    let raw = std::fs::read(&i.ck).unwrap();
    for (name, tensor) in [
        ("lm_head transposed", "lm_head.weight"),
        ("wpe transposed", "transformer.wpe.weight"),
        ("h.0 c_fc transposed", "transformer.h.0.mlp.c_fc.weight"),
    ] {
        let bytes = rewrite_header(&raw, |h| {
            let shape = h[tensor]["shape"].as_array_mut().unwrap();
            shape.reverse();
        });
        let f = t.join(format!("ck-{}.safetensors", name.replace(' ', "_")));
        std::fs::write(&f, bytes).unwrap();
        ck_variants.push((name.to_string(), f));
    }
    for (name, f) in ck_variants {
        let commands: Vec<(&str, Vec<String>)> = vec![
            (
                "export",
                args(&[
                    "export",
                    "--checkpoint",
                    &s(&f),
                    "--probe",
                    &head,
                    "--out",
                    &o("absurd.igpt"),
                ]),
            ),
            (
                "probe",
                args(&[
                    "probe",
                    "--checkpoint",
                    &s(&f),
                    "--data",
                    &data,
                    "--out",
                    &o("absurd-probe"),
                ]),
            ),
            (
                "sample",
                args(&[
                    "sample",
                    "--checkpoint",
                    &s(&f),
                    "--n",
                    "1",
                    "--out",
                    &o("absurd.png"),
                ]),
            ),
            (
                "eval --checkpoint",
                args(&[
                    "eval",
                    "--model",
                    &model,
                    "--data",
                    &data,
                    "--limit",
                    "5",
                    "--checkpoint",
                    &s(&f),
                ]),
            ),
        ];
        for (cmd, a) in commands {
            let f = s(&f);
            cases.push(case(
                format!("{cmd} of a checkpoint with {name}"),
                move || {
                    let a: Vec<&str> = a.iter().map(String::as_str).collect();
                    refused(&a, &[&f]);
                },
            ));
        }
    }

    // 6. Inputs that do not belong together.
    {
        let other = t.join("other.safetensors");
        works(&[
            "init",
            "--palette",
            &pal,
            "--preset",
            "test",
            "--side",
            "8",
            "--seed",
            "7",
            "--out",
            &s(&other),
        ]);
        let (model, data) = (model.clone(), data.clone());
        cases.push(case(
            "eval --checkpoint that is not the source",
            move || {
                refused(
                    &[
                        "eval",
                        "--model",
                        &model,
                        "--data",
                        &data,
                        "--limit",
                        "5",
                        "--checkpoint",
                        &s(&other),
                    ],
                    &["other.safetensors", "not the model file's source"],
                );
            },
        ));
    }
    {
        let (model, data, ck) = (model.clone(), data.clone(), ck.clone());
        cases.push(case(
            "eval --checkpoint that is the source works",
            move || {
                works(&[
                    "eval",
                    "--model",
                    &model,
                    "--data",
                    &data,
                    "--limit",
                    "5",
                    "--checkpoint",
                    &ck,
                ]);
            },
        ));
    }
    {
        // Three classes of 8x8 images: the model's head has ten.
        let d = t.join("three");
        for split in ["train", "test"] {
            for c in ["a", "b", "c"] {
                std::fs::create_dir_all(d.join(split).join(c)).unwrap();
                image::GrayImage::from_pixel(8, 8, image::Luma([60]))
                    .save(d.join(split).join(c).join("x.png"))
                    .unwrap();
            }
        }
        let model = model.clone();
        cases.push(case("eval on data of another class count", move || {
            refused(
                &["eval", "--model", &model, "--data", &s(&d)],
                &["3 classes", "m.igpt"],
            );
        }));
    }
    {
        let mut bytes = std::fs::read(&i.hf_weights).unwrap();
        poke_tensor(
            &mut bytes,
            "transformer.h.0.attn.c_proj.weight",
            &[(3, f32::INFINITY)],
        );
        let inf = t.join("inf.safetensors");
        std::fs::write(&inf, &bytes).unwrap();
        let mut bytes = std::fs::read(&i.hf_weights).unwrap();
        poke_tensor(
            &mut bytes,
            "transformer.h.1.mlp.c_fc.bias",
            &[(2, f32::NAN)],
        );
        let nan = t.join("nanbias.safetensors");
        std::fs::write(&nan, &bytes).unwrap();
        for (name, f, needle) in [
            ("import-hf of an infinite weight", inf, "c_proj"),
            ("import-hf of a NaN bias", nan, "c_fc.bias"),
        ] {
            let (cfg, out) = (s(&i.hf_json), k("hf.safetensors"));
            cases.push(case(name, move || {
                refused_keeping(
                    &[
                        "import-hf",
                        "--config",
                        &cfg,
                        "--weights",
                        &s(&f),
                        "--out",
                        &s(&out),
                    ],
                    &[&s(&f), needle],
                    std::slice::from_ref(&out),
                );
            }));
        }
    }
    // Resume past --steps, and resume on changed data.
    {
        let mydata = t.join("mydata");
        std::fs::create_dir_all(&mydata).unwrap();
        for f in std::fs::read_dir(&i.data).unwrap().flatten() {
            std::fs::copy(f.path(), mydata.join(f.file_name())).unwrap();
        }
        let run = t.join("resume-run");
        let pretrain = |steps: &str, extra: &[&str]| -> Vec<String> {
            let mut a = args(&[
                "pretrain",
                "--data",
                &s(&mydata),
                "--palette",
                &pal,
                "--preset",
                "test",
                "--side",
                "8",
                "--batch",
                "2",
                "--eval-every",
                "2",
                "--val-images",
                "8",
                "--steps",
                steps,
                "--out",
                &s(&run),
            ]);
            a.extend(extra.iter().map(|x| x.to_string()));
            a
        };
        let first = pretrain("6", &["--stop-after", "4"]);
        works(&first.iter().map(String::as_str).collect::<Vec<_>>());
        let state = run.join("checkpoint.safetensors");
        // A state whose saved step is past its run's --steps (a crafted file, CRC valid).
        let past_dir = t.join("past-run");
        std::fs::create_dir_all(&past_dir).unwrap();
        let mut c = Checkpoint::load(&state).unwrap();
        c.state.as_mut().unwrap().step = 100_000;
        c.save(&past_dir.join("checkpoint.safetensors")).unwrap();
        std::fs::copy(
            run.join("data-fingerprint.json"),
            past_dir.join("data-fingerprint.json"),
        )
        .unwrap();
        let mut past = pretrain("6", &["--resume"]);
        let at = past.iter().position(|x| x == &s(&run)).unwrap();
        past[at] = s(&past_dir);
        let past_state = past_dir.join("checkpoint.safetensors");
        let state2 = state.clone();
        cases.push(case("resume past --steps", move || {
            let a: Vec<&str> = past.iter().map(String::as_str).collect();
            refused_keeping(
                &a,
                &["checkpoint.safetensors", "step 100000", "--steps 6"],
                std::slice::from_ref(&past_state),
            );
        }));
        let changed = pretrain("6", &["--resume"]);
        let mydata2 = mydata.clone();
        cases.push(case("resume on changed data", move || {
            // Other, valid test images: the training split's.
            let f = mydata2.join("t10k-images-idx3-ubyte.gz");
            let labels = mydata2.join("t10k-labels-idx1-ubyte.gz");
            let orig = std::fs::read(&f).unwrap();
            let orig_labels = std::fs::read(&labels).unwrap();
            std::fs::copy(mydata2.join("train-images-idx3-ubyte.gz"), &f).unwrap();
            std::fs::copy(mydata2.join("train-labels-idx1-ubyte.gz"), &labels).unwrap();
            let a: Vec<&str> = changed.iter().map(String::as_str).collect();
            let r = std::panic::catch_unwind(|| {
                refused_keeping(
                    &a,
                    &["t10k-images-idx3-ubyte.gz", "changed"],
                    std::slice::from_ref(&state2),
                )
            });
            std::fs::write(&f, &orig).unwrap();
            std::fs::write(&labels, &orig_labels).unwrap();
            assert!(r.is_ok());
            // With the data restored, the run resumes.
            works(&a);
        }));
    }

    // 7. Leftovers.
    {
        let (ck, data) = (ck.clone(), data.clone());
        cases.push(case(
            "a probe folder reused without --concat loses the old concat head",
            move || {
                let out = o("reused-probe");
                let base = [
                    "probe",
                    "--checkpoint",
                    &ck,
                    "--data",
                    &data,
                    "--train-images",
                    "40",
                    "--test-images",
                    "10",
                    "--out",
                    &out,
                ];
                let mut with = base.to_vec();
                with.extend(["--concat-layers", "1,2"]);
                works(&with);
                assert!(Path::new(&out).join("probe-head-concat.json").exists());
                works(&base);
                assert!(!Path::new(&out).join("probe-head-concat.json").exists());
                assert!(
                    !Path::new(&out).join(".igpt-lock").exists(),
                    "the lock stays"
                );
            },
        ));
    }
    for (cmd, a) in [
        (
            "probe",
            args(&[
                "probe",
                "--checkpoint",
                &ck,
                "--data",
                &data,
                "--layers",
                "99",
                "--out",
                &o("gone/probe"),
            ]),
        ),
        (
            "finetune",
            args(&[
                "finetune",
                "--checkpoint",
                &ck,
                "--data",
                &s(&t.join("zero")),
                "--out",
                &o("gone2/ft"),
            ]),
        ),
        (
            "pretrain",
            args(&[
                "pretrain",
                "--data",
                &data,
                "--palette",
                &s(&t.join("no.pal")),
                "--out",
                &o("gone3/run"),
            ]),
        ),
    ] {
        cases.push(case(
            format!("a failed {cmd} leaves no folder"),
            move || {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                let out = Path::new(a.last().unwrap()).to_path_buf();
                let out_parent = out.parent().unwrap().to_path_buf();
                let _ = run(&args(&a), Duration::from_secs(60));
                assert!(
                    !out.exists() && !out_parent.exists(),
                    "{a:?} left {}",
                    out_parent.display()
                );
            },
        ));
    }

    // 8. Allocation from an argument or an image header.
    {
        let model = model.clone();
        cases.push(case("bench infer --images 1e12", move || {
            refused(
                &[
                    "bench",
                    "infer",
                    "--model",
                    &model,
                    "--images",
                    "1000000000000",
                ],
                &["--images"],
            );
        }));
    }
    {
        let big = t.join("big16.png");
        std::fs::write(&big, png_of(16384, 8192, 16, 6)).unwrap();
        let (model, pal) = (model.clone(), pal.clone());
        cases.push(case("a 16384x8192 RGBA16 PNG header", move || {
            refused(&["classify", "--model", &model, &s(&big)], &["big16.png"]);
            refused(&["tokenize", "--palette", &pal, &s(&big)], &["big16.png"]);
        }));
    }

    // 9. Messages.
    for (a, needle) in [
        (vec![], "`igpt` needs a subcommand"),
        (vec!["palette"], "`igpt palette` needs a subcommand"),
        (vec!["bench"], "`igpt bench` needs a subcommand"),
    ] {
        cases.push(case(
            format!("igpt {} without a subcommand", a.join(" ")),
            move || {
                refused(&a, &[needle]);
            },
        ));
    }
    {
        let (ck, out) = (ck.clone(), o("3000.igpt"));
        let h3000 = s(&t.join("head-3000_classes.json"));
        cases.push(case(
            "export of a 3000-class head blames the head",
            move || {
                let line = refused(
                    &[
                        "export",
                        "--checkpoint",
                        &ck,
                        "--probe",
                        &h3000,
                        "--out",
                        &out,
                    ],
                    &["head-3000_classes.json", "classes"],
                );
                assert!(!line.contains("malformed model file"), "{line}");
            },
        ));
    }

    run_table("nothing lost, nothing silently wrong", cases);
    assert_eq!(
        snapshot(&i.dir),
        before,
        "a command changed one of its inputs"
    );
}

/// Starts igpt without waiting for it.
fn spawn(a: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_igpt"))
        .args(a)
        .env("IGPT_NO_PROGRESS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start igpt")
}

/// Hidden temporaries (`.NAME.PID.tmp`) and run locks left anywhere under `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                stack.push(e.path());
            } else if (name.starts_with('.') && name.ends_with(".tmp")) || name == ".igpt-lock" {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn one_run_per_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let i = inputs(tmp.path());
    let t = tmp.path();
    let (data, pal, ck) = (s(&i.data), s(&i.pal), s(&i.ck));
    let mut cases: Vec<Case> = Vec::new();
    let commands: Vec<(&str, Vec<String>)> = vec![
        (
            "pretrain",
            args(&[
                "pretrain",
                "--data",
                &data,
                "--palette",
                &pal,
                "--preset",
                "test",
                "--side",
                "8",
                "--steps",
                "60",
                "--batch",
                "4",
                "--eval-every",
                "20",
                "--val-images",
                "20",
            ]),
        ),
        (
            "probe",
            args(&[
                "probe",
                "--checkpoint",
                &ck,
                "--data",
                &data,
                "--train-images",
                "200",
                "--test-images",
                "50",
            ]),
        ),
        (
            "finetune",
            args(&[
                "finetune",
                "--checkpoint",
                &ck,
                "--data",
                &data,
                "--steps",
                "20",
                "--batch",
                "4",
                "--eval-every",
                "10",
                "--train-images",
                "60",
                "--test-images",
                "20",
            ]),
        ),
    ];
    for (cmd, base) in commands {
        for delay_ms in [0u64, 150] {
            let dir = t.join(format!("two-{cmd}-{delay_ms}"));
            let mut a = base.clone();
            a.extend(args(&["--out", &s(&dir)]));
            cases.push(case(
                format!("two {cmd} runs on one folder, {delay_ms} ms apart"),
                move || {
                    let first = spawn(&a);
                    std::thread::sleep(Duration::from_millis(delay_ms));
                    let second = spawn(&a);
                    let outs = [
                        first.wait_with_output().unwrap(),
                        second.wait_with_output().unwrap(),
                    ];
                    let ok: Vec<&Output> = outs.iter().filter(|o| o.status.success()).collect();
                    let bad: Vec<&Output> = outs.iter().filter(|o| !o.status.success()).collect();
                    assert_eq!(
                        ok.len(),
                        1,
                        "{a:?}: want one run to proceed: {:?}",
                        outs.iter()
                            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                            .collect::<Vec<_>>()
                    );
                    let line = sane(&a, bad[0]);
                    assert!(
                        line.contains(&s(&dir))
                            && (line.contains("in use by another run") || line.contains("exists")),
                        "{line}"
                    );
                    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
                    if cmd == "pretrain" || cmd == "finetune" {
                        let ckf = dir.join("checkpoint.safetensors");
                        igpt::io::checkpoint::Checkpoint::load(&ckf)
                            .expect("the proceeding run's checkpoint");
                        let log = std::fs::read_to_string(dir.join("log.csv")).unwrap();
                        assert!(log.lines().count() >= 2, "{log}");
                    } else {
                        assert!(
                            dir.join("probe.json").exists() && dir.join("probe-head.json").exists()
                        );
                    }
                },
            ));
        }
    }
    {
        let dir = t.join("stale");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".igpt-lock"), "process 999999 on elsewhere").unwrap();
        let a = args(&[
            "pretrain",
            "--data",
            &data,
            "--palette",
            &pal,
            "--preset",
            "test",
            "--side",
            "8",
            "--steps",
            "2",
            "--batch",
            "2",
            "--eval-every",
            "2",
            "--val-images",
            "4",
            "--out",
            &s(&dir),
        ]);
        cases.push(case("a stale lock is taken over, saying so", move || {
            let out = run(&a, Duration::from_secs(120));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("taking over the run lock of process 999999 on elsewhere"),
                "{err}"
            );
            assert!(!dir.join(".igpt-lock").exists());
        }));
    }
    {
        let dir = t.join("held");
        let a = args(&[
            "probe",
            "--checkpoint",
            &ck,
            "--data",
            &data,
            "--train-images",
            "40",
            "--test-images",
            "10",
            "--out",
            &s(&dir),
        ]);
        cases.push(case(
            "a lock held by a live process refuses, naming it",
            move || {
                let lock = igpt::io::lock::RunLock::acquire(&dir).unwrap();
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                refused(&a, &[&s(&dir), &format!("process {}", std::process::id())]);
                drop(lock);
                works(&a);
            },
        ));
    }
    run_table("one run per folder", cases);
}

#[test]
fn interrupts_leave_old_or_new_files_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let i = inputs(tmp.path());
    let t = tmp.path();
    let (data, pal, ck, head) = (s(&i.data), s(&i.pal), s(&i.ck), s(&i.head));
    let pretrain = |dir: &Path| {
        args(&[
            "pretrain",
            "--data",
            &data,
            "--palette",
            &pal,
            "--preset",
            "test",
            "--side",
            "8",
            "--steps",
            "40",
            "--batch",
            "4",
            "--eval-every",
            "5",
            "--val-images",
            "20",
            "--out",
            &s(dir),
        ])
    };
    let reference = t.join("reference");
    works(
        &pretrain(&reference)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let want = std::fs::read(reference.join("checkpoint.safetensors")).unwrap();
    let mut rng = Lcg(0x2828);
    let mut cases: Vec<Case> = Vec::new();
    for cmd in ["pretrain", "probe", "finetune", "export"] {
        for (sig_name, sig) in [("SIGINT", libc::SIGINT), ("SIGTERM", libc::SIGTERM)] {
            for round in 0..2 {
                let delay = 20 + rng.next() % 500;
                let dir = t.join(format!("int-{cmd}-{sig_name}-{round}"));
                let a = match cmd {
                    "pretrain" => pretrain(&dir),
                    "probe" => args(&[
                        "probe",
                        "--checkpoint",
                        &ck,
                        "--data",
                        &data,
                        "--train-images",
                        "300",
                        "--test-images",
                        "100",
                        "--out",
                        &s(&dir),
                    ]),
                    "finetune" => args(&[
                        "finetune",
                        "--checkpoint",
                        &ck,
                        "--data",
                        &data,
                        "--steps",
                        "30",
                        "--batch",
                        "4",
                        "--eval-every",
                        "5",
                        "--train-images",
                        "60",
                        "--test-images",
                        "20",
                        "--out",
                        &s(&dir),
                    ]),
                    _ => args(&[
                        "export",
                        "--checkpoint",
                        &ck,
                        "--probe",
                        &head,
                        "--out",
                        &s(&dir.join("m.igpt")),
                    ]),
                };
                let want = want.clone();
                cases.push(case(format!("{cmd} interrupted by {sig_name} after {delay} ms"), move || {
                    if cmd == "export" {
                        std::fs::create_dir_all(&dir).unwrap();
                        std::fs::write(dir.join("m.igpt"), b"old").unwrap();
                    }
                    let child = spawn(&a);
                    std::thread::sleep(Duration::from_millis(delay));
                    // Safety: signalling the child this test started.
                    unsafe {
                        libc::kill(child.id() as i32, sig);
                    }
                    let out = child.wait_with_output().unwrap();
                    assert!(
                        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    assert!(leftovers(&dir).is_empty(), "{a:?} after {delay} ms left {:?}", leftovers(&dir));
                    match cmd {
                        "pretrain" | "finetune" => {
                            let state = dir.join(if cmd == "pretrain" { "checkpoint.safetensors" } else { "state.safetensors" });
                            let mut again = a.clone();
                            if state.exists() {
                                igpt::io::checkpoint::Checkpoint::load(&state).expect("a whole checkpoint");
                                again.push("--resume".into());
                            } else if dir.exists() {
                                // Interrupted before the first checkpoint: start afresh.
                                std::fs::remove_dir_all(&dir).unwrap();
                            }
                            works(&again.iter().map(String::as_str).collect::<Vec<_>>());
                            if cmd == "pretrain" {
                                let got = std::fs::read(&state).unwrap();
                                assert!(got == want, "the resumed run's checkpoint differs from the uninterrupted one's");
                            }
                        }
                        "probe" => {
                            if let Ok(text) = std::fs::read_to_string(dir.join("probe.json")) {
                                serde_json::from_str::<serde_json::Value>(&text).expect("a whole probe.json");
                                assert!(dir.join("probe-head.json").exists());
                            }
                        }
                        _ => {
                            let b = std::fs::read(dir.join("m.igpt")).unwrap();
                            assert!(b == b"old" || igpt_core::Model::parse(&b).is_ok(), "neither the old nor a whole new model file");
                        }
                    }
                }));
            }
        }
    }
    run_table("interrupts", cases);
}
