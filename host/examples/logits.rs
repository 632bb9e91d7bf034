//! An image's tokens and next-pixel logits from an f32 checkpoint, as JSON on standard
//! output: what `load_in_transformers.py` compares HF's logits against after
//! `igpt export-hf`.
//!
//! ```sh
//! cargo run --example logits -- host/examples/images/bag.png > bag.json
//! cargo run --example logits -- --checkpoint my.safetensors photo.png > photo.json
//! ```
//!
//! Output: `{"tokens": [side² ids], "logits": [side² rows of k values]}`.

use std::path::PathBuf;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let checkpoint = match args.iter().position(|a| a == "--checkpoint") {
        Some(i) => {
            anyhow::ensure!(i + 1 < args.len(), "--checkpoint needs a file");
            let c = PathBuf::from(args.remove(i + 1));
            args.remove(i);
            c
        }
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/fm-ar-6x192.safetensors"
        )),
    };
    anyhow::ensure!(args.len() == 1, "usage: logits [--checkpoint C] IMAGE");
    let model = igpt::Pretrained::open(&checkpoint)?;
    let tokens = model.tokenize_path(&args[0])?;
    let logits = model.logits(&tokens)?;
    let k = model.config().vocab;
    let rows: Vec<&[f32]> = logits.chunks_exact(k).collect();
    println!("{}", serde_json::json!({"tokens": tokens, "logits": rows}));
    Ok(())
}
