//! `igpt export-hf` and `igpt import-hf --dir` end to end through the binary: a
//! checkpoint goes out as an HF folder and comes back identical (weights, shape,
//! palette); bad input is one error line naming the file, exit 1, nothing written.

use igpt::io::checkpoint::Checkpoint;
use std::path::Path;
use std::process::{Command, Output};

fn igpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_igpt"))
        .args(args)
        .output()
        .expect("run igpt")
}

fn ok(args: &[&str]) -> String {
    let out = igpt(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs igpt expecting failure: exit 1 and one `error:` line holding every needle.
fn fails(args: &[&str], needles: &[&str]) {
    let out = igpt(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: {:?} lacks {n:?}", lines[0]);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn export_hf_then_import_hf_dir_gives_the_checkpoint_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pal = d.join("p.pal");
    let ck = d.join("ck.safetensors");
    ok(&[
        "palette",
        "grid",
        "--channels",
        "3",
        "--levels",
        "4",
        "--out",
        s(&pal),
    ]);
    ok(&[
        "init",
        "--palette",
        s(&pal),
        "--layers",
        "2",
        "--width",
        "32",
        "--heads",
        "4",
        "--side",
        "6",
        "--seed",
        "3",
        "--out",
        s(&ck),
    ]);
    let hf = d.join("hf");
    let said = ok(&["export-hf", "--checkpoint", s(&ck), "--out", s(&hf)]);
    assert!(said.contains("preprocessor_config.json"), "{said}");
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        assert!(hf.join(f).is_file(), "{f} missing");
    }
    let back = d.join("back.safetensors");
    ok(&["import-hf", "--dir", s(&hf), "--out", s(&back)]);
    let (a, b) = (
        Checkpoint::load(&ck).unwrap(),
        Checkpoint::load(&back).unwrap(),
    );
    assert_eq!(b.config, a.config);
    assert_eq!(b.palette, a.palette);
    assert!(b.params == a.params, "weights differ after the round trip");

    // The preprocessor's clusters also attach through --palette.
    let again = d.join("again.safetensors");
    ok(&[
        "import-hf",
        "--config",
        s(&hf.join("config.json")),
        "--weights",
        s(&hf.join("model.safetensors")),
        "--palette",
        s(&hf.join("preprocessor_config.json")),
        "--out",
        s(&again),
    ]);
    assert_eq!(Checkpoint::load(&again).unwrap().palette, a.palette);
}

#[test]
fn export_hf_and_import_hf_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = d.join("missing.safetensors");
    let out = d.join("out");
    fails(
        &["export-hf", "--checkpoint", s(&missing), "--out", s(&out)],
        &["missing.safetensors"],
    );
    assert!(!out.exists(), "nothing is written for a bad input");
    let junk = d.join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    fails(
        &["export-hf", "--checkpoint", s(&junk), "--out", s(&out)],
        &["junk.safetensors"],
    );
    // A folder without the HF files names the one it lacks.
    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    fails(
        &[
            "import-hf",
            "--dir",
            s(&empty),
            "--out",
            s(&d.join("x.safetensors")),
        ],
        &["config.json"],
    );
    // Clusters that are not numbers, and an output that is an input.
    let pal = d.join("p.pal");
    let ck = d.join("ck.safetensors");
    ok(&[
        "palette",
        "grid",
        "--channels",
        "1",
        "--levels",
        "8",
        "--out",
        s(&pal),
    ]);
    ok(&[
        "init",
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
        "--out",
        s(&ck),
    ]);
    let hf = d.join("hf");
    ok(&["export-hf", "--checkpoint", s(&ck), "--out", s(&hf)]);
    let pre = hf.join("preprocessor_config.json");
    std::fs::write(&pre, r#"{"clusters": [[0.0, "red", 0.0]]}"#).unwrap();
    fails(
        &[
            "import-hf",
            "--dir",
            s(&hf),
            "--out",
            s(&d.join("y.safetensors")),
        ],
        &["preprocessor_config.json", "cluster 0"],
    );
    std::fs::copy(&ck, hf.join("model.safetensors")).unwrap();
    fails(
        &[
            "export-hf",
            "--checkpoint",
            s(&hf.join("model.safetensors")),
            "--out",
            s(&hf),
        ],
        &["model.safetensors", "input"],
    );
}
