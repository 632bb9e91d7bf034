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
