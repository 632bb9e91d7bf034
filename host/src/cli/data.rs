//! `igpt tokenize`, `igpt info`, `igpt data`: what the model sees of images, model
//! shapes, datasets.

use super::args::ModelArgs;
use super::palette::check_side;
use anyhow::{ensure, Result};
use igpt::data::{self, palette, tokenize, Split};
use igpt_core::{Config, Preset};
use std::path::PathBuf;

/// `igpt data`: a dataset's size and classes.
pub fn data_cmd(a: DataArgs) -> Result<()> {
    let ds = data::load(&a.data, a.split, None)?;
    println!(
        "{} ({:?}): {} images of {}x{}x{}, {} classes",
        a.data.display(),
        a.split,
        ds.len(),
        ds.width,
        ds.height,
        ds.channels,
        ds.classes.len()
    );
    for (name, n) in ds.classes.iter().zip(ds.class_counts()) {
        println!("  {name:<14} {n}");
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct TokenizeArgs {
    /// Palette file.
    #[arg(long)]
    pub palette: PathBuf,
    /// Centre-crop to a square and area-resize to side x side first; without it every
    /// image must already have one common size.
    #[arg(long)]
    pub side: Option<usize>,
    /// Write what the model sees (decoded tokens, enlarged) as one PNG row.
    #[arg(long)]
    pub preview: Option<PathBuf>,
    /// Image files (any format the image crate reads: PNG, JPEG, BMP, GIF, TIFF, WebP, PNM).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(clap::Args)]
pub struct DataArgs {
    /// Dataset: CIFAR-10 batches, IDX files or class folders (file or folder).
    #[arg(long)]
    pub data: PathBuf,
    /// Which split.
    #[arg(long, value_enum, default_value = "train")]
    pub split: Split,
}

pub fn tokenize(a: TokenizeArgs) -> Result<()> {
    check_side(a.side)?;
    let pal = palette::load(&a.palette)?;
    igpt::io::guard::ensure_distinct(a.preview.iter(), a.images.iter().chain([&a.palette]))?;
    if let Some(p) = &a.preview {
        igpt::io::check_output(p)?;
    }
    let c = pal.channels();
    let mut first: Option<(usize, usize, &PathBuf)> = None;
    let mut decoded: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut lines = String::new();
    for path in &a.images {
        let (w, h, tokens) = tokenize::image_sized(path, &pal, a.side)?;
        if let Some((fw, fh, fp)) = first {
            ensure!(
                (w, h) == (fw, fh),
                "{}: image is {w}x{h} but {} is {fw}x{fh}; images of one size are required (pass --side to resize)",
                path.display(),
                fp.display()
            );
        }
        first.get_or_insert((w, h, path));
        let line: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        lines.push_str(&line.join(" "));
        lines.push('\n');
        if a.preview.is_some() {
            let mut out = vec![0u8; tokens.len() * c];
            pal.decode_tokens(&tokens, &mut out)?;
            decoded.push((w, h, data::convert_channels(&out, c, 3)?));
        }
    }
    print!("{lines}");
    if let Some(p) = &a.preview {
        igpt::io::write_image_row(p, &decoded)?;
        eprintln!("preview: {}", p.display());
    }
    Ok(())
}

pub fn human(n: u64, unit: &str) -> String {
    let f = n as f64;
    let (v, p) = if f >= 1e12 {
        (f / 1e12, "T")
    } else if f >= 1e9 {
        (f / 1e9, "G")
    } else if f >= 1e6 {
        (f / 1e6, "M")
    } else if f >= 1e3 {
        (f / 1e3, "k")
    } else {
        (f, "")
    };
    format!("{v:.2} {p}{unit}")
}

pub fn bytes(n: u64) -> String {
    let f = n as f64;
    if f >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", f / (1024.0 * 1024.0 * 1024.0))
    } else if f >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", f / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", f / 1024.0)
    }
}

pub fn info(a: InfoArgs) -> Result<()> {
    let rows: Vec<(String, Config)> = if a.model.is_empty() {
        Preset::ALL
            .iter()
            .map(|&p| (p.name().to_string(), Config::preset(p)))
            .collect()
    } else {
        let name = a.model.preset.clone().unwrap_or_else(|| "custom".into());
        vec![(name, a.model.config(Preset::Test)?)]
    };
    println!(
        "{:<7} {:>6} {:>6} {:>5} {:>5} {:>4} {:>12} {:>14} {:>11} {:>11}",
        "shape", "layers", "width", "heads", "side", "k", "params", "MACs/image", "f32", "int8"
    );
    for (name, c) in rows {
        println!(
            "{:<7} {:>6} {:>6} {:>5} {:>5} {:>4} {:>12} {:>14} {:>11} {:>11}",
            name,
            c.layers,
            c.width,
            c.heads,
            format!("{0}x{0}", c.side),
            c.vocab,
            human(c.param_count(), ""),
            human(c.macs_per_image(), "MAC"),
            bytes(c.f32_bytes()),
            bytes(c.int8_bytes()),
        );
    }
    println!("MACs/image: a full forward pass with the next-token head, causal attention counted exactly.");
    println!("int8: weights int8 with one f32 scale per output row, norm gains f32 (estimate; no header).");
    Ok(())
}
