//! Per-layer probe features of image files from the shipped f32 checkpoint (or
//! another), the vectors `igpt probe` fits its linear classifiers on:
//!
//! ```sh
//! cargo run --example probe_features -- host/examples/images/*.png
//! cargo run --example probe_features -- --checkpoint my.safetensors photo.png
//! ```
//!
//! Prints, for every image and layer (0..=L; L is the final norm), the feature's length
//! and its first values, then the cosine similarity of the first two images per layer.

use std::path::PathBuf;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(f32::MIN_POSITIVE)
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
    anyhow::ensure!(
        !args.is_empty(),
        "usage: probe_features [--checkpoint C] IMAGE..."
    );
    let model = igpt::Pretrained::open(&checkpoint)?;
    let tokens = args
        .iter()
        .map(|a| model.tokenize_path(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // [layer][image], d values each.
    let features = model.features(&tokens)?;
    for (i, image) in args.iter().enumerate() {
        println!("{image}:");
        for (l, layer) in features.iter().enumerate() {
            let f = &layer[i];
            let norm = f.iter().map(|x| x * x).sum::<f32>().sqrt();
            let head: Vec<String> = f.iter().take(4).map(|x| format!("{x:+.3}")).collect();
            println!("  layer {l}: |f| = {norm:.3}, f[0..4] = {}", head.join(" "));
        }
    }
    if args.len() >= 2 {
        let sims: Vec<String> = features
            .iter()
            .map(|layer| format!("{:.3}", cosine(&layer[0], &layer[1])))
            .collect();
        println!(
            "cosine({}, {}) by layer: {}",
            args[0],
            args[1],
            sims.join(" ")
        );
    }
    Ok(())
}
