//! The float iGPT on dfdx: parameters, initialisation and the forward pass.
//!
//! The math is exactly the original iGPT's (and HuggingFace ImageGPT's, see
//! `shared/fixtures/hf-imagegpt/README.md`): RMS norm with a gain and no mean subtraction
//! (eps 1e-5 inside the square root), no biases anywhere, separate q/k/v projections,
//! softmax(q·kᵀ/√hd) with a causal mask (AR) or none (BERT), MLP of width 4·d with
//! quick_gelu `x·σ(1.702x)`, pre-norm residual blocks, a final norm and an untied head of
//! k outputs.
//!
//! Sizes come from [`Config`] at run time: every parameter is a
//! `Tensor<(usize, usize), E, D>` in the project's own [`Gpt`] struct (norm gains are
//! `(1, d)` rows), so no dfdx layer type fixes a size at compile time. The model is
//! generic over the element type (f32 to train; f64 for gradient checks) and over dfdx's
//! device (CPU with fused kernels; CUDA, with the `cuda` feature, through the same code
//! and dfdx's own kernels).
//!
//! Shapes: B batch, T positions, C = d width, H heads, K = C / H head width, V = k
//! palette colours (the head's outputs), V+1 embedding rows (row V is SOS).

use crate::train::AdamW;
use dfdx::prelude::*;
use igpt_core::Config;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// RMS norm epsilon, inside the square root.
pub const NORM_EPS: f64 = 1e-5;
/// quick_gelu's sigmoid slope.
pub const QUICK_GELU: f64 = 1.702;
/// Added to masked attention scores (exp of it is exactly 0 in f32 and f64).
const MASKED: f64 = -1e9;

/// A parameter: every tensor of the model is 2-D, `(rows, cols)`.
pub type Param<E, D> = Tensor<(usize, usize), E, D>;
/// Activations `(B, T, C)`.
pub type Act<E, D, T> = Tensor<(usize, usize, usize), E, D, T>;
/// Attention scores or an additive mask `(B, H, T, T)`.
pub type Scores<E, D> = Tensor<(usize, usize, usize, usize), E, D>;

/// A float element type the model runs in.
pub trait Float: Dtype + num_traits::Float {}
impl Float for f32 {}
impl Float for f64 {}

/// A constant in the model's element type.
pub fn cst<E: Float>(v: f64) -> E {
    <E as num_traits::NumCast>::from(v).unwrap_or_else(E::nan)
}

/// One transformer block's parameters. Projections are stored `[in, out]` (`y = x·W`),
/// like HF's Conv1D layers.
#[derive(Clone, Debug)]
pub struct Block<E: Dtype, D: Storage<E>> {
    /// `(1, C)` gain of the pre-attention norm.
    pub ln_1: Param<E, D>,
    /// `(C, C)` query projection (HF `c_attn` columns `0..C`).
    pub q: Param<E, D>,
    /// `(C, C)` key projection (HF `c_attn` columns `C..2C`).
    pub k: Param<E, D>,
    /// `(C, C)` value projection (HF `c_attn` columns `2C..3C`).
    pub v: Param<E, D>,
    /// `(C, C)` attention output projection.
    pub c_proj: Param<E, D>,
    /// `(1, C)` gain of the pre-MLP norm.
    pub ln_2: Param<E, D>,
    /// `(C, 4C)` MLP up-projection.
    pub c_fc: Param<E, D>,
    /// `(4C, C)` MLP down-projection.
    pub mlp_proj: Param<E, D>,
}

/// The whole model.
#[derive(Clone, Debug)]
pub struct Gpt<E: Dtype, D: Storage<E>> {
    /// Its shape.
    pub config: Config,
    /// `(V + 1, C)` token embedding; row V is SOS.
    pub wte: Param<E, D>,
    /// `(N, C)` position embedding, N = side².
    pub wpe: Param<E, D>,
    /// The blocks.
    pub h: Vec<Block<E, D>>,
    /// `(1, C)` gain of the final norm.
    pub ln_f: Param<E, D>,
    /// `(V, C)` next-token head, stored `[out, in]` like HF's `lm_head` (`y = z·Wᵀ`).
    pub lm_head: Param<E, D>,
    /// Use the device's fused kernels where it has them (CPU f32); false runs the plain
    /// dfdx compositions (the reference twins). True by default.
    pub fused: bool,
}

/// Whether positions see only the past (AR, next-pixel prediction) or everything (BERT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Objective {
    /// Autoregressive: causal mask, loss on every position.
    Ar,
    /// BERT: no mask, 15% of positions masked, loss on the masked positions.
    Bert,
}

/// What a forward pass returns besides the final hidden state.
#[derive(Debug, Clone, Default)]
pub struct Captures<E: Dtype, D: Storage<E>> {
    /// `hidden[l]`, l < L: the residual stream entering block l, `(B, T, C)`;
    /// `hidden[L]`: the final norm's output.
    pub hidden: Vec<Act<E, D, NoneTape>>,
    /// `probe[l]`: mean over positions of block l's first norm output, `(B, C)` (the
    /// paper's linear-probe feature); `probe[L]`: mean of the final norm output.
    pub probe: Vec<Tensor<(usize, usize), E, D>>,
}

/// Which of [`Captures`] to fill.
#[derive(Debug, Clone, Copy, Default)]
pub struct Capture {
    /// Fill `hidden`.
    pub hidden: bool,
    /// Fill `probe`.
    pub probe: bool,
}

impl<E: Dtype, D: Storage<E>> Gpt<E, D> {
    /// Every parameter with its name, in a fixed order (the state-dict order).
    pub fn params(&self) -> Vec<(String, &Param<E, D>)> {
        let mut out = vec![
            ("transformer.wte.weight".to_string(), &self.wte),
            ("transformer.wpe.weight".to_string(), &self.wpe),
        ];
        for (l, b) in self.h.iter().enumerate() {
            let p = |n: &str| format!("transformer.h.{l}.{n}");
            out.push((p("ln_1.weight"), &b.ln_1));
            out.push((p("attn.q.weight"), &b.q));
            out.push((p("attn.k.weight"), &b.k));
            out.push((p("attn.v.weight"), &b.v));
            out.push((p("attn.c_proj.weight"), &b.c_proj));
            out.push((p("ln_2.weight"), &b.ln_2));
            out.push((p("mlp.c_fc.weight"), &b.c_fc));
            out.push((p("mlp.c_proj.weight"), &b.mlp_proj));
        }
        out.push(("transformer.ln_f.weight".to_string(), &self.ln_f));
        out.push(("lm_head.weight".to_string(), &self.lm_head));
        out
    }

    /// Mutable references to the parameters, in the order of [`Gpt::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param<E, D>> {
        let mut out = vec![&mut self.wte, &mut self.wpe];
        for b in self.h.iter_mut() {
            out.extend([
                &mut b.ln_1,
                &mut b.q,
                &mut b.k,
                &mut b.v,
                &mut b.c_proj,
                &mut b.ln_2,
                &mut b.c_fc,
                &mut b.mlp_proj,
            ]);
        }
        out.push(&mut self.ln_f);
        out.push(&mut self.lm_head);
        out
    }

    /// The expected `(rows, cols)` of each parameter of a config, in [`Gpt::params`] order.
    pub fn param_shapes(c: &Config) -> Vec<(String, (usize, usize))> {
        let d = c.width;
        let mut out = vec![
            ("transformer.wte.weight".to_string(), (c.embed_rows(), d)),
            ("transformer.wpe.weight".to_string(), (c.seq_len(), d)),
        ];
        for l in 0..c.layers {
            let p = |n: &str| format!("transformer.h.{l}.{n}");
            out.push((p("ln_1.weight"), (1, d)));
            out.push((p("attn.q.weight"), (d, d)));
            out.push((p("attn.k.weight"), (d, d)));
            out.push((p("attn.v.weight"), (d, d)));
            out.push((p("attn.c_proj.weight"), (d, d)));
            out.push((p("ln_2.weight"), (1, d)));
            out.push((p("mlp.c_fc.weight"), (d, 4 * d)));
            out.push((p("mlp.c_proj.weight"), (4 * d, d)));
        }
        out.push(("transformer.ln_f.weight".to_string(), (1, d)));
        out.push(("lm_head.weight".to_string(), (c.vocab, d)));
        out
    }

    /// True for the parameters that weight decay applies to: the block projections and
    /// the head (not norm gains, not embeddings).
    pub fn decays(name: &str) -> bool {
        !(name.contains("ln_") || name.contains("wte") || name.contains("wpe"))
    }
}

impl<E: Float, D: Device<E>> Gpt<E, D> {
    /// Builds a model from `(name, rows, cols, values)` in [`Gpt::params`] order.
    pub fn from_values(dev: &D, config: Config, mut values: Vec<Vec<E>>) -> Gpt<E, D> {
        let shapes = Self::param_shapes(&config);
        assert_eq!(values.len(), shapes.len(), "parameter count");
        let mut tensors: Vec<Param<E, D>> = shapes
            .iter()
            .zip(values.drain(..))
            .map(|((_, s), v)| {
                assert_eq!(v.len(), s.0 * s.1);
                dev.tensor_from_vec(v, *s)
            })
            .collect::<Vec<_>>();
        let mut it = tensors.drain(..);
        let mut next = || it.next().expect("shape list matches");
        let wte = next();
        let wpe = next();
        let h = (0..config.layers)
            .map(|_| Block {
                ln_1: next(),
                q: next(),
                k: next(),
                v: next(),
                c_proj: next(),
                ln_2: next(),
                c_fc: next(),
                mlp_proj: next(),
            })
            .collect();
        let ln_f = next();
        let lm_head = next();
        Gpt {
            config,
            wte,
            wpe,
            h,
            ln_f,
            lm_head,
            fused: true,
        }
    }

    /// A freshly initialised model, as the paper's code: q/k/v N(0, 1/d), attention
    /// output N(0, 1/(d·L)), MLP N(0, 0.02²), positions N(0, 0.01²), tokens N(0, 0.02²),
    /// head zero, gains one. The same seed gives the same weights on any device.
    pub fn init(dev: &D, config: Config, seed: u64) -> Gpt<E, D> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = config.width as f64;
        let values = Self::param_shapes(&config)
            .into_iter()
            .map(|(name, (r, c))| {
                let std = if name.contains("ln_") {
                    return vec![cst::<E>(1.0); r * c];
                } else if name == "lm_head.weight" {
                    return vec![cst::<E>(0.0); r * c];
                } else if name.contains("attn.q")
                    || name.contains("attn.k")
                    || name.contains("attn.v")
                {
                    1.0 / d.sqrt()
                } else if name.contains("attn.c_proj") {
                    1.0 / (d * config.layers as f64).sqrt()
                } else if name.contains("mlp.") {
                    0.02
                } else if name.contains("wpe") {
                    0.01
                } else {
                    0.02
                };
                let normal = Normal::new(0.0, std).expect("finite std");
                (0..r * c)
                    .map(|_| cst::<E>(normal.sample(&mut rng)))
                    .collect()
            })
            .collect();
        Self::from_values(dev, config, values)
    }
}

impl<E: Float, D: Kernels<E>> Gpt<E, D> {
    /// The final-norm output `(B, T, C)` for `ids` (`B·T` token ids, row-major, each
    /// `<= V`), with gradients tracked when `T` is an `OwnedTape`.
    ///
    /// - `causal`: the AR mask (position t attends to u <= t); false for BERT.
    /// - `keep`: BERT's input mask, `B·T` values, 1 to keep a token's embedding, 0 to
    ///   zero it (the position embedding stays).
    /// - `capture`: which intermediate results to copy out into `captures`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward<T: Tape<E, D>>(
        &self,
        ids: &[usize],
        batch: usize,
        causal: bool,
        keep: Option<&[E]>,
        capture: Capture,
        captures: &mut Captures<E, D>,
    ) -> Act<E, D, T> {
        let dev = self.wte.device().clone();
        let c = &self.config;
        let (b, t, d) = (batch, ids.len() / batch.max(1), c.width);
        assert_eq!(b * t, ids.len(), "ids are not B x T");
        assert!(t <= c.seq_len(), "sequence longer than the position table");
        let shape = (b, t, d);
        let f = self.fused;

        // h = wte[ids] + wpe[0..T]                                         (B, T, C)
        let idx: Tensor<(usize, usize), usize, D> = dev.tensor_from_vec(ids.to_vec(), (b, t));
        let mut x: Act<E, D, T> = self.wte.retaped::<T>().gather(idx);
        if let Some(keep) = keep {
            let m: Tensor<(usize, usize), E, D> = dev.tensor_from_vec(keep.to_vec(), (b, t));
            x = x * m.broadcast_like::<_, Axis<2>>(&shape);
        }
        let pos = if t == self.wpe.shape().0 {
            self.wpe.clone()
        } else {
            self.wpe.clone().slice((0..t, ..))
        };
        x = x + pos.broadcast_like::<_, Axis<0>>(&shape);

        for blk in &self.h {
            if capture.hidden {
                captures.hidden.push(x.retaped::<NoneTape>());
            }
            // Attention: x = x + attn(rmsnorm(x)) · c_proj
            let residual = x.retaped::<T>();
            let a = D::rmsnorm(x, &blk.ln_1, f);
            if capture.probe {
                captures
                    .probe
                    .push(a.retaped::<NoneTape>().mean::<_, Axis<1>>());
            }
            let att = D::self_attention(a, &blk.q, &blk.k, &blk.v, c.heads, causal, f);
            x = residual + D::linear(att, &blk.c_proj, false, f);
            // MLP: x = x + quick_gelu(rmsnorm(x) · c_fc) · mlp_proj
            let residual = x.retaped::<T>();
            let m = D::rmsnorm(x, &blk.ln_2, f);
            x = residual + D::mlp(m, &blk.c_fc, &blk.mlp_proj, f);
        }
        let z = D::rmsnorm(x, &self.ln_f, f);
        if capture.hidden {
            captures.hidden.push(z.retaped::<NoneTape>());
        }
        if capture.probe {
            captures
                .probe
                .push(z.retaped::<NoneTape>().mean::<_, Axis<1>>());
        }
        z
    }

    /// Next-token logits `(B, T, V)` from the final hidden state: `z · lm_headᵀ`.
    pub fn logits<T: Tape<E, D>>(&self, z: Act<E, D, T>) -> Act<E, D, T> {
        D::linear(z, &self.lm_head, true, self.fused)
    }
}

/// `x / sqrt(mean_C(x²) + eps) · g` per position.
pub fn rmsnorm<E: Float, D: Device<E>, T: Tape<E, D>>(
    x: Act<E, D, T>,
    g: &Param<E, D>,
) -> Act<E, D, T> {
    let shape = *x.shape();
    let inv = (x.retaped::<T>().square().mean::<_, Axis<2>>() + cst::<E>(NORM_EPS))
        .sqrt()
        .recip();
    let gain = g.clone().reshape_like(&(shape.2,));
    x * inv.broadcast_like::<_, Axis<2>>(&shape) * gain.broadcast_like::<_, Axes2<0, 1>>(&shape)
}

/// `x · σ(1.702·x)`.
pub fn quick_gelu<E: Float, D: Device<E>, T: Tape<E, D>>(x: Act<E, D, T>) -> Act<E, D, T> {
    let s = (x.retaped::<T>() * cst::<E>(QUICK_GELU)).sigmoid();
    x * s
}

/// Multi-head attention: q, k, v `(B, T, C)` (head j owns columns `j·K..(j+1)·K`) to
/// the concatenated head outputs `(B, T, C)` before the output projection.
pub fn attention<E: Float, D: Device<E>, T: Tape<E, D>>(
    q: Act<E, D, T>,
    k: Act<E, D, T>,
    v: Act<E, D, T>,
    heads: usize,
    causal: bool,
) -> Act<E, D, T> {
    let (b, t, d) = *q.shape();
    let hd = d / heads;
    let split = (b, t, heads, hd);
    // (B, T, C) -> (B, H, T, K) for q and v, (B, H, K, T) for k.
    let q = q.reshape_like(&split).permute::<_, Axes4<0, 2, 1, 3>>();
    let k = k.reshape_like(&split).permute::<_, Axes4<0, 2, 3, 1>>();
    let v = v.reshape_like(&split).permute::<_, Axes4<0, 2, 1, 3>>();
    let mut s = q.matmul(k) * cst::<E>(1.0 / (hd as f64).sqrt()); // (B, H, T, T)
    if causal {
        let dev = s.device().clone();
        let mask: Scores<E, D> = dev
            .upper_tri_like(&(t, t), cst::<E>(MASKED), 1)
            .broadcast_like::<_, Axes2<0, 1>>(&(b, heads, t, t));
        s = s + mask;
    }
    let o = s.softmax::<Axis<3>>().matmul(v); // (B, H, T, K)
    o.permute::<_, Axes4<0, 2, 1, 3>>().reshape_like(&(b, t, d))
}

/// The building blocks a device runs the model with. The default methods are the plain
/// dfdx compositions above (the reference twins, on any device); CPU f32 overrides them
/// with the fused kernels of [`crate::nn::kernels`] when `fused` is true.
pub trait Kernels<E: Float>: Device<E> {
    /// RMS norm.
    fn rmsnorm<T: Tape<E, Self>>(
        x: Act<E, Self, T>,
        g: &Param<E, Self>,
        fused: bool,
    ) -> Act<E, Self, T> {
        let _ = fused;
        rmsnorm(x, g)
    }
    /// `x · W` (`W` stored `[in, out]`), or `x · Wᵀ` when `transposed` (`[out, in]`).
    fn linear<T: Tape<E, Self>>(
        x: Act<E, Self, T>,
        w: &Param<E, Self>,
        transposed: bool,
        fused: bool,
    ) -> Act<E, Self, T> {
        let _ = fused;
        linear(x, w, transposed)
    }
    /// The MLP: `quick_gelu(m · W_fc) · W_proj`.
    fn mlp<T: Tape<E, Self>>(
        m: Act<E, Self, T>,
        w_fc: &Param<E, Self>,
        w_proj: &Param<E, Self>,
        fused: bool,
    ) -> Act<E, Self, T> {
        let _ = fused;
        mlp(m, w_fc, w_proj)
    }
    /// Self-attention: the q, k, v projections of `a` and multi-head attention, before
    /// the output projection.
    #[allow(clippy::too_many_arguments)]
    fn self_attention<T: Tape<E, Self>>(
        a: Act<E, Self, T>,
        wq: &Param<E, Self>,
        wk: &Param<E, Self>,
        wv: &Param<E, Self>,
        heads: usize,
        causal: bool,
        fused: bool,
    ) -> Act<E, Self, T> {
        let _ = fused;
        self_attention(a, wq, wk, wv, heads, causal)
    }
    /// `-Σ weight · log softmax(z · headᵀ)[target]` for `z (B, T, C)`, head `(V, C)`.
    fn head_loss<T: Tape<E, Self>>(
        z: Act<E, Self, T>,
        head: &Param<E, Self>,
        target: &[usize],
        weight: &[f32],
        fused: bool,
    ) -> Tensor<(), E, Self, T> {
        let _ = fused;
        cross_entropy(linear(z, head, true), target, weight)
    }
    /// One AdamW step (see [`crate::train::AdamW::update`]).
    fn adamw(
        opt: &mut AdamW<E, Self>,
        gpt: &mut Gpt<E, Self>,
        grads: &mut Gradients<E, Self>,
        lr: f64,
    ) -> f64 {
        opt.update_reference(gpt, grads, lr)
    }
}

/// The reference weighted cross-entropy: log_softmax, select the targets, weigh, sum.
pub fn cross_entropy<E: Float, D: Device<E>, T: Tape<E, D>>(
    logits: Act<E, D, T>,
    target: &[usize],
    weight: &[f32],
) -> Tensor<(), E, D, T> {
    let (b, t, _) = *logits.shape();
    let dev = logits.device().clone();
    let target: Tensor<(usize, usize), usize, D> = dev.tensor_from_vec(target.to_vec(), (b, t));
    let w: Tensor<(usize, usize), E, D> =
        dev.tensor_from_vec(weight.iter().map(|&x| cst::<E>(x as f64)).collect(), (b, t));
    (logits.log_softmax::<Axis<2>>().select(target) * w)
        .sum()
        .negate()
}

/// The reference MLP: `quick_gelu(m · W_fc) · W_proj`.
pub fn mlp<E: Float, D: Device<E>, T: Tape<E, D>>(
    m: Act<E, D, T>,
    w_fc: &Param<E, D>,
    w_proj: &Param<E, D>,
) -> Act<E, D, T> {
    linear(quick_gelu(linear(m, w_fc, false)), w_proj, false)
}

/// The reference self-attention: q, k, v projections of `a`, then [`attention`].
pub fn self_attention<E: Float, D: Device<E>, T: Tape<E, D>>(
    a: Act<E, D, T>,
    wq: &Param<E, D>,
    wk: &Param<E, D>,
    wv: &Param<E, D>,
    heads: usize,
    causal: bool,
) -> Act<E, D, T> {
    let q = linear(a.retaped::<T>(), wq, false);
    let k = linear(a.retaped::<T>(), wk, false);
    let v = linear(a, wv, false);
    attention(q, k, v, heads, causal)
}

/// The reference linear layer: dfdx's matmul.
pub fn linear<E: Float, D: Device<E>, T: Tape<E, D>>(
    x: Act<E, D, T>,
    w: &Param<E, D>,
    transposed: bool,
) -> Act<E, D, T> {
    if transposed {
        x.matmul(w.clone().permute::<_, Axes2<1, 0>>())
    } else {
        x.matmul(w.clone())
    }
}

impl Kernels<f64> for Cpu {}

/// CUDA runs the plain dfdx compositions (the trait's default methods): dfdx 0.13 keeps a
/// CUDA tensor's device memory and its cudarc device crate-private, so fused kernels
/// cannot be registered on its tape the way the CPU ones are.
#[cfg(feature = "cuda")]
impl Kernels<f32> for Cuda {}

impl Kernels<f32> for Cpu {
    fn rmsnorm<T: Tape<f32, Self>>(
        x: Act<f32, Self, T>,
        g: &Param<f32, Self>,
        fused: bool,
    ) -> Act<f32, Self, T> {
        if fused {
            crate::nn::kernels::rmsnorm(x, g)
        } else {
            rmsnorm(x, g)
        }
    }
    fn linear<T: Tape<f32, Self>>(
        x: Act<f32, Self, T>,
        w: &Param<f32, Self>,
        transposed: bool,
        fused: bool,
    ) -> Act<f32, Self, T> {
        if fused {
            crate::nn::kernels::linear(x, w, transposed)
        } else {
            linear(x, w, transposed)
        }
    }
    fn mlp<T: Tape<f32, Self>>(
        m: Act<f32, Self, T>,
        w_fc: &Param<f32, Self>,
        w_proj: &Param<f32, Self>,
        fused: bool,
    ) -> Act<f32, Self, T> {
        if fused {
            crate::nn::kernels::mlp(m, w_fc, w_proj)
        } else {
            mlp(m, w_fc, w_proj)
        }
    }
    fn self_attention<T: Tape<f32, Self>>(
        a: Act<f32, Self, T>,
        wq: &Param<f32, Self>,
        wk: &Param<f32, Self>,
        wv: &Param<f32, Self>,
        heads: usize,
        causal: bool,
        fused: bool,
    ) -> Act<f32, Self, T> {
        if fused {
            crate::nn::kernels::self_attention(a, wq, wk, wv, heads, causal)
        } else {
            self_attention(a, wq, wk, wv, heads, causal)
        }
    }
    fn head_loss<T: Tape<f32, Self>>(
        z: Act<f32, Self, T>,
        head: &Param<f32, Self>,
        target: &[usize],
        weight: &[f32],
        fused: bool,
    ) -> Tensor<(), f32, Self, T> {
        if fused {
            crate::nn::kernels::head_cross_entropy(z, head, target, weight)
        } else {
            cross_entropy(linear(z, head, true), target, weight)
        }
    }
    fn adamw(
        opt: &mut AdamW<f32, Self>,
        gpt: &mut Gpt<f32, Self>,
        grads: &mut Gradients<f32, Self>,
        lr: f64,
    ) -> f64 {
        if !gpt.fused {
            return opt.update_reference(gpt, grads, lr);
        }
        // Global norm straight from the gradient buffers.
        let mut sq = 0f64;
        for (_, p) in gpt.params() {
            let g = grads.get_or_alloc_mut(p).expect("gradient buffer");
            sq += g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
        }
        let norm = sq.sqrt();
        let scale = opt.clip_scale(norm) as f32;
        let (bc1, bc2) = opt.bias_corrections();
        opt.step += 1;
        let c = opt.cfg;
        let names: Vec<String> = gpt.params().into_iter().map(|(n, _)| n).collect();
        for (i, p) in gpt.params_mut().into_iter().enumerate() {
            let wd = if Gpt::<f32, Cpu>::decays(&names[i]) {
                c.weight_decay
            } else {
                0.0
            };
            let g = grads.get_or_alloc_mut(&*p).expect("gradient buffer");
            let (mut pv, mut mv, mut vv) = (
                crate::nn::kernels::read(&*p),
                crate::nn::kernels::read(&opt.m[i]),
                crate::nn::kernels::read(&opt.v[i]),
            );
            crate::nn::kernels::adamw_step(
                &mut pv,
                g,
                &mut mv,
                &mut vv,
                (c.beta1 as f32, c.beta2 as f32, c.eps as f32),
                (lr as f32, wd as f32),
                (bc1 as f32, bc2 as f32, scale),
            );
            p.copy_from(&pv);
            opt.m[i].copy_from(&mv);
            opt.v[i].copy_from(&vv);
        }
        norm
    }
}
