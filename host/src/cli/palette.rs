//! `igpt palette fit | import | show | grid`: colour palettes.

use anyhow::{ensure, Result};
use igpt::data::{self, palette, Split};
use std::path::PathBuf;

/// Runs a `palette` subcommand.
pub fn run(cmd: PaletteCmd) -> Result<()> {
    match cmd {
        PaletteCmd::Fit(a) => palette_fit(a),
        PaletteCmd::Import(a) => {
            igpt::io::guard::ensure_distinct([&a.out], [&a.npy])?;
            igpt::io::check_output(&a.out)?;
            let p = palette::import_npy(&a.npy)?;
            palette::save(&a.out, &p)?;
            println!(
                "{}: {} colours, {} channels",
                a.out.display(),
                p.len(),
                p.channels()
            );
            Ok(())
        }
        PaletteCmd::Show(a) => {
            igpt::io::guard::ensure_distinct([&a.out], [&a.palette])?;
            ensure!(
                (1..=512).contains(&a.cols) && (1..=256).contains(&a.cell),
                "--cols must be in 1..=512 and --cell in 1..=256"
            );
            igpt::io::check_output(&a.out)?;
            let p = palette::load(&a.palette)?;
            palette::write_swatch(&a.out, &p, a.cols, a.cell)?;
            println!(
                "{}: {} colours, {} channels; swatch written to {}",
                a.palette.display(),
                p.len(),
                p.channels(),
                a.out.display()
            );
            Ok(())
        }
        PaletteCmd::Grid(a) => {
            ensure!(
                a.channels == 1 || a.channels == 3,
                "--channels {}: a palette has 1 or 3",
                a.channels
            );
            ensure!(
                (1..=256).contains(&a.levels) && a.levels.pow(a.channels as u32) <= 512,
                "--levels {}: levels^channels must be at most 512 colours (--levels at most 512 grey, 8 RGB)",
                a.levels
            );
            igpt::io::check_output(&a.out)?;
            let p = palette::uniform_grid(a.channels, a.levels)?;
            palette::save(&a.out, &p)?;
            println!(
                "{}: {} colours, {} channels",
                a.out.display(),
                p.len(),
                p.channels()
            );
            Ok(())
        }
    }
}

#[derive(clap::Subcommand)]
pub enum PaletteCmd {
    /// k-means palette from a dataset's pixels (k-means++ start, Lloyd iterations).
    Fit(FitArgs),
    /// Import OpenAI's kmeans_centers.npy (k x 3 floats in [-1, 1]).
    Import(ImportArgs),
    /// Write a swatch PNG of a palette file.
    Show(ShowArgs),
    /// The uniform grid palette: `levels` values per channel (8 levels, RGB: 512 colours).
    Grid(GridArgs),
}

#[derive(clap::Args)]
pub struct GridArgs {
    /// Channels: 1 (grey) or 3 (RGB).
    #[arg(long, default_value_t = 3)]
    pub channels: usize,
    /// Values per channel.
    #[arg(long, default_value_t = 8)]
    pub levels: usize,
    /// Output palette file.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct FitArgs {
    /// Dataset: CIFAR-10 batches, IDX files or class folders (file or folder).
    #[arg(long)]
    pub data: PathBuf,
    /// Which split to sample pixels from.
    #[arg(long, value_enum, default_value = "train")]
    pub split: Split,
    /// Number of colours (1..=512).
    #[arg(long, default_value_t = 512)]
    pub k: usize,
    /// Channels: 1 (grey) or 3 (RGB); default: the dataset's.
    #[arg(long)]
    pub channels: Option<usize>,
    /// Resize images to side x side before sampling pixels (the model resolution).
    #[arg(long)]
    pub side: Option<usize>,
    /// Pixels sampled for the fit.
    #[arg(long, default_value_t = 1_000_000)]
    pub sample: usize,
    /// Most Lloyd iterations.
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output palette file.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write a swatch PNG here.
    #[arg(long)]
    pub swatch: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// OpenAI's kmeans_centers.npy.
    #[arg(long)]
    pub npy: PathBuf,
    /// Output palette file.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// Palette file.
    pub palette: PathBuf,
    /// Output swatch PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// Colours per row.
    #[arg(long, default_value_t = 32)]
    pub cols: usize,
    /// Pixels per colour square.
    #[arg(long, default_value_t = 16)]
    pub cell: usize,
}

pub fn check_side(side: Option<usize>) -> Result<()> {
    if let Some(s) = side {
        ensure!(
            (1..=igpt_core::config::MAX_SIDE).contains(&s),
            "--side {s} is out of range (1..={})",
            igpt_core::config::MAX_SIDE
        );
    }
    Ok(())
}

pub fn palette_fit(a: FitArgs) -> Result<()> {
    check_side(a.side)?;
    igpt::io::guard::ensure_distinct([&a.out].into_iter().chain(a.swatch.as_ref()), [&a.data])?;
    for out in [&a.out].into_iter().chain(a.swatch.as_ref()) {
        igpt::io::check_output(out)?;
    }
    ensure!(
        (1..=100_000_000).contains(&a.sample),
        "--sample {} is out of range (1..=100000000)",
        a.sample
    );
    ensure!(
        (1..=512).contains(&a.k),
        "--k {} is out of range (1..=512)",
        a.k
    );
    ensure!(
        (1..=10_000).contains(&a.iters),
        "--iters {} is out of range (1..=10000)",
        a.iters
    );
    let ds = data::load(&a.data, a.split, a.side)?;
    let channels = a.channels.unwrap_or(ds.channels);
    ensure!(
        channels == 1 || channels == 3,
        "--channels {channels}: a palette has 1 or 3"
    );
    let ds = ds.with_channels(channels)?;
    let opts = palette::FitOptions {
        k: a.k,
        iters: a.iters,
        sample: a.sample,
        seed: a.seed,
    };
    ensure!(
        !ds.pixels.is_empty(),
        "{}: no pixels to fit a palette to",
        a.data.display()
    );
    let (p, stats) = palette::fit(&ds.pixels, channels, opts, true)?;
    // The palette and its swatch, both or neither.
    igpt::io::write_together(|| {
        palette::save(&a.out, &p)?;
        match &a.swatch {
            Some(s) => palette::write_swatch(s, &p, 32, 16),
            None => Ok(()),
        }
    })?;
    println!(
        "{}: {} colours x {} channels from {} pixels of {} images, {} iterations, {} re-seeded, mse per channel {:.3}",
        a.out.display(),
        p.len(),
        channels,
        stats.pixels,
        ds.len(),
        stats.iters,
        stats.reseeded,
        stats.mse
    );
    if let Some(s) = a.swatch {
        println!("swatch: {}", s.display());
    }
    Ok(())
}
