//! Sample images from the shipped f32 checkpoint (or another AR checkpoint) and write
//! them as PNGs:
//!
//! ```sh
//! cargo run --release --example sample -- 4 samples/
//! cargo run --release --example sample -- 4 samples/ --checkpoint my.safetensors
//! ```
//!
//! Writes `sample-0.png` ... into the folder (created if needed), one image per sample at
//! the model's side, temperature 1, seed 0 (the same command gives the same images).

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
    let usage = "usage: sample N OUT_DIR [--checkpoint C]";
    anyhow::ensure!(args.len() == 2, "{usage}");
    let n: usize = args[0]
        .parse()
        .ok()
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| anyhow::anyhow!("N '{}' is not a number in 1..=64; {usage}", args[0]))?;
    let out = PathBuf::from(&args[1]);
    let model = igpt::Pretrained::open(&checkpoint)?;
    let images = model.sample(n, 1.0, 0)?;
    std::fs::create_dir_all(&out)
        .map_err(|e| anyhow::anyhow!("{}: cannot create the folder ({e})", out.display()))?;
    for (i, tokens) in images.iter().enumerate() {
        let path = out.join(format!("sample-{i}.png"));
        model.save_png(tokens, &path)?;
        println!("{}", path.display());
    }
    Ok(())
}
