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

use crate::io::checkpoint::Checkpoint;
use crate::nn::device::ModelDevice;
use crate::nn::kernels::{gemm, quick_gelu_fwd, rmsnorm_fwd, softmax_row};
use crate::nn::{Capture, Captures, Gpt};
use anyhow::{ensure, Result};
use dfdx::prelude::*;
use igpt_core::Config;
use rand::Rng;

/// The weights as plain row-major f32 slices, in the checkpoint's layouts.
pub struct Weights {
    config: Config,
    m: Vec<Vec<f32>>,
}

impl Weights {
    /// From a checkpoint.
    pub fn new(ck: &Checkpoint) -> Weights {
        Weights {
            config: ck.config,
            m: ck.weights.iter().map(|w| w.data.clone()).collect(),
        }
    }

    fn block(&self, l: usize, i: usize) -> &[f32] {
        &self.m[2 + 8 * l + i]
    }
}

/// A batch of sequences being generated, with its KV cache.
pub struct KvState {
    /// Sequences.
    pub batch: usize,
    /// Positions filled so far.
    pub pos: usize,
    /// `[layer] (batch, n, d)` keys and values.
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl KvState {
    /// An empty cache for `batch` sequences of up to `n` positions.
    pub fn new(c: &Config, batch: usize) -> KvState {
        let size = batch * c.seq_len() * c.width;
        KvState {
            batch,
            pos: 0,
            k: vec![vec![0f32; size]; c.layers],
            v: vec![vec![0f32; size]; c.layers],
        }
    }
}

/// Feeds one input token per sequence at position `state.pos` and returns the
/// next-token logits `(batch, k)`.
pub fn step(w: &Weights, state: &mut KvState, tokens: &[usize]) -> Vec<f32> {
    let c = w.config;
    let (b, d, n, t) = (state.batch, c.width, c.seq_len(), state.pos);
    assert!(
        t < n && tokens.len() == b,
        "step beyond the sequence or wrong batch"
    );
    let (h, hd) = (c.heads, c.head_dim());
    let f = c.mlp_width();
    // x = wte[token] + wpe[t]                                          (B, C)
    let mut x = vec![0f32; b * d];
    for (s, &tok) in tokens.iter().enumerate() {
        let (e, p) = (&w.m[0][tok * d..(tok + 1) * d], &w.m[1][t * d..(t + 1) * d]);
        for ((o, e), p) in x[s * d..(s + 1) * d].iter_mut().zip(e).zip(p) {
            *o = e + p;
        }
    }
    let mut a = vec![0f32; b * d];
    let mut r = vec![0f32; b];
    let (mut q, mut o, mut y) = (vec![0f32; b * d], vec![0f32; b * d], vec![0f32; b * d]);
    let (mut hbuf, mut g) = (vec![0f32; b * f], vec![0f32; b * f]);
    let mut scores = vec![0f32; t + 1];
    let scale = 1.0 / (hd as f32).sqrt();
    for l in 0..c.layers {
        rmsnorm_fwd(&x, w.block(l, 0), &mut a, &mut r);
        gemm(
            b,
            d,
            d,
            &mut q,
            (d, 1),
            false,
            &a,
            (d, 1),
            w.block(l, 1),
            (d, 1),
            1.0,
        );
        // New keys and values go straight into the cache at row t of each sequence.
        for (which, wi) in [(0, 2), (1, 3)] {
            let cache = if which == 0 {
                &mut state.k[l]
            } else {
                &mut state.v[l]
            };
            gemm(
                b,
                d,
                d,
                &mut cache[t * d..],
                (n * d, 1),
                false,
                &a,
                (d, 1),
                w.block(l, wi),
                (d, 1),
                1.0,
            );
        }
        for s in 0..b {
            let (kc, vc) = (&state.k[l][s * n * d..], &state.v[l][s * n * d..]);
            for j in 0..h {
                let qh = &q[s * d + j * hd..s * d + (j + 1) * hd];
                for (u, sc) in scores.iter_mut().enumerate() {
                    let kh = &kc[u * d + j * hd..u * d + (j + 1) * hd];
                    *sc = qh.iter().zip(kh).map(|(x, y)| x * y).sum::<f32>() * scale;
                }
                softmax_row(&mut scores, t + 1);
                let oh = &mut o[s * d + j * hd..s * d + (j + 1) * hd];
                oh.fill(0.0);
                for (u, p) in scores.iter().enumerate() {
                    for (acc, v) in oh.iter_mut().zip(&vc[u * d + j * hd..u * d + (j + 1) * hd]) {
                        *acc += p * v;
                    }
                }
            }
        }
        gemm(
            b,
            d,
            d,
            &mut y,
            (d, 1),
            false,
            &o,
            (d, 1),
            w.block(l, 4),
            (d, 1),
            1.0,
        );
        x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
        rmsnorm_fwd(&x, w.block(l, 5), &mut a, &mut r);
        gemm(
            b,
            f,
            d,
            &mut hbuf,
            (f, 1),
            false,
            &a,
            (d, 1),
            w.block(l, 6),
            (f, 1),
            1.0,
        );
        quick_gelu_fwd(&hbuf, &mut g);
        gemm(
            b,
            d,
            f,
            &mut y,
            (d, 1),
            false,
            &g,
            (f, 1),
            w.block(l, 7),
            (d, 1),
            1.0,
        );
        x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
    }
    let last = 2 + 8 * c.layers;
    rmsnorm_fwd(&x, &w.m[last], &mut a, &mut r);
    let k = c.vocab;
    let mut logits = vec![0f32; b * k];
    gemm(
        b,
        k,
        d,
        &mut logits,
        (k, 1),
        false,
        &a,
        (d, 1),
        &w.m[last + 1],
        (1, d),
        1.0,
    );
    state.pos += 1;
    logits
}

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

/// At least one sequence, and every prefix shorter than the image's `n` pixels.
fn check_prefixes(prefixes: &[Vec<u16>], n: usize) -> Result<()> {
    ensure!(!prefixes.is_empty(), "nothing to generate");
    ensure!(
        prefixes.iter().all(|p| p.len() < n),
        "a prefix fills the whole image"
    );
    Ok(())
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
    let c = w.config;
    let n = c.seq_len();
    let b = prefixes.len();
    check_prefixes(prefixes, n)?;
    let mut state = KvState::new(&c, b);
    let mut out: Vec<Vec<u16>> = vec![Vec::with_capacity(n); b];
    let mut input = vec![c.sos(); b];
    for t in 0..n {
        let logits = step(w, &mut state, &input);
        for s in 0..b {
            let tok = match prefixes[s].get(t) {
                Some(&known) => known as usize,
                None => draw(
                    &logits[s * c.vocab..(s + 1) * c.vocab],
                    temperature,
                    top_k,
                    rng,
                ),
            };
            out[s].push(tok as u16);
            input[s] = tok;
        }
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
    let mut ids = Vec::with_capacity(b * n);
    for t in 0..n {
        // Inputs (B, t + 1): SOS, then the pixels so far.
        ids.clear();
        for seq in &out {
            ids.push(c.sos());
            ids.extend(seq.iter().map(|&x| x as usize));
        }
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
        for s in 0..b {
            let tok = match prefixes[s].get(t) {
                Some(&known) => known as usize,
                None => draw(
                    &logits[s * c.vocab..(s + 1) * c.vocab],
                    temperature,
                    top_k,
                    rng,
                ),
            };
            out[s].push(tok as u16);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn kv_cached_steps_match_the_full_forward_pass() {
        let config = Config::new(16, 4, 32, 4, 2).unwrap();
        let dev = Cpu::seed_from_u64(0);
        let mut gpt = Gpt::<f32, Cpu>::init(&dev, config, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        gpt.lm_head = dev.tensor_from_vec(
            (0..16 * 32).map(|_| rng.gen_range(-0.3..0.3)).collect(),
            (16, 32),
        );
        let ck = Checkpoint::from_model(&gpt, None);
        let w = Weights::new(&ck);
        // Two sequences of 16 input tokens each (SOS first).
        let ids: Vec<usize> = (0..32)
            .map(|i| {
                if i % 16 == 0 {
                    16
                } else {
                    rng.gen_range(0..16)
                }
            })
            .collect();
        let z = gpt.forward::<NoneTape>(
            &ids,
            2,
            true,
            None,
            Capture::default(),
            &mut Captures::default(),
        );
        let full = gpt.logits(z).as_vec();
        let mut state = KvState::new(&config, 2);
        let mut worst = 0f32;
        for t in 0..16 {
            let logits = step(&w, &mut state, &[ids[t], ids[16 + t]]);
            for s in 0..2 {
                for v in 0..16 {
                    let d = (logits[s * 16 + v] - full[(s * 16 + t) * 16 + v]).abs();
                    worst = worst.max(d);
                }
            }
        }
        assert!(worst < 1e-4, "KV-cached logits differ by {worst}");
    }

    #[test]
    fn full_forward_sampling_matches_the_kv_cache() {
        let config = Config::new(16, 4, 32, 4, 2).unwrap();
        let dev = Cpu::seed_from_u64(0);
        let mut gpt = Gpt::<f32, Cpu>::init(&dev, config, 5);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        gpt.lm_head = dev.tensor_from_vec(
            (0..16 * 32).map(|_| rng.gen_range(-1.0..1.0)).collect(),
            (16, 32),
        );
        let w = Weights::new(&Checkpoint::from_model(&gpt, None));
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
    let w = Weights::new(ck);
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
