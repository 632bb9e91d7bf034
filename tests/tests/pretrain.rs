//! Pretraining end to end on real images: exact resume, corrupt checkpoints, overfitting
//! a handful of Fashion-MNIST images.

use igpt::data::palette::{self, FitOptions};
use igpt::data::{self, Split};
use igpt::io::checkpoint::Checkpoint;
use igpt::nn::Objective;
use igpt::train::pretrain::{self, PretrainConfig};
use igpt::train::AdamConfig;
use igpt_core::{Config, Palette};
use igpt_tests::{data_dir, in_ci};
use std::path::{Path, PathBuf};

/// A CIFAR-10 folder with the 20 sample images as both train and test batch.
fn cifar_folder(dir: &Path) -> PathBuf {
    let src = data_dir().join("cifar10-sample/test_batch.bin");
    let d = dir.join("cifar");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(&src, d.join("data_batch_1.bin")).unwrap();
    std::fs::copy(&src, d.join("test_batch.bin")).unwrap();
    d
}

fn grey_palette(data: &Path, k: usize, side: usize) -> Palette {
    let ds = data::load(data, Split::Train, Some(side))
        .unwrap()
        .with_channels(1)
        .unwrap();
    let opts = FitOptions {
        k,
        iters: 20,
        sample: usize::MAX,
        seed: 0,
    };
    palette::fit(&ds.pixels, 1, opts, false).unwrap().0
}

fn config(data: PathBuf, objective: Objective, k: usize) -> PretrainConfig {
    PretrainConfig {
        data,
        model: Config::new(k, 8, 32, 4, 2).unwrap(),
        objective,
        steps: 6,
        batch: 4,
        lr: 3e-3,
        warmup: 2,
        adam: AdamConfig {
            weight_decay: 0.1,
            ..AdamConfig::default()
        },
        seed: 5,
        eval_every: 2,
        val_images: 4,
        train_images: 0,
    }
}

#[test]
fn resume_equals_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar_folder(tmp.path());
    let pal = grey_palette(&data, 8, 8);
    for objective in [Objective::Ar, Objective::Bert] {
        let cfg = config(data.clone(), objective, 8);
        let a = tmp.path().join(format!("{objective:?}-a"));
        let b = tmp.path().join(format!("{objective:?}-b"));
        let sa = pretrain::pretrain(&cfg, &pal, &a, false, None, false).unwrap();
        let s3 = pretrain::pretrain(&cfg, &pal, &b, false, Some(3), false).unwrap();
        assert_eq!(s3.steps, 3);
        let mid = std::fs::read(pretrain::checkpoint_path(&b)).unwrap();
        let sb = pretrain::pretrain(&cfg, &pal, &b, true, None, false).unwrap();
        assert_eq!((sa.steps, sb.steps), (6, 6));
        let fa = std::fs::read(pretrain::checkpoint_path(&a)).unwrap();
        let fb = std::fs::read(pretrain::checkpoint_path(&b)).unwrap();
        assert_ne!(mid, fb, "{objective:?}: the resumed run did not move");
        assert!(
            fa == fb,
            "{objective:?}: 3 + resume + 3 steps differ from 6 steps"
        );
        assert_eq!(sa.val_bpd.to_bits(), sb.val_bpd.to_bits());
        let ck = Checkpoint::load(&pretrain::checkpoint_path(&a)).unwrap();
        assert_eq!(ck.state.as_ref().unwrap().step, 6);
        assert_eq!(ck.palette.as_ref(), Some(&pal));
        println!("{objective:?}: 6 steps = 3 + resume + 3 (checkpoint {} bytes, identical); validation {:.4} bits/dim", fa.len(), sa.val_bpd);
        // The loss curve and the log are there.
        assert!(a.join("loss.png").is_file());
        let log = std::fs::read_to_string(a.join("log.csv")).unwrap();
        assert_eq!(log.lines().count(), 4, "{log}");
        // A second fresh run into the same folder is refused: nothing is overwritten.
        let err = pretrain::pretrain(&cfg, &pal, &a, false, None, false).unwrap_err();
        assert!(format!("{err:#}").contains("--resume"));
        // Resuming with other arguments is refused.
        let mut other = cfg.clone();
        other.lr = 1e-3;
        let err = pretrain::pretrain(&other, &pal, &b, true, None, false).unwrap_err();
        assert!(format!("{err:#}").contains("other arguments"), "{err:#}");
    }
}

#[test]
fn corrupt_checkpoints_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar_folder(tmp.path());
    let pal = grey_palette(&data, 8, 8);
    let mut cfg = config(data, Objective::Ar, 8);
    cfg.steps = 1;
    cfg.eval_every = 1;
    let dir = tmp.path().join("run");
    pretrain::pretrain(&cfg, &pal, &dir, false, None, false).unwrap();
    let good = std::fs::read(pretrain::checkpoint_path(&dir)).unwrap();
    let ck = Checkpoint::from_bytes(&good).unwrap();
    // Saving again gives the same bytes (deterministic layout).
    assert_eq!(ck.to_bytes().unwrap(), good);
    // Truncations: the whole header region, then spread over the data.
    let header = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize + 8;
    let mut cuts: Vec<usize> = (0..header.min(4000)).collect();
    cuts.extend((header..good.len()).step_by(997));
    for cut in cuts {
        assert!(
            Checkpoint::from_bytes(&good[..cut]).is_err(),
            "truncated at {cut} accepted"
        );
    }
    // Single-bit flips anywhere: header, metadata, tensor data.
    let mut state = 12345u64;
    let mut flips = 0;
    for i in 0..400 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pos = if i < 200 {
            (state >> 33) as usize % header
        } else {
            (state >> 33) as usize % good.len()
        };
        let mut bad = good.clone();
        bad[pos] ^= 1 << (i % 8);
        assert!(
            Checkpoint::from_bytes(&bad).is_err(),
            "flip at byte {pos} accepted"
        );
        flips += 1;
    }
    println!(
        "{} truncations and {flips} bit flips of a {}-byte checkpoint: all refused",
        header.min(4000) + (good.len() - header) / 997,
        good.len()
    );
    // Not a checkpoint at all.
    assert!(Checkpoint::from_bytes(b"").is_err());
    assert!(Checkpoint::from_bytes(&[0xff; 64]).is_err());
}

#[test]
fn overfits_four_fashion_mnist_images() {
    let dir = Path::new(data::FASHION_MNIST_DIR);
    if !dir.is_dir() {
        assert!(!in_ci(), "CI must install dataset-fashion-mnist");
        println!("SKIPPED: {} is absent", dir.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let side = 8;
    let pal = grey_palette_from(dir, 16, side);
    let cfg = PretrainConfig {
        data: dir.to_path_buf(),
        model: Config::new(16, side, 64, 4, 2).unwrap(),
        objective: Objective::Ar,
        steps: 150,
        batch: 4,
        lr: 1e-2,
        warmup: 10,
        adam: AdamConfig::default(),
        seed: 0,
        eval_every: 150,
        val_images: 0,
        train_images: 4,
    };
    let run = tmp.path().join("run");
    pretrain::pretrain(&cfg, &pal, &run, false, None, false).unwrap();
    // Measure on the four training images themselves.
    let ck = Checkpoint::load(&pretrain::checkpoint_path(&run)).unwrap();
    let dev = dfdx::prelude::Cpu::default();
    let gpt: igpt::nn::Gpt<f32, _> = ck.model(&dev).unwrap();
    let images = igpt::data::tokenize::split(dir, Split::Train, &pal, side, 4)
        .unwrap()
        .tokens;
    let refs: Vec<&[u16]> = images.iter().map(|v| v.as_slice()).collect();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let bpd = igpt::train::bits(igpt::train::evaluate(
        &gpt,
        &refs,
        4,
        Objective::Ar,
        &mut rng,
    ));
    println!("4 Fashion-MNIST images at {side}x{side}, 150 steps: training NLL {bpd:.4} bits/dim");
    assert!(bpd < 0.05, "training NLL {bpd} bits/dim");
}

fn grey_palette_from(dir: &Path, k: usize, side: usize) -> Palette {
    let ds = data::load(dir, Split::Train, None)
        .unwrap()
        .truncate(2000)
        .resized(side);
    let opts = FitOptions {
        k,
        iters: 20,
        sample: usize::MAX,
        seed: 0,
    };
    palette::fit(&ds.pixels, 1, opts, false).unwrap().0
}

/// The demo's embedded Fashion-MNIST subset (in the repository).
fn subset() -> PathBuf {
    igpt_tests::repo_root().join("data/fashion-mnist-subset")
}

/// The fine-tuned class head exported to int8 (as `igpt export` does without --probe):
/// the file's head is the checkpoint's, and its f32 twin (the same head on the f32
/// features of the final norm) classifies the 20 test images as fine-tuning measured.
fn check_class_head_export(best: &Checkpoint, data: &Path, test_accuracy: f64) {
    let head = igpt::int8::export::class_head(best).unwrap();
    let (bytes, _) = igpt::int8::export::export(best, Some(&head), false).unwrap();
    let model = igpt_core::Model::parse(&bytes).unwrap();
    let stored = igpt::int8::export::probe_head(&model).unwrap();
    assert_eq!(stored, head);
    assert_eq!(stored.classes, best.classes.clone().unwrap());
    let r = igpt::int8::run::eval(&model, data, Some(best), 20, 0, false).unwrap();
    let f32_accuracy = r.f32_accuracy.unwrap();
    assert!(
        (f32_accuracy - test_accuracy).abs() <= 1.0 / 20.0 + 1e-9,
        "the exported head's f32 accuracy {f32_accuracy} is not fine-tuning's {test_accuracy}"
    );
    println!(
        "class head export: f32 {f32_accuracy:.3} (fine-tuning {test_accuracy:.3}), int8 {:.3}, agreement {:.3}",
        r.int8_accuracy,
        r.agreement.unwrap()
    );
}

#[test]
fn finetune_resume_equals_an_uninterrupted_run() {
    use igpt::io::meta::FinetuneArgs;
    use igpt::train::finetune;
    let tmp = tempfile::tempdir().unwrap();
    let data = subset();
    let pal = grey_palette(&data, 8, 8);
    for objective in [Objective::Ar, Objective::Bert] {
        // A small pretrained model to start from.
        let mut pcfg = config(data.clone(), objective, 8);
        pcfg.train_images = 64;
        pcfg.steps = 4;
        let pre = tmp.path().join(format!("{objective:?}-pre"));
        pretrain::pretrain(&pcfg, &pal, &pre, false, None, false).unwrap();
        let cfg = FinetuneArgs {
            checkpoint: pretrain::checkpoint_path(&pre),
            data: data.clone(),
            steps: 6,
            batch: 4,
            lr: 1e-3,
            warmup: 1,
            schedule: Default::default(),
            augment: true,
            head_lr_scale: 10.0,
            gen_weight: 0.5,
            adam: AdamConfig::default(),
            eval_every: 2,
            patience: 10,
            train_images: 60,
            test_images: 20,
            seed: 3,
        };
        let a = tmp.path().join(format!("{objective:?}-a"));
        let b = tmp.path().join(format!("{objective:?}-b"));
        let sa = finetune::finetune(&cfg, &a, false, None, false).unwrap();
        let s3 = finetune::finetune(&cfg, &b, false, Some(3), false).unwrap();
        assert_eq!(s3.steps_run, 3);
        let mid = std::fs::read(finetune::state_path(&b)).unwrap();
        let sb = finetune::finetune(&cfg, &b, true, None, false).unwrap();
        assert_eq!((sa.steps_run, sb.steps_run), (6, 6));
        for file in ["state.safetensors", "checkpoint.safetensors"] {
            let fa = std::fs::read(a.join(file)).unwrap();
            let fb = std::fs::read(b.join(file)).unwrap();
            assert!(
                fa == fb,
                "{objective:?} {file}: 3 + resume + 3 steps differ from 6 steps"
            );
        }
        assert_ne!(mid, std::fs::read(finetune::state_path(&b)).unwrap());
        assert_eq!(sa.test_accuracy.to_bits(), sb.test_accuracy.to_bits());
        assert_eq!(sa.val_accuracy.to_bits(), sb.val_accuracy.to_bits());
        // The kept model has its class head and both runs' arguments.
        let best = Checkpoint::load(&finetune::checkpoint_path(&a)).unwrap();
        assert_eq!(best.params.score.as_ref().map(|s| s.rows), Some(10));
        assert_eq!(best.finetune.as_ref(), Some(&cfg));
        assert_eq!(best.objective(), objective);
        assert!(best.state.is_none());
        let names = data::load(&data, Split::Train, Some(8)).unwrap().classes;
        assert_eq!(best.classes.as_ref(), Some(&names));
        check_class_head_export(&best, &data, sa.test_accuracy);
        // The log (same rows, but for the time columns) and the curves.
        let rows = |d: &Path| -> Vec<String> {
            std::fs::read_to_string(d.join("log.csv"))
                .unwrap()
                .lines()
                .map(|l| l.rsplitn(3, ',').nth(2).unwrap().to_string())
                .collect()
        };
        assert_eq!(rows(&a).len(), 4, "header + steps 2, 4, 6");
        assert_eq!(rows(&a), rows(&b));
        assert!(rows(&a)[0].starts_with("step,lr,train_gen_bpd,train_clf_nats,val_accuracy"));
        assert!(a.join("loss.png").is_file() && a.join("accuracy.png").is_file());
        println!(
            "{objective:?}: fine-tuning 6 steps = 3 + resume + 3 (state and best checkpoint identical); validation {:.3}, test {:.3}",
            sa.val_accuracy, sa.test_accuracy
        );
        // A fresh run into a folder that holds a run is refused, as is one into the
        // pretraining folder; resuming with other arguments names the field.
        let err = finetune::finetune(&cfg, &a, false, None, false).unwrap_err();
        assert!(format!("{err:#}").contains("--resume"), "{err:#}");
        let err = finetune::finetune(&cfg, &pre, false, None, false).unwrap_err();
        assert!(format!("{err:#}").contains("exists"), "{err:#}");
        let mut other = cfg.clone();
        other.gen_weight = 1.0;
        let err = finetune::finetune(&other, &b, true, None, false).unwrap_err();
        assert!(
            format!("{err:#}").contains("`gen_weight` was 0.5, now 1.0"),
            "{err:#}"
        );
    }
}
