//! Data-parallel training under MPI, end to end: `igpt` built with `--features mpi`,
//! launched through `mpirun --allow-run-as-root --oversubscribe -np 2`.
//!
//! Run with `cargo test -p igpt --features mpi --test mpi` (needs libopenmpi-dev,
//! openmpi-bin and libclang-dev; CI installs them and runs these tests within
//! `cargo test --workspace --features igpt/mpi`). Cargo builds the `igpt`
//! binary of that test run with the feature, and `CARGO_BIN_EXE_igpt` points at it.
//! Without the feature this file holds one test that prints why it did nothing; with it,
//! a missing `mpirun` skips with a printed reason, except under CI, where it fails.
//!
//! What the tests show, for AR and BERT pretraining and for fine-tuning:
//! - both ranks end with bit-identical parameters (each rank prints its fingerprint;
//!   rank 0's must also be the fingerprint of the checkpoint it wrote);
//! - the parameters after 6 steps on 2 ranks match one process on the same global
//!   batches within [`TOL`] (the shard gradients are summed in another order), while
//!   they moved by far more than that since step 3;
//! - 3 steps, a stop and `--resume` give the bytes of 6 uninterrupted steps on 2 ranks,
//!   and resuming those 3 steps on one process lands within [`TOL`] of them too;
//! - a rank that fails ends the whole job with an error naming it, within a timeout.

#[cfg(feature = "mpi")]
#[allow(dead_code)]
#[path = "../../tests/src/lib.rs"]
mod igpt_tests;

#[cfg(not(feature = "mpi"))]
#[test]
fn mpi_tests_need_the_mpi_feature() {
    println!(
        "SKIPPED: igpt built without the mpi feature; run `cargo test -p igpt --features mpi --test mpi` (needs libopenmpi-dev openmpi-bin libclang-dev)"
    );
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use super::igpt_tests::{in_ci, repo_root};
    use igpt::io::checkpoint::Checkpoint;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Largest parameter difference allowed between 2 ranks and one process after 6
    /// steps at lr 1e-3..3e-3: float sums in another order (measured up to 4.7e-7). One
    /// AdamW step moves a parameter by up to about lr, so a batch weighted otherwise
    /// (e.g. a shard normalised over its own rows) lands far outside.
    const TOL: f32 = 1e-5;

    /// `mpirun` from PATH; `None` (skip, with the reason printed) when absent outside CI.
    fn mpirun() -> Option<PathBuf> {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("mpirun"))
                .find(|p| p.is_file())
        });
        if found.is_none() {
            assert!(
                !in_ci(),
                "CI must install openmpi-bin (mpirun) to run the MPI tests"
            );
            println!("SKIPPED: no mpirun on PATH (apt-get install openmpi-bin)");
        }
        found
    }

    struct Run {
        ok: bool,
        stdout: String,
        stderr: String,
    }

    /// `mpirun [launch] -np N igpt args` (or several `:`-separated app contexts), with
    /// output in files and a deadline: a job that hangs is killed and fails the test.
    fn launch(mpirun: &Path, apps: &[(usize, Vec<String>)], dir: &Path) -> Run {
        let mut cmd = Command::new(mpirun);
        cmd.args(["--allow-run-as-root", "--oversubscribe"]);
        for (i, (np, args)) in apps.iter().enumerate() {
            if i > 0 {
                cmd.arg(":");
            }
            cmd.args(["-np", &np.to_string(), env!("CARGO_BIN_EXE_igpt")]);
            cmd.args(args);
        }
        let (out, err) = (dir.join("mpirun.out"), dir.join("mpirun.err"));
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        let mut child = cmd.spawn().expect("start mpirun");
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > Duration::from_secs(180) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mpirun {apps:?} hung for 180 s; stderr: {}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Run {
            ok: status.success(),
            stdout: std::fs::read_to_string(&out).unwrap(),
            stderr: std::fs::read_to_string(&err).unwrap(),
        }
    }

    fn run_ok(mpirun: &Path, np: usize, args: &[String], dir: &Path) -> Run {
        let r = launch(mpirun, &[(np, args.to_vec())], dir);
        assert!(
            r.ok,
            "mpirun -np {np} igpt {}: failed\nstdout: {}\nstderr: {}",
            args.join(" "),
            r.stdout,
            r.stderr
        );
        r
    }

    /// The fingerprints the ranks printed, by rank.
    fn fingerprints(r: &Run, np: usize) -> Vec<u64> {
        let mut v = vec![None; np];
        for line in r.stdout.lines() {
            let Some(rest) = line.strip_prefix("rank ") else {
                continue;
            };
            let rank: usize = rest.split(' ').next().unwrap().parse().unwrap();
            let hex = line.rsplit("fingerprint ").next().unwrap();
            v[rank] = Some(u64::from_str_radix(hex.trim(), 16).unwrap());
        }
        v.into_iter()
            .enumerate()
            .map(|(rank, f)| {
                f.unwrap_or_else(|| panic!("rank {rank} printed no fingerprint:\n{}", r.stdout))
            })
            .collect()
    }

    /// FNV-1a 64 over the f32 bits of every tensor in canonical order (written here
    /// again, apart from igpt's, so that the check does not trust the code it checks).
    fn fnv(ck: &Checkpoint) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (_, m) in ck.params.iter() {
            for x in &m.data {
                for b in x.to_le_bytes() {
                    h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
                }
            }
        }
        h
    }

    fn max_diff(a: &Checkpoint, b: &Checkpoint) -> f32 {
        let mut d = 0f32;
        for ((na, x), (nb, y)) in a.params.iter().zip(b.params.iter()) {
            assert_eq!(na, nb);
            assert_eq!(x.data.len(), y.data.len(), "{na}");
            for (p, q) in x.data.iter().zip(&y.data) {
                d = d.max((p - q).abs());
            }
        }
        d
    }

    /// `log.csv` without its two time columns.
    fn log_rows(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("log.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplitn(3, ',').nth(2).unwrap().to_string())
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn subset() -> PathBuf {
        repo_root().join("data/fashion-mnist-subset")
    }

    /// A grey palette of 8 colours fitted on the subset at 8x8.
    fn palette(mpirun: &Path, dir: &Path) -> PathBuf {
        let pal = dir.join("p.pal");
        let args = strings(&[
            "palette",
            "fit",
            "--data",
            subset().to_str().unwrap(),
            "--k",
            "8",
            "--channels",
            "1",
            "--side",
            "8",
            "--out",
            pal.to_str().unwrap(),
        ]);
        run_ok(mpirun, 1, &args, dir);
        pal
    }

    fn pretrain_args(pal: &Path, objective: &str, out: &Path, extra: &[&str]) -> Vec<String> {
        let mut a = strings(&[
            "pretrain",
            "--data",
            subset().to_str().unwrap(),
            "--palette",
            pal.to_str().unwrap(),
            "--layers",
            "2",
            "--width",
            "32",
            "--heads",
            "4",
            "--side",
            "8",
            "--objective",
            objective,
            "--steps",
            "6",
            // Odd: shards of 3 and 2 rows.
            "--batch",
            "5",
            "--lr",
            "3e-3",
            "--warmup",
            "2",
            "--weight-decay",
            "0.1",
            "--seed",
            "5",
            "--eval-every",
            "2",
            "--val-images",
            "20",
            "--train-images",
            "64",
            "--threads",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]);
        a.extend(strings(extra));
        a
    }

    /// Uninterrupted on 2 ranks (A), 3 + resume + 3 on 2 ranks (B), one process (S).
    fn check_three_ways(
        mpirun: &Path,
        tmp: &Path,
        what: &str,
        args: impl Fn(&Path, &[&str]) -> Vec<String>,
        state: &str,
        files: &[&str],
    ) {
        let (a, b, s) = (
            tmp.join(format!("{what}-a")),
            tmp.join(format!("{what}-b")),
            tmp.join(format!("{what}-s")),
        );
        let ra = run_ok(mpirun, 2, &args(&a, &[]), tmp);
        let fa = fingerprints(&ra, 2);
        assert_eq!(
            fa[0], fa[1],
            "{what}: the two ranks end with other parameters"
        );
        let cka = Checkpoint::load(&a.join(state)).unwrap();
        assert_eq!(
            fnv(&cka),
            fa[0],
            "{what}: rank 0's printed fingerprint is not its checkpoint's"
        );
        assert!(
            ra.stdout.contains("throughput:") && ra.stdout.contains("2 rank(s) x 1 thread(s)"),
            "{}",
            ra.stdout
        );

        run_ok(mpirun, 2, &args(&b, &["--stop-after", "3"]), tmp);
        let mid = Checkpoint::load(&b.join(state)).unwrap();
        assert_eq!(mid.state.as_ref().unwrap().step, 3);
        // A copy of the stopped run, to resume on one process below.
        let c = tmp.join(format!("{what}-c"));
        std::fs::create_dir(&c).unwrap();
        for e in std::fs::read_dir(&b).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), c.join(e.file_name())).unwrap();
        }
        let rb = run_ok(mpirun, 2, &args(&b, &["--resume"]), tmp);
        let fb = fingerprints(&rb, 2);
        assert_eq!(fb, fa, "{what}: resumed ranks end elsewhere");
        for f in files {
            assert!(
                std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
                "{what} {f}: 3 + resume + 3 steps on 2 ranks differ from 6 steps"
            );
        }
        assert_eq!(log_rows(&a), log_rows(&b), "{what}: log.csv");

        let rs = run_ok(mpirun, 1, &args(&s, &[]), tmp);
        assert!(
            !rs.stdout.contains("fingerprint"),
            "one process prints none"
        );
        let cks = Checkpoint::load(&s.join(state)).unwrap();
        let d = max_diff(&cka, &cks);
        let moved = max_diff(&cka, &mid);
        // 3 steps on 2 ranks, then 3 more on one process.
        run_ok(mpirun, 1, &args(&c, &["--resume"]), tmp);
        let dc = max_diff(&cka, &Checkpoint::load(&c.join(state)).unwrap());
        println!(
            "{what}: 2 ranks bit-identical (fingerprint {:016x}); 3 + resume + 3 = 6 steps byte for byte; max |2 ranks - 1 process| = {d:.3e}, 3 steps on 2 ranks + 3 on 1: {dc:.3e} (tolerance {TOL:.0e}); max change since step 3 = {moved:.3e}",
            fa[0]
        );
        assert!(d <= TOL, "{what}: 2 ranks differ from one process by {d}");
        assert!(dc <= TOL, "{what}: resuming on one process is off by {dc}");
        assert!(
            moved > 20.0 * TOL,
            "{what}: steps 4-6 moved the parameters by only {moved}: the comparison proves little"
        );
        // The logged metrics (summed over the shards) match one process's too.
        for (ra, rs) in log_rows(&a).iter().zip(log_rows(&s)).skip(1) {
            let va: Vec<f64> = ra.split(',').map(|x| x.parse().unwrap()).collect();
            let vs: Vec<f64> = rs.split(',').map(|x| x.parse().unwrap()).collect();
            assert_eq!(va[0], vs[0]);
            for (x, y) in va[2..].iter().zip(&vs[2..]) {
                assert!(
                    (x - y).abs() <= 2e-3,
                    "{what}: log {ra} vs one process {rs}"
                );
            }
        }
    }

    #[test]
    fn pretraining_on_two_ranks_matches_one_process_and_resumes_exactly() {
        let Some(mpirun) = mpirun() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let pal = palette(&mpirun, tmp.path());
        for objective in ["ar", "bert"] {
            check_three_ways(
                &mpirun,
                tmp.path(),
                objective,
                |out, extra| pretrain_args(&pal, objective, out, extra),
                "checkpoint.safetensors",
                &["checkpoint.safetensors"],
            );
        }
    }

    #[test]
    fn finetuning_on_two_ranks_matches_one_process_and_resumes_exactly() {
        let Some(mpirun) = mpirun() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let pal = palette(&mpirun, tmp.path());
        for objective in ["ar", "bert"] {
            // A short pretraining to start from.
            let pre = tmp.path().join(format!("pre-{objective}"));
            let mut args = pretrain_args(&pal, objective, &pre, &[]);
            let steps = args.iter().position(|a| a == "--steps").unwrap();
            args[steps + 1] = "2".into();
            run_ok(&mpirun, 1, &args, tmp.path());
            let ck = pre.join("checkpoint.safetensors");
            let ft = |out: &Path, extra: &[&str]| {
                let mut a = strings(&[
                    "finetune",
                    "--checkpoint",
                    ck.to_str().unwrap(),
                    "--data",
                    subset().to_str().unwrap(),
                    "--steps",
                    "6",
                    "--batch",
                    "5",
                    "--lr",
                    "1e-3",
                    "--warmup",
                    "1",
                    "--head-lr-scale",
                    "10",
                    "--gen-weight",
                    "0.5",
                    "--eval-every",
                    "2",
                    "--patience",
                    "10",
                    "--train-images",
                    "100",
                    "--test-images",
                    "40",
                    "--seed",
                    "3",
                    "--threads",
                    "1",
                    "--out",
                    out.to_str().unwrap(),
                ]);
                a.extend(strings(extra));
                a
            };
            check_three_ways(
                &mpirun,
                tmp.path(),
                &format!("finetune-{objective}"),
                ft,
                "state.safetensors",
                &["state.safetensors", "checkpoint.safetensors"],
            );
            // The summary of the sharded test evaluation matches one process's.
            let json = |d: &str| -> serde_json::Value {
                let p = tmp
                    .path()
                    .join(format!("finetune-{objective}-{d}/finetune.json"));
                serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
            };
            assert_eq!(json("a"), json("b"));
            for key in ["best_step", "steps_run", "test_images"] {
                assert_eq!(json("a")[key], json("s")[key], "{key}");
            }
        }
    }

    #[test]
    fn a_failing_rank_ends_the_job_naming_the_rank() {
        let Some(mpirun) = mpirun() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let pal = palette(&mpirun, tmp.path());
        let out = tmp.path().join("run");
        let good = pretrain_args(&pal, "ar", &out, &[]);
        // Rank 1 reads a dataset that is not there: it fails alone while rank 0 waits
        // for it in a collective.
        let mut bad = good.clone();
        let data = bad.iter().position(|a| a == "--data").unwrap();
        let missing = tmp.path().join("no-such-data");
        bad[data + 1] = missing.to_str().unwrap().into();
        let t0 = Instant::now();
        let r = launch(&mpirun, &[(1, good.clone()), (1, bad)], tmp.path());
        assert!(!r.ok, "the job succeeded: {}", r.stdout);
        let line = r
            .stderr
            .lines()
            .find(|l| l.starts_with("error: rank 1 of 2: "))
            .unwrap_or_else(|| panic!("no error line naming rank 1:\n{}", r.stderr));
        assert!(line.contains("no-such-data"), "{line}");
        println!(
            "rank 1 failing ended the job in {:.1} s: {line}",
            t0.elapsed().as_secs_f64()
        );
        assert!(!out.join("checkpoint.safetensors").exists());
        // Ranks started with other arguments refuse to train together.
        let mut other = good.clone();
        let lr = other.iter().position(|a| a == "--lr").unwrap();
        other[lr + 1] = "1e-3".into();
        let r = launch(&mpirun, &[(1, good), (1, other)], tmp.path());
        assert!(!r.ok);
        assert!(
            r.stderr
                .contains("the arguments (--resume and --stop-after included) on rank 1 differ"),
            "{}",
            r.stderr
        );
    }
}
