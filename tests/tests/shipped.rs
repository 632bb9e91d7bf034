//! The shipped pretrained model (`models/`, README "The shipped model"): the weights-only
//! f32 checkpoint loads as it is, its int8 export predicts the next pixel like it, the
//! committed int8 file is exactly its export with the committed probe head, and that
//! file classifies the embedded subset's test images like the f32 model with that head.

use igpt::int8::export::ProbeHead;
use igpt::io::checkpoint::Checkpoint;
use igpt_core::{Config, Model};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn path(rel: &str) -> String {
    format!("{ROOT}/{rel}")
}

#[test]
fn shipped_checkpoint_loads_and_its_int8_export_predicts_like_it() {
    let ck = Checkpoint::load(path("models/fm-ar-6x192.safetensors").as_ref()).unwrap();
    assert!(ck.state.is_none(), "the shipped checkpoint is weights only");
    assert_eq!(ck.config, Config::new(16, 14, 192, 6, 6).unwrap());
    let palette = ck
        .palette
        .clone()
        .expect("the checkpoint carries its palette");
    let args = ck
        .pretrain
        .as_ref()
        .expect("the run's arguments are recorded");
    assert_eq!((args.model, args.steps, args.batch), (ck.config, 6000, 32));
    // Next-pixel bits/dim on 20 test images of the embedded subset: the f32 model and
    // its int8 export (no probe head) agree, and both are near the reported 1.14.
    let (bytes, _) = igpt::int8::export::export(&ck, None, false).unwrap();
    let m = Model::parse(&bytes).unwrap();
    let ds = igpt::data::tokenize::split(
        path("data/fashion-mnist-subset").as_ref(),
        igpt::data::Split::Test,
        &palette,
        14,
        20,
    )
    .unwrap();
    let bits8 = igpt::int8::run::int8_bits_per_dim(&m, &ds.tokens).unwrap();
    let gpt: igpt::nn::Gpt<f32, dfdx::prelude::Cpu> =
        ck.model(&dfdx::prelude::Cpu::default()).unwrap();
    let refs: Vec<&[u16]> = ds.tokens.iter().map(|v| v.as_slice()).collect();
    let nats = igpt::train::evaluate(
        &gpt,
        &refs,
        20,
        igpt::nn::Objective::Ar,
        &mut rand::rngs::mock::StepRng::new(0, 0),
    );
    let bits32 = nats / std::f64::consts::LN_2;
    eprintln!("shipped model, 20 subset test images: bits/dim f32 {bits32:.4}, int8 {bits8:.4}");
    assert!(bits32 > 0.8 && bits32 < 1.3, "f32 bits/dim {bits32}");
    assert!(
        (bits8 - bits32).abs() < 0.03,
        "int8 {bits8} vs f32 {bits32}"
    );
}
#[test]
fn shipped_model_loads_exports_and_classifies() {
    let ck = Checkpoint::load(path("models/fm-ar-6x192.safetensors").as_ref()).unwrap();
    assert!(ck.state.is_none(), "the shipped checkpoint is weights only");
    assert_eq!(ck.config, Config::new(16, 14, 192, 6, 6).unwrap());
    assert!(ck.palette.is_some(), "the checkpoint carries its palette");
    let args = ck
        .pretrain
        .as_ref()
        .expect("the run's arguments are recorded");
    assert_eq!(args.model, ck.config);

    // The int8 file is the export of this checkpoint with this head, byte for byte.
    let head = ProbeHead::load(
        path("models/fm-ar-6x192.probe-head.json").as_ref(),
        ck.config.width,
    )
    .unwrap();
    let (exported, _) = igpt::int8::export::export(&ck, Some(&head), false).unwrap();
    let bytes = std::fs::read(path("models/fm-ar-6x192.igpt")).unwrap();
    assert!(
        exported == bytes,
        "models/fm-ar-6x192.igpt is not the export of the committed checkpoint and head"
    );
    let m = Model::parse(&bytes).unwrap();
    assert_eq!(*m.config(), ck.config);
    assert_eq!(
        m.probe().map(|p| p.1),
        Some(10),
        "the file has the 10-class head"
    );

    // The first 200 test images of the embedded subset: int8 accuracy, agreement with
    // the f32 checkpoint through the same head, and bits/dim of both on 20 images.
    let ev = igpt::int8::run::eval(
        &m,
        path("data/fashion-mnist-subset").as_ref(),
        Some(&ck),
        200,
        20,
        false,
    )
    .unwrap();
    assert_eq!(ev.images, 200);
    let f32_acc = ev.f32_accuracy.unwrap();
    let agree = ev.agreement.unwrap();
    let (bits8, bits32) = ev.bits.unwrap();
    let bits32 = bits32.unwrap();
    eprintln!(
        "shipped model, 200 subset test images: int8 {:.1}%, f32 {:.1}%, agreement {:.1}%, bits/dim int8 {bits8:.4} f32 {bits32:.4}",
        100.0 * ev.int8_accuracy,
        100.0 * f32_acc,
        100.0 * agree
    );
    assert!(
        ev.int8_accuracy >= 0.80,
        "int8 accuracy {}",
        ev.int8_accuracy
    );
    assert!(f32_acc >= 0.80, "f32 accuracy {f32_acc}");
    assert!(agree >= 0.97, "int8 / f32 agreement {agree}");
    assert!(bits32 < 1.25, "f32 bits/dim {bits32}");
    assert!(
        (bits8 - bits32).abs() < 0.03,
        "int8 {bits8} vs f32 {bits32}"
    );
}

#[test]
fn shipped_finetuned_classifier_is_its_export_and_classifies() {
    let ck = Checkpoint::load(path("models/fm-ft-6x192.safetensors").as_ref()).unwrap();
    assert!(ck.state.is_none(), "the shipped checkpoint is weights only");
    assert_eq!(ck.config, Config::new(16, 14, 192, 6, 6).unwrap());
    let args = ck
        .finetune
        .as_ref()
        .expect("the fine-tuning run's arguments");
    assert_eq!(args.batch, 32);
    let names = ck.classes.clone().expect("the class names are kept");
    assert_eq!(names.len(), 10);

    // The int8 file is the export of this checkpoint with its own class head.
    let head = igpt::int8::export::class_head(&ck).unwrap();
    let (exported, _) = igpt::int8::export::export(&ck, Some(&head), false).unwrap();
    let bytes = std::fs::read(path("models/fm-ft-6x192.igpt")).unwrap();
    assert!(
        exported == bytes,
        "models/fm-ft-6x192.igpt is not the export of the committed fine-tuned checkpoint"
    );
    let m = Model::parse(&bytes).unwrap();
    assert_eq!(m.probe().map(|p| p.0), Some(ck.config.layers));

    // The first 200 test images of the embedded subset: both classifiers, same images.
    let ev = igpt::int8::run::eval(
        &m,
        path("data/fashion-mnist-subset").as_ref(),
        Some(&ck),
        200,
        0,
        false,
    )
    .unwrap();
    let f32_acc = ev.f32_accuracy.unwrap();
    let agree = ev.agreement.unwrap();
    eprintln!(
        "fine-tuned classifier, 200 subset test images: int8 {:.1}%, f32 {:.1}%, agreement {:.1}%",
        100.0 * ev.int8_accuracy,
        100.0 * f32_acc,
        100.0 * agree
    );
    assert!(f32_acc >= 0.82, "f32 accuracy {f32_acc}");
    assert!(
        ev.int8_accuracy >= 0.82,
        "int8 accuracy {}",
        ev.int8_accuracy
    );
    assert!(agree >= 0.97, "int8 / f32 agreement {agree}");
}
