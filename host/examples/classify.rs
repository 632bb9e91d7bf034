//! Classify image files with the shipped int8 model (or another one):
//!
//! ```sh
//! cargo run --example classify -- host/examples/images/ankle-boot.png
//! cargo run --example classify -- --model my.igpt photo.jpg other.png
//! ```
//!
//! The model file is `igpt export --probe`'s output; the default is the repository's
//! `models/fm-ar-6x192.igpt` (Fashion-MNIST, 14x14, 16 greys). Images of any size are
//! centre-cropped, area-resized to the model's side and mapped to its palette.

use std::path::PathBuf;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let model = match args.iter().position(|a| a == "--model") {
        Some(i) => {
            anyhow::ensure!(i + 1 < args.len(), "--model needs a file");
            let m = PathBuf::from(args.remove(i + 1));
            args.remove(i);
            m
        }
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/fm-ar-6x192.igpt"
        )),
    };
    anyhow::ensure!(
        !args.is_empty(),
        "usage: classify [--model MODEL.igpt] IMAGE..."
    );
    let mut classifier = igpt::Classifier::open(&model)?;
    for (image, c) in args.iter().zip(classifier.classify_paths(&args)?) {
        println!(
            "{image}: class {} {} (p = {:.3})",
            c.class,
            c.label,
            c.probability()
        );
    }
    Ok(())
}
