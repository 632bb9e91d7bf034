//! The float iGPT on dfdx: parameters, initialisation and the forward pass.
//!
//! The math is exactly the original iGPT's (and HuggingFace ImageGPT's, see
//! `tests/fixtures/hf-imagegpt/README.md`): RMS norm with a gain and no mean subtraction
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

use super::params::{GptParams, Init};
use dfdx::prelude::*;
use igpt_core::Config;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// RMS norm epsilon (inside the square root) and quick_gelu's sigmoid slope: igpt-core's
/// constants, the one definition for every numeric regime.
pub use igpt_core::model::{NORM_EPS, QUICK_GELU};
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

/// The whole model: its shape and its parameters as dfdx tensors.
#[derive(Clone, Debug)]
pub struct Gpt<E: Dtype, D: Storage<E>> {
    /// Its shape.
    pub config: Config,
    /// Every tensor (see [`GptParams`] for shapes and layouts).
    pub params: GptParams<Param<E, D>>,
    /// Use the device's fused kernels where it has them (CPU f32); false runs the plain
    /// dfdx compositions (the reference twins). True by default.
    pub fused: bool,
}

/// Whether positions see only the past (AR, next-pixel prediction) or everything (BERT).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
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

impl<E: Float, D: Device<E>> Gpt<E, D> {
    /// A model of `config` with these parameters; their shapes are checked.
    pub fn new(config: Config, params: GptParams<Param<E, D>>) -> Result<Gpt<E, D>, String> {
        if params.blocks.len() != config.layers {
            return Err(format!(
                "{} blocks for a config of {} layers",
                params.blocks.len(),
                config.layers
            ));
        }
        let classes = params.score.as_ref().map_or(0, |s| s.shape().0);
        for (name, p) in params.iter() {
            let want = name.shape(&config, classes);
            if *p.shape() != want {
                return Err(format!(
                    "{name} has shape {:?}, expected {want:?}",
                    p.shape()
                ));
            }
        }
        Ok(Gpt {
            config,
            params,
            fused: true,
        })
    }

    /// A model from values in each parameter's layout (row-major `(rows, cols)`).
    pub fn from_values(
        dev: &D,
        config: Config,
        values: &GptParams<Vec<E>>,
    ) -> Result<Gpt<E, D>, String> {
        let classes = values
            .score
            .as_ref()
            .map_or(0, |s| s.len() / config.width.max(1));
        let params = values.try_map(|name, v| {
            let (r, c) = name.shape(&config, classes);
            if v.len() != r * c {
                return Err(format!("{name} has {} values, expected {r} x {c}", v.len()));
            }
            Ok(dev.tensor_from_vec(v.clone(), (r, c)))
        })?;
        Gpt::new(config, params)
    }

    /// A freshly initialised model, as the paper's code ([`super::ParamName::init`]): the same
    /// seed gives the same weights on any device. With `classes`, a zero class head too.
    pub fn init(dev: &D, config: Config, classes: Option<usize>, seed: u64) -> Gpt<E, D> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let params = GptParams::build(config.layers, classes.is_some(), |name| {
            let (r, c) = name.shape(&config, classes.unwrap_or(0));
            let values = match name.init(&config) {
                Init::Const(v) => vec![cst::<E>(v); r * c],
                Init::Normal(std) => {
                    // Every std of ParamName::init is finite and positive.
                    let normal = Normal::new(0.0, std)
                        .unwrap_or_else(|_| Normal::new(0.0, 1.0).expect("N(0, 1)"));
                    (0..r * c)
                        .map(|_| cst::<E>(normal.sample(&mut rng)))
                        .collect()
                }
            };
            dev.tensor_from_vec(values, (r, c))
        });
        Gpt {
            config,
            params,
            fused: true,
        }
    }

    /// The parameters' values, row-major, in their layouts.
    pub fn values(&self) -> GptParams<Vec<E>> {
        self.params.map(|_, p| p.as_vec())
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
        let dev = self.params.wte.device().clone();
        let p = &self.params;
        let c = &self.config;
        let (b, t, d) = (batch, ids.len() / batch.max(1), c.width);
        assert_eq!(b * t, ids.len(), "ids are not B x T");
        assert!(t <= c.seq_len(), "sequence longer than the position table");
        let shape = (b, t, d);
        let f = self.fused;

        // h = wte[ids] + wpe[0..T]                                         (B, T, C)
        let idx: Tensor<(usize, usize), usize, D> = dev.tensor_from_vec(ids.to_vec(), (b, t));
        let mut x: Act<E, D, T> = p.wte.retaped::<T>().gather(idx);
        if let Some(keep) = keep {
            let m: Tensor<(usize, usize), E, D> = dev.tensor_from_vec(keep.to_vec(), (b, t));
            x = x * m.broadcast_like::<_, Axis<2>>(&shape);
        }
        let pos = if t == p.wpe.shape().0 {
            p.wpe.clone()
        } else {
            p.wpe.clone().slice((0..t, ..))
        };
        x = x + pos.broadcast_like::<_, Axis<0>>(&shape);

        for blk in &p.blocks {
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
        let z = D::rmsnorm(x, &p.ln_f, f);
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
        D::linear(z, &self.params.lm_head, true, self.fused)
    }
}

/// `x / sqrt(mean_C(x²) + eps) · g` per position.
pub fn rmsnorm<E: Float, D: Device<E>, T: Tape<E, D>>(
    x: Act<E, D, T>,
    g: &Param<E, D>,
) -> Act<E, D, T> {
    let shape = *x.shape();
    let inv = (x.retaped::<T>().square().mean::<_, Axis<2>>() + cst::<E>(f64::from(NORM_EPS)))
        .sqrt()
        .recip();
    let gain = g.clone().reshape_like(&(shape.2,));
    x * inv.broadcast_like::<_, Axis<2>>(&shape) * gain.broadcast_like::<_, Axes2<0, 1>>(&shape)
}

/// `x · σ(1.702·x)`.
pub fn quick_gelu<E: Float, D: Device<E>, T: Tape<E, D>>(x: Act<E, D, T>) -> Act<E, D, T> {
    let s = (x.retaped::<T>() * cst::<E>(f64::from(QUICK_GELU))).sigmoid();
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
    /// `Σ g²` over the gradient of `p` (for the global-norm clip).
    fn grad_sq_sum(p: &Param<E, Self>, grads: &mut Gradients<E, Self>, fused: bool) -> f64 {
        let _ = fused;
        value(grads.get(p).square().sum::<(), _>())
    }
    /// One AdamW update of `p` and its moments `m`, `v` from its gradient (the numbers
    /// in `s`); the reference twin in dfdx tensor ops, on any device.
    fn adamw(
        p: &mut Param<E, Self>,
        m: &mut Param<E, Self>,
        v: &mut Param<E, Self>,
        grads: &mut Gradients<E, Self>,
        s: AdamStep,
        fused: bool,
    ) {
        let _ = fused;
        adamw_reference(p, m, v, grads, s)
    }
}

/// The numbers of one AdamW update of one tensor: `m = β1·m + (1-β1)·g'`,
/// `v = β2·v + (1-β2)·g'²` with `g' = scale·g`, then
/// `p = p·(1 - lr·weight_decay) - lr·(m/bc1) / (sqrt(v/bc2) + eps)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Learning rate of this tensor.
    pub lr: f64,
    /// Decoupled weight decay of this tensor (0 where it does not apply).
    pub weight_decay: f64,
    /// Bias corrections `1 - β1^t`, `1 - β2^t`.
    pub bias_correction: (f64, f64),
    /// Gradient scale of the global-norm clip.
    pub scale: f64,
}

/// The value of a 0-d tensor as f64.
pub fn value<E: Float, D: Device<E>, T>(t: Tensor<(), E, D, T>) -> f64 {
    t.as_vec()
        .first()
        .and_then(|x| x.to_f64())
        .unwrap_or(f64::NAN)
}

/// AdamW on one tensor in dfdx ops: the reference twin of the fused CPU update.
pub fn adamw_reference<E: Float, D: Device<E>>(
    p: &mut Param<E, D>,
    m: &mut Param<E, D>,
    v: &mut Param<E, D>,
    grads: &Gradients<E, D>,
    s: AdamStep,
) {
    let g = grads.get(p) * cst::<E>(s.scale);
    let m_new = m.clone() * cst::<E>(s.beta1) + g.clone() * cst::<E>(1.0 - s.beta1);
    let v_new = v.clone() * cst::<E>(s.beta2) + g.square() * cst::<E>(1.0 - s.beta2);
    let (bc1, bc2) = s.bias_correction;
    let step = (m_new.clone() * cst::<E>(1.0 / bc1))
        / ((v_new.clone() * cst::<E>(1.0 / bc2)).sqrt() + cst::<E>(s.eps));
    let mut new = p.clone();
    if s.weight_decay > 0.0 {
        new = new * cst::<E>(1.0 - s.lr * s.weight_decay);
    }
    *p = new - step * cst::<E>(s.lr);
    *m = m_new;
    *v = v_new;
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
    fn grad_sq_sum(p: &Param<f32, Self>, grads: &mut Gradients<f32, Self>, fused: bool) -> f64 {
        if !fused {
            return value(grads.get(p).square().sum::<(), _>());
        }
        // Straight from the gradient buffer.
        match grads.get_or_alloc_mut(p) {
            Ok(g) => g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>(),
            Err(_) => f64::NAN,
        }
    }
    fn adamw(
        p: &mut Param<f32, Self>,
        m: &mut Param<f32, Self>,
        v: &mut Param<f32, Self>,
        grads: &mut Gradients<f32, Self>,
        s: AdamStep,
        fused: bool,
    ) {
        if !fused {
            return adamw_reference(p, m, v, grads, s);
        }
        let (mut pv, mut mv, mut vv) = (
            crate::nn::kernels::read(&*p),
            crate::nn::kernels::read(&*m),
            crate::nn::kernels::read(&*v),
        );
        let Ok(g) = grads.get_or_alloc_mut(&*p) else {
            return;
        };
        crate::nn::kernels::adamw_step(
            &mut pv,
            g,
            &mut mv,
            &mut vv,
            (s.beta1 as f32, s.beta2 as f32, s.eps as f32),
            (s.lr as f32, s.weight_decay as f32),
            (
                s.bias_correction.0 as f32,
                s.bias_correction.1 as f32,
                s.scale as f32,
            ),
        );
        p.copy_from(&pv);
        m.copy_from(&mv);
        v.copy_from(&vv);
    }
}
