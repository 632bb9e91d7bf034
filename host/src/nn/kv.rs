//! The KV-cached f32 forward for sampling: one position at a time for a batch of
//! sequences, each step computing only the new position's projections and attending over
//! the cached keys and values of the earlier positions (nothing of the prefix is
//! recomputed). Built from the same slice kernels as the fused training path
//! ([`gemm`], [`rmsnorm_fwd`], [`quick_gelu_fwd`], [`softmax_row`]), so the f32 math
//! exists once; a test checks its logits against the dfdx model's full forward pass.

use super::kernels::{gemm, quick_gelu_fwd, rmsnorm_fwd, softmax_row};
use super::{Gpt, GptParams, Mat};
use dfdx::prelude::*;
use igpt_core::Config;

/// The weights as plain row-major f32 slices, in their [`GptParams`] layouts.
pub struct Weights {
    config: Config,
    p: GptParams<Vec<f32>>,
}

impl Weights {
    /// From a shape and its parameters' values.
    pub fn new(config: Config, params: &GptParams<Mat>) -> Weights {
        Weights {
            config,
            p: params.map(|_, m| m.data.clone()),
        }
    }

    /// From a dfdx model.
    pub fn from_model<D: Device<f32>>(gpt: &Gpt<f32, D>) -> Weights {
        Weights {
            config: gpt.config,
            p: gpt.values(),
        }
    }

    /// Its shape.
    pub fn config(&self) -> &Config {
        &self.config
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
        let (e, p) = (
            &w.p.wte[tok * d..(tok + 1) * d],
            &w.p.wpe[t * d..(t + 1) * d],
        );
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
    for (l, blk) in w.p.blocks.iter().enumerate() {
        rmsnorm_fwd(&x, &blk.ln_1, &mut a, &mut r);
        gemm(
            b,
            d,
            d,
            &mut q,
            (d, 1),
            false,
            &a,
            (d, 1),
            &blk.q,
            (d, 1),
            1.0,
        );
        // New keys and values go straight into the cache at row t of each sequence.
        for (cache, wi) in [(&mut state.k[l], &blk.k), (&mut state.v[l], &blk.v)] {
            gemm(
                b,
                d,
                d,
                &mut cache[t * d..],
                (n * d, 1),
                false,
                &a,
                (d, 1),
                wi,
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
            &blk.c_proj,
            (d, 1),
            1.0,
        );
        x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
        rmsnorm_fwd(&x, &blk.ln_2, &mut a, &mut r);
        gemm(
            b,
            f,
            d,
            &mut hbuf,
            (f, 1),
            false,
            &a,
            (d, 1),
            &blk.c_fc,
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
            &blk.mlp_proj,
            (d, 1),
            1.0,
        );
        x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
    }
    rmsnorm_fwd(&x, &w.p.ln_f, &mut a, &mut r);
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
        &w.p.lm_head,
        (1, d),
        1.0,
    );
    state.pos += 1;
    logits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Capture, Captures};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn kv_cached_steps_match_the_full_forward_pass() {
        let config = Config::new(16, 4, 32, 4, 2).unwrap();
        let dev = Cpu::seed_from_u64(0);
        let mut gpt = Gpt::<f32, Cpu>::init(&dev, config, None, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        gpt.params.lm_head = dev.tensor_from_vec(
            (0..16 * 32).map(|_| rng.gen_range(-0.3..0.3)).collect(),
            (16, 32),
        );
        let w = Weights::from_model(&gpt);
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
}
