//! Palettes on the host: k-means fitting, import of OpenAI's `kmeans_centers.npy`, the
//! palette file (format in `FORMAT.md`, encoded by `igpt_core::Palette`) and swatches.
//!
//! Fitting runs Lloyd's k-means on a random sample of pixels. Centres are kept as f64
//! means but every assignment is made to the centres rounded to u8, with the core's
//! integer nearest-colour rule, so the objective the fit minimises is exactly the
//! quantization error the tokenizer will give.

use anyhow::{bail, ensure, Context, Result};
use igpt_core::palette::sq_distance;
use igpt_core::Palette;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::Path;

/// Reads and verifies a palette file.
pub fn load(path: &Path) -> Result<Palette> {
    // A palette file is at most 512 x 3 bytes plus a small header.
    let bytes = crate::io::read_limited(path, 4096)?;
    Palette::from_bytes(&bytes).with_context(|| format!("{}: bad palette file", path.display()))
}

/// Writes a palette file atomically.
pub fn save(path: &Path, palette: &Palette) -> Result<()> {
    let mut buf = vec![0u8; palette.encoded_len()];
    let n = palette.to_bytes(&mut buf)?;
    crate::io::write_atomic(path, &buf[..n])
}

/// k-means settings.
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// Number of colours (1..=512).
    pub k: usize,
    /// Most Lloyd iterations; stops earlier when no assignment changes.
    pub iters: usize,
    /// Pixels sampled from the data (all when fewer).
    pub sample: usize,
    /// RNG seed: the same seed and data give the same palette.
    pub seed: u64,
}

/// What a fit reports.
#[derive(Debug, Clone, Copy)]
pub struct FitStats {
    /// Pixels the fit used.
    pub pixels: usize,
    /// Lloyd iterations run.
    pub iters: usize,
    /// Centres re-seeded because no pixel chose them.
    pub reseeded: usize,
    /// Mean squared error per channel of the sample against the final palette.
    pub mse: f64,
}

/// Mean squared quantization error per channel of `pixels` (interleaved, the palette's
/// channel count) against `palette`.
pub fn quantization_mse(palette: &Palette, pixels: &[u8]) -> f64 {
    let c = palette.channels();
    let total: u64 = pixels
        .par_chunks(c * 4096)
        .map(|chunk| {
            chunk
                .chunks_exact(c)
                .map(|p| palette.nearest_with_distance(p).1 as u64)
                .sum::<u64>()
        })
        .sum();
    total as f64 / pixels.len().max(1) as f64
}

fn rounded(centres: &[f64]) -> Vec<u8> {
    centres
        .iter()
        .map(|&v| v.round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// Fits a `opts.k`-colour palette to interleaved `pixels` of `channels` channels:
/// k-means++ start, Lloyd iterations, dead centres re-seeded at the pixels worst served.
/// The centres come out sorted by luma (dark first).
pub fn fit(
    pixels: &[u8],
    channels: usize,
    opts: FitOptions,
    show_progress: bool,
) -> Result<(Palette, FitStats)> {
    ensure!(
        channels == 1 || channels == 3,
        "palette fit: {channels} channels (need 1 or 3)"
    );
    ensure!(
        (1..=igpt_core::config::MAX_VOCAB).contains(&opts.k),
        "palette fit: k = {} is out of range (1..=512)",
        opts.k
    );
    let total = pixels.len() / channels;
    ensure!(
        total >= opts.k,
        "palette fit: {total} pixels cannot make {} colours",
        opts.k
    );
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);

    // Sample without replacement (partial Fisher-Yates over indices) when needed.
    let sample: Vec<u8> = if total <= opts.sample {
        pixels[..total * channels].to_vec()
    } else {
        let mut idx: Vec<u32> = (0..total as u32).collect();
        for i in 0..opts.sample {
            let j = rng.gen_range(i..total);
            idx.swap(i, j);
        }
        idx[..opts.sample]
            .iter()
            .flat_map(|&i| {
                pixels[i as usize * channels..(i as usize + 1) * channels]
                    .iter()
                    .copied()
            })
            .collect()
    };
    let n = sample.len() / channels;
    let px = |i: usize| &sample[i * channels..(i + 1) * channels];

    // k-means++: each new centre drawn with probability proportional to D².
    let mut centres: Vec<f64> = Vec::with_capacity(opts.k * channels);
    let first = rng.gen_range(0..n);
    centres.extend(px(first).iter().map(|&v| v as f64));
    let mut d2: Vec<u32> = (0..n).map(|i| sq_distance(px(i), px(first))).collect();
    while centres.len() < opts.k * channels {
        let sum: u64 = d2.iter().map(|&d| d as u64).sum();
        let pick = if sum == 0 {
            rng.gen_range(0..n)
        } else {
            let mut r = rng.gen_range(0..sum);
            let mut chosen = n - 1;
            for (i, &d) in d2.iter().enumerate() {
                if r < d as u64 {
                    chosen = i;
                    break;
                }
                r -= d as u64;
            }
            chosen
        };
        let c: Vec<u8> = px(pick).to_vec();
        centres.extend(c.iter().map(|&v| v as f64));
        d2.par_iter_mut().enumerate().for_each(|(i, d)| {
            *d = (*d).min(sq_distance(&sample[i * channels..(i + 1) * channels], &c));
        });
    }

    let bar = crate::progress::bar(opts.iters as u64, "k-means", show_progress);
    let mut assign = vec![u16::MAX; n];
    let mut iters = 0;
    let mut reseeded = 0;
    for _ in 0..opts.iters {
        iters += 1;
        let pal = Palette::new(channels, &rounded(&centres))?;
        let results: Vec<(u16, u32)> = sample
            .par_chunks(channels)
            .map(|p| pal.nearest_with_distance(p))
            .collect();
        let changed = results
            .iter()
            .zip(&assign)
            .filter(|((a, _), b)| a != *b)
            .count();
        let mut sums = vec![0f64; opts.k * channels];
        let mut counts = vec![0usize; opts.k];
        for (i, &(a, _)) in results.iter().enumerate() {
            assign[i] = a;
            counts[a as usize] += 1;
            for ch in 0..channels {
                sums[a as usize * channels + ch] += sample[i * channels + ch] as f64;
            }
        }
        // Dead centres move to the pixels with the largest error, one each.
        let dead: Vec<usize> = (0..opts.k).filter(|&c| counts[c] == 0).collect();
        let mut worst: Vec<usize> = Vec::new();
        if !dead.is_empty() {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(results[i].1));
            worst = order.into_iter().take(dead.len()).collect();
        }
        for (c, &s) in dead.iter().zip(&worst) {
            for ch in 0..channels {
                centres[c * channels + ch] = sample[s * channels + ch] as f64;
            }
            reseeded += 1;
        }
        for c in 0..opts.k {
            if counts[c] > 0 {
                for ch in 0..channels {
                    centres[c * channels + ch] = sums[c * channels + ch] / counts[c] as f64;
                }
            }
        }
        let mse = results.iter().map(|r| r.1 as f64).sum::<f64>() / sample.len() as f64;
        bar.set_message(format!(
            "mse {mse:.2}, {changed} moved, {} dead",
            dead.len()
        ));
        bar.inc(1);
        if changed == 0 && dead.is_empty() {
            break;
        }
    }
    bar.finish_and_clear();

    // Sort by luma, then channel values, so grey palettes run dark to light.
    let mut cols: Vec<Vec<u8>> = rounded(&centres)
        .chunks(channels)
        .map(|c| c.to_vec())
        .collect();
    cols.sort_by_key(|c| {
        let luma = if channels == 3 {
            299 * c[0] as u32 + 587 * c[1] as u32 + 114 * c[2] as u32
        } else {
            c[0] as u32
        };
        (luma, c.clone())
    });
    let palette = Palette::new(channels, &cols.concat())?;
    let mse = quantization_mse(&palette, &sample);
    Ok((
        palette,
        FitStats {
            pixels: n,
            iters,
            reseeded,
            mse,
        },
    ))
}

/// The uniform grid palette with `levels` values per channel at the bin centres
/// `(2i + 1) * 128 / levels` (8 levels: 16, 48, .., 240), e.g. 8x8x8 = 512 RGB colours.
pub fn uniform_grid(channels: usize, levels: usize) -> Result<Palette> {
    let vals: Vec<u8> = (0..levels)
        .map(|i| ((2 * i + 1) * 128 / levels) as u8)
        .collect();
    let centres: Vec<u8> = match channels {
        1 => vals.clone(),
        3 => {
            let mut c = Vec::new();
            for &r in &vals {
                for &g in &vals {
                    for &b in &vals {
                        c.extend_from_slice(&[r, g, b]);
                    }
                }
            }
            c
        }
        c => bail!("{c} channels: a palette has 1 or 3"),
    };
    Ok(Palette::new(channels, &centres)?)
}

/// Reads OpenAI's `kmeans_centers.npy` (k x 3 floats in [-1, 1], `<f4` or `<f8`, C
/// order; k x 1 for grey): colour = round(127.5 * (c + 1)), clamped to 0..=255.
pub fn import_npy(path: &Path) -> Result<Palette> {
    // 512 x 3 float64 values and a header: a few tens of KB.
    let bytes = crate::io::read_limited(path, 1 << 20)?;
    let bad = |what: &str| anyhow::anyhow!("{}: not a palette .npy: {what}", path.display());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing the NUMPY magic"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(&format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + hlen)
        .ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))?;
        let rest = header[at + key.len() + 2..]
            .trim_start()
            .strip_prefix(':')?
            .trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or_else(|| bad("no 'descr'"))?;
    let size = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(bad("dtype must be little-endian float32 or float64"));
    };
    let fortran = field("fortran_order").ok_or_else(|| bad("no 'fortran_order'"))?;
    if !fortran.starts_with("False") {
        return Err(bad("Fortran order is not supported"));
    }
    let shape = field("shape").ok_or_else(|| bad("no 'shape'"))?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("unreadable shape"))?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("unreadable shape"))?;
    let (k, c) = match dims[..] {
        [k, c] => (k, c),
        _ => return Err(bad(&format!("shape {dims:?} is not (k, 3) or (k, 1)"))),
    };
    ensure!(
        c == 1 || c == 3,
        "{}: palette .npy has {c} channels (need 1 or 3)",
        path.display()
    );
    ensure!(
        (1..=512).contains(&k),
        "{}: palette .npy has {k} colours (need 1..=512)",
        path.display()
    );
    let data = &bytes[start + hlen..];
    ensure!(
        data.len() == k * c * size,
        "{}: truncated .npy data: shape ({k}, {c}) needs {} bytes, found {}",
        path.display(),
        k * c * size,
        data.len()
    );
    let mut centres = Vec::with_capacity(k * c);
    for v in data.chunks_exact(size) {
        let x = if size == 4 {
            f32::from_le_bytes(v.try_into()?) as f64
        } else {
            f64::from_le_bytes(v.try_into()?)
        };
        ensure!(
            x.is_finite(),
            "{}: non-finite value in palette .npy",
            path.display()
        );
        // A little past ±1 is rounding; 0..255 centres would all clamp to white.
        ensure!(
            x.abs() <= 1.001,
            "{}: value {x} is outside OpenAI's range [-1, 1] (centres in 0..255 must be scaled to c / 127.5 - 1)",
            path.display()
        );
        centres.push((127.5 * (x + 1.0)).round().clamp(0.0, 255.0) as u8);
    }
    Ok(Palette::new(c, &centres)?)
}

/// Writes a swatch PNG: one `cell`x`cell` square per colour, `cols` to a row, in token
/// order (token 0 top left).
pub fn write_swatch(path: &Path, palette: &Palette, cols: usize, cell: usize) -> Result<()> {
    anyhow::ensure!(
        (1..=512).contains(&cols),
        "--cols {cols} is out of range (1..=512)"
    );
    anyhow::ensure!(
        (1..=256).contains(&cell),
        "--cell {cell} is out of range (1..=256)"
    );
    let k = palette.len();
    let cols = cols.clamp(1, k);
    let rows = k.div_ceil(cols);
    let (w, h) = (cols * cell, rows * cell);
    let mut img = vec![255u8; w * h * 3];
    for t in 0..k {
        let col = palette.colour(t as u16)?;
        let rgb = if col.len() == 1 {
            [col[0]; 3]
        } else {
            [col[0], col[1], col[2]]
        };
        let (x0, y0) = ((t % cols) * cell, (t / cols) * cell);
        for y in y0..y0 + cell {
            for x in x0..x0 + cell {
                img[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&rgb);
            }
        }
    }
    crate::io::write_png(path, w, h, 3, &img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_well_separated_grey_levels() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let levels = [10u8, 70, 130, 250];
        let px: Vec<u8> = (0..4000)
            .map(|i| levels[i % 4].saturating_add(rng.gen_range(0..3)))
            .collect();
        let opts = FitOptions {
            k: 4,
            iters: 50,
            sample: 100_000,
            seed: 3,
        };
        let (p, stats) = fit(&px, 1, opts, false).unwrap();
        assert_eq!(p.centres(), &[11, 71, 131, 251]);
        assert!(stats.mse < 1.0, "{stats:?}");
        // Same seed, same palette.
        assert_eq!(fit(&px, 1, opts, false).unwrap().0, p);
    }

    #[test]
    fn dead_centres_are_reseeded() {
        // Two distinct values but three centres: k-means++ picks a duplicate, which the
        // re-seeding keeps in use rather than failing.
        let px: Vec<u8> = (0..100).map(|i| if i % 2 == 0 { 0 } else { 200 }).collect();
        let opts = FitOptions {
            k: 3,
            iters: 10,
            sample: 1000,
            seed: 0,
        };
        let (p, stats) = fit(&px, 1, opts, false).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(stats.mse, 0.0);
    }

    #[test]
    fn grid_palette() {
        let g = uniform_grid(3, 8).unwrap();
        assert_eq!(g.len(), 512);
        assert_eq!(g.colour(0).unwrap(), &[16, 16, 16]);
        assert_eq!(g.colour(511).unwrap(), &[240, 240, 240]);
        assert_eq!(uniform_grid(1, 4).unwrap().centres(), &[32, 96, 160, 224]);
    }
}
