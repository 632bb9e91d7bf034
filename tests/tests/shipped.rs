//! The shipped pretrained model (`models/`, README "The shipped model"): the weights-only
//! f32 checkpoint loads as it is, and its int8 export predicts the next pixel like it.

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
