//! Sampling with a KV cache: unconditional samples and image completion.
//!
//! One position at a time for a batch of sequences: each step computes only the new
//! position's projections and attends over the cached keys and values of the earlier
//! positions (nothing of the prefix is recomputed). The step is built from the same slice
//! kernels as the fused training path (`kernels::{gemm, rmsnorm_fwd, quick_gelu_fwd,
//! softmax_row}`), so the f32 math exists once; a test checks its logits against the
//! dfdx model's full forward pass.
//!
//! That KV-cached path is plain f32 Rust on the host (`igpt sample --device cpu`, the
//! default). dfdx has no KV cache, so on another dfdx device ([`generate_full`],
//! `--device cuda`) each new pixel reruns the model's full forward pass over the sequence
//! so far: O(n²) positions computed for n pixels, which a GPU absorbs at iGPT's sizes.

use crate::nn::device::ModelDevice;
use crate::nn::kv::{step, KvState, Weights};
use crate::nn::{Capture, Captures, Gpt};
use anyhow::{ensure, Result};
use dfdx::prelude::*;
use rand::Rng;

/// Draws a token from logits with a temperature and an optional top-k cut.
pub fn draw<R: Rng>(logits: &[f32], temperature: f32, top_k: Option<usize>, rng: &mut R) -> usize {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if let Some(k) = top_k {
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        idx.truncate(k.max(1));
    }
    if temperature <= 0.0 {
        return idx.iter().copied().fold(
            idx[0],
            |best, i| if logits[i] > logits[best] { i } else { best },
        );
    }
    let max = idx
        .iter()
        .map(|&i| logits[i])
        .fold(f32::NEG_INFINITY, f32::max);
    let p: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i] - max) / temperature) as f64).exp())
        .collect();
    let mut u = rng.gen::<f64>() * p.iter().sum::<f64>();
    for (j, &pj) in p.iter().enumerate() {
        if u < pj {
            return idx[j];
        }
        u -= pj;
    }
    idx[idx.len() - 1]
}

/// Prefixes to complete and the original images' tokens.
pub type Completions = (Vec<Vec<u16>>, Vec<Vec<u16>>);

/// The prefixes of image completion: each image's first `keep_rows` rows, `completions`
/// times, for image files and the first `test.1` test images of `test.0`. Returns the
/// prefixes and the original images' tokens.
pub fn completion_prefixes(
    palette: &igpt_core::Palette,
    side: usize,
    files: &[std::path::PathBuf],
    test: Option<(&std::path::Path, usize)>,
    keep_rows: usize,
    completions: usize,
) -> Result<Completions> {
    ensure!(
        keep_rows > 0 && keep_rows < side,
        "--keep-rows must be in 1..{side}"
    );
    ensure!(completions > 0, "--completions must be positive");
    let mut originals = Vec::new();
    for path in files {
        originals.push(crate::data::tokenize::image(path, palette, side)?);
    }
    if let Some((data, count)) = test {
        originals.extend(
            crate::data::tokenize::split(data, crate::data::Split::Test, palette, side, count)?
                .tokens,
        );
    }
    let mut prefixes = Vec::new();
    for t in &originals {
        for _ in 0..completions {
            prefixes.push(t[..keep_rows * side].to_vec());
        }
    }
    Ok((prefixes, originals))
}

/// At least one sequence, and every prefix shorter than the image's `n` pixels.
fn check_prefixes(prefixes: &[Vec<u16>], n: usize) -> Result<()> {
    ensure!(!prefixes.is_empty(), "nothing to generate");
    ensure!(
        prefixes.iter().all(|p| p.len() < n),
        "a prefix fills the whole image"
    );
    Ok(())
}

/// Appends the next token of every sequence to `out`: the prefix's pixel where it has
/// one, else a draw from that sequence's `logits` row; returns the appended tokens.
fn next_tokens<R: Rng>(
    out: &mut [Vec<u16>],
    prefixes: &[Vec<u16>],
    logits: &[f32],
    vocab: usize,
    (temperature, top_k): (f32, Option<usize>),
    rng: &mut R,
) -> Vec<usize> {
    let t = out.first().map_or(0, |s| s.len());
    out.iter_mut()
        .zip(prefixes)
        .zip(logits.chunks_exact(vocab))
        .map(|((seq, prefix), row)| {
            let tok = match prefix.get(t) {
                Some(&known) => known as usize,
                None => draw(row, temperature, top_k, rng),
            };
            seq.push(tok as u16);
            tok
        })
        .collect()
}

/// Generates `batch` images. `prefix[s]` holds sequence s's known first pixels (empty for
/// unconditional samples); the rest is sampled. Returns the tokens of each image.
pub fn generate<R: Rng>(
    w: &Weights,
    prefixes: &[Vec<u16>],
    temperature: f32,
    top_k: Option<usize>,
    rng: &mut R,
) -> Result<Vec<Vec<u16>>> {
    let c = *w.config();
    let n = c.seq_len();
    let b = prefixes.len();
    check_prefixes(prefixes, n)?;
    crate::io::ensure_memory(
        crate::nn::memory::kv_bytes(&c, b),
        "lower --n or --completions",
    )?;
    let mut state = KvState::new(&c, b);
    let mut out: Vec<Vec<u16>> = vec![Vec::with_capacity(n); b];
    let mut input = vec![c.sos(); b];
    for _ in 0..n {
        let logits = step(w, &mut state, &input);
        input = next_tokens(
            &mut out,
            prefixes,
            &logits,
            c.vocab,
            (temperature, top_k),
            rng,
        );
    }
    Ok(out)
}

/// [`generate`] through the dfdx model on its device: no KV cache, so each position
/// reruns the full forward pass over the positions so far (and the head on the last one).
/// Same token convention, prefixes and draws as [`generate`].
pub fn generate_full<D: ModelDevice, R: Rng>(
    gpt: &Gpt<f32, D>,
    prefixes: &[Vec<u16>],
    temperature: f32,
    top_k: Option<usize>,
    rng: &mut R,
) -> Result<Vec<Vec<u16>>> {
    let c = gpt.config;
    let n = c.seq_len();
    let b = prefixes.len();
    check_prefixes(prefixes, n)?;
    let mut out: Vec<Vec<u16>> = vec![Vec::with_capacity(n); b];
    for t in 0..n {
        // Inputs (B, t + 1): SOS, then the pixels so far.
        // igpt-core's model input of each sequence with a placeholder for pixel t.
        let padded: Vec<Vec<u16>> = out
            .iter()
            .map(|seq| seq.iter().copied().chain([0]).collect())
            .collect();
        let ids = crate::data::tokenize::model_ids(&padded, c.sos(), true);
        let z = gpt.forward::<NoneTape>(
            &ids,
            b,
            true,
            None,
            Capture::default(),
            &mut Captures::default(),
        );
        let last = z.slice((.., t..t + 1, ..));
        let logits = gpt.logits(last).as_vec();
        next_tokens(
            &mut out,
            prefixes,
            &logits,
            c.vocab,
            (temperature, top_k),
            rng,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use igpt_core::Config;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn full_forward_sampling_matches_the_kv_cache() {
        let config = Config::new(16, 4, 32, 4, 2).unwrap();
        let dev = Cpu::seed_from_u64(0);
        let mut gpt = Gpt::<f32, Cpu>::init(&dev, config, None, 5);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        gpt.params.lm_head = dev.tensor_from_vec(
            (0..16 * 32).map(|_| rng.gen_range(-1.0..1.0)).collect(),
            (16, 32),
        );
        let w = Weights::from_model(&gpt);
        let prefixes = vec![vec![], vec![3, 4, 5], vec![15; 9]];
        let mut r1 = ChaCha8Rng::seed_from_u64(9);
        let mut r2 = ChaCha8Rng::seed_from_u64(9);
        let kv = generate(&w, &prefixes, 0.0, None, &mut r1).unwrap();
        let full = generate_full(&gpt, &prefixes, 0.0, None, &mut r2).unwrap();
        assert_eq!(kv, full);
        assert_eq!(full[1][..3], [3, 4, 5]);
        assert!(generate_full(&gpt, &[vec![0; 16]], 1.0, None, &mut r2).is_err());
    }

    #[test]
    fn draw_respects_top_k_and_greedy() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let logits = [0.0, 5.0, 1.0, 4.9];
        assert_eq!(draw(&logits, 0.0, None, &mut rng), 1);
        for _ in 0..50 {
            let t = draw(&logits, 1.0, Some(2), &mut rng);
            assert!(t == 1 || t == 3);
        }
    }
}

/// What [`write_grid`] did.
#[derive(Debug, Clone, Copy)]
pub struct GridReport {
    /// Images generated.
    pub images: usize,
    /// Tokens sampled.
    pub tokens: usize,
    /// Sampling wall time.
    pub seconds: f64,
}

/// Samples an image for every prefix (KV cache, CPU) and writes them with [`draw_grid`].
#[allow(clippy::too_many_arguments)]
pub fn write_grid(
    ck: &crate::io::checkpoint::Checkpoint,
    prefixes: &[Vec<u16>],
    originals: &[Vec<u16>],
    completions: usize,
    temperature: f32,
    top_k: Option<usize>,
    seed: u64,
    out: &std::path::Path,
) -> Result<GridReport> {
    use rand::SeedableRng;
    let w = Weights::new(ck.config, &ck.params);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let t0 = std::time::Instant::now();
    let images = generate(&w, prefixes, temperature, top_k, &mut rng)?;
    let seconds = t0.elapsed().as_secs_f64();
    draw_grid(ck, &images, prefixes, originals, completions, out)?;
    let n = ck.config.seq_len();
    Ok(GridReport {
        images: images.len(),
        tokens: prefixes.iter().map(|p| n - p.len()).sum(),
        seconds,
    })
}

/// Writes sampled `images` as a PNG grid. Without `originals`, a square grid; with them
/// (each completed `completions` times from its prefix in `prefixes`), one row per
/// original: the kept rows (the rest grey), the completions, the original.
pub fn draw_grid(
    ck: &crate::io::checkpoint::Checkpoint,
    images: &[Vec<u16>],
    prefixes: &[Vec<u16>],
    originals: &[Vec<u16>],
    completions: usize,
    out: &std::path::Path,
) -> Result<()> {
    use anyhow::Context;
    let pal = ck
        .palette
        .clone()
        .context("the checkpoint has no palette")?;
    let (side, c) = (ck.config.side, pal.channels());
    let rgb = |tokens: &[u16]| -> Result<Vec<u8>> {
        let mut px = vec![0u8; tokens.len() * c];
        pal.decode_tokens(tokens, &mut px)?;
        crate::data::convert_channels(&px, c, 3)
    };
    let rows: Vec<Vec<Vec<u8>>> = if originals.is_empty() {
        let cols = (images.len() as f64).sqrt().ceil() as usize;
        images
            .chunks(cols.max(1))
            .map(|r| r.iter().map(|t| rgb(t)).collect::<Result<Vec<_>>>())
            .collect::<Result<_>>()?
    } else {
        let mut rows = Vec::new();
        for (i, orig) in originals.iter().enumerate() {
            let keep = prefixes.get(i * completions).map_or(0, |p| p.len());
            let mut kept = rgb(orig)?;
            kept[keep * 3..].fill(128);
            let mut row = vec![kept];
            for t in images
                .get(i * completions..(i + 1) * completions)
                .unwrap_or(&[])
            {
                row.push(rgb(t)?);
            }
            row.push(rgb(orig)?);
            rows.push(row);
        }
        rows
    };
    crate::io::write_image_grid(out, &rows, side)
}
