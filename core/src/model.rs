//! The int8 iGPT forward pass: probe classification, next-token logits and a KV-cached
//! step, over a model borrowed from its file bytes, in caller-provided memory.
//!
//! The math is the host's (`host/src/model.rs`) with every weight matrix in int8: each
//! activation row is quantized (symmetric, one scale per row; the MLP's hidden rows one
//! scale per group of 32 inputs) right before a matrix product, products are summed in
//! i32 and scaled once per output (and group); norms, attention
//! scores, softmax and quick_gelu stay in f32 (with `libm`). Embeddings are int8 rows.
//!
//! Every entry point has a `_with` twin that takes the [`Ops`] to run the heavy
//! operations with (the host passes its vector kernels; the plain names use
//! [`Portable`]); results are the same bit for bit.
//!
//! Dimension letters: n positions of an image (side²), T positions in a pass, d width,
//! h heads, hd head width, k palette size.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::{self, Header, ProbeRecord, MAX_CLASSES};
use crate::kernels::{groups, rmsnorm, softmax, AttnArgs, Mat, Ops, Portable};
use crate::palette::Palette;
use crate::quant::f32_at;
use crate::state::{KvCache, Scratch, MLP_ROWS};
use crate::weights::{BlockWeights, Weights};

/// RMS norm epsilon (inside the square root), as the host's.
pub const NORM_EPS: f32 = 1e-5;
/// quick_gelu's sigmoid slope.
pub const QUICK_GELU: f32 = 1.702;

/// Every f32 the forward pass reads, checked: matrix scales finite and non-negative,
/// norm gains finite, probe mean/weight/bias finite and standard deviations positive.
fn check_finite(
    w: &Weights<'_>,
    probe: Option<&format::ProbeRecord<'_>>,
    stored: usize,
) -> Result<()> {
    fn all(b: &[u8], ok: impl Fn(f32) -> bool) -> bool {
        (0..b.len() / 4).all(|i| ok(f32_at(b, i)))
    }
    let finite = |x: f32| x.is_finite();
    let scale = |x: f32| x.is_finite() && x >= 0.0;
    let mats = |m: &crate::weights::QMat<'_>| all(m.scales, scale);
    if !mats(&w.wte()?) || !mats(&w.wpe()?) {
        return Err(Error::NonFinite("the embeddings' scales"));
    }
    for l in 0..stored {
        let b = w.block(l)?;
        if !(all(b.ln_1, finite) && all(b.ln_2, finite)) {
            return Err(Error::NonFinite("a block's norm gains"));
        }
        if ![&b.q, &b.k, &b.v, &b.c_proj, &b.c_fc, &b.mlp_proj]
            .into_iter()
            .all(mats)
        {
            return Err(Error::NonFinite("a block's matrix scales"));
        }
    }
    if !all(w.feature_norm(stored)?, finite) {
        return Err(Error::NonFinite("the final norm gain"));
    }
    if let Ok((_, head)) = w.head() {
        if !mats(&head) {
            return Err(Error::NonFinite("the next-token head's scales"));
        }
    }
    if let Some(p) = probe {
        if !(all(p.mean, finite) && all(p.weight, finite) && all(p.bias, finite)) {
            return Err(Error::NonFinite("the probe head"));
        }
        if !all(p.std, |x| x.is_finite() && x > 0.0) {
            return Err(Error::NonFinite("the probe's standard deviations"));
        }
    }
    Ok(())
}

/// A parsed int8 model: a view of the file's bytes.
#[derive(Debug, Clone)]
pub struct Model<'a> {
    config: Config,
    stored: usize,
    causal: bool,
    palette: Palette,
    probe: Option<ProbeRecord<'a>>,
    weights: Weights<'a>,
}

/// The result of a probe classification.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The most probable class.
    pub class: usize,
    /// Class probabilities (softmax of the probe's scores).
    pub probs: heapless::Vec<f32, MAX_CLASSES>,
}

impl<'a> Model<'a> {
    /// Parses and checks a model file (see [`format::read`]); borrows `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Model<'a>> {
        let (h, config) = format::read(bytes)?;
        Self::from_header(&h, config)
    }

    /// [`Model::parse`], then checks the file's shape equals `expected` (what firmware was
    /// built for), naming the first field that differs.
    pub fn parse_expecting(bytes: &'a [u8], expected: &Config) -> Result<Model<'a>> {
        let m = Self::parse(bytes)?;
        let c = m.config;
        for (what, e, g) in [
            ("palette size", expected.vocab, c.vocab),
            ("side", expected.side, c.side),
            ("width", expected.width, c.width),
            ("heads", expected.heads, c.heads),
            ("layers", expected.layers, c.layers),
        ] {
            if e != g {
                return Err(Error::ConfigMismatch {
                    what,
                    expected: e,
                    got: g,
                });
            }
        }
        Ok(m)
    }

    fn from_header(h: &Header<'a>, config: Config) -> Result<Model<'a>> {
        let stored = h.stored_layers as usize;
        let palette = Palette::new(h.palette.channels as usize, h.palette.centres)?;
        let weights = Weights::new(h.tensors, config, stored, stored == config.layers)?;
        check_finite(&weights, h.probe.as_ref(), stored)?;
        Ok(Model {
            config,
            stored,
            causal: h.causal,
            palette,
            probe: h.probe,
            weights,
        })
    }

    /// The trained model's shape.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The palette to tokenize images with.
    pub fn palette(&self) -> &Palette {
        &self.palette
    }

    /// True for an AR model (causal attention), false for BERT.
    pub fn causal(&self) -> bool {
        self.causal
    }

    /// Blocks stored in the file.
    pub fn stored_layers(&self) -> usize {
        self.stored
    }

    /// True when the file has the final norm and next-token head.
    pub fn has_head(&self) -> bool {
        self.stored == self.config.layers
    }

    /// The probe's layer and class count, if the file has a probe.
    pub fn probe(&self) -> Option<(usize, usize)> {
        self.probe
            .as_ref()
            .map(|p| (p.layer as usize, p.classes as usize))
    }

    /// The probe head as stored (f32 arrays as bytes).
    pub fn probe_record(&self) -> Option<&ProbeRecord<'a>> {
        self.probe.as_ref()
    }

    /// The name of probe class `c` (empty when the file has no names).
    pub fn class_name(&self, c: usize) -> &'a str {
        self.probe
            .and_then(|p| p.labels.split('\n').nth(c))
            .unwrap_or("")
    }

    /// The borrowed tensors.
    pub fn weights(&self) -> &Weights<'a> {
        &self.weights
    }

    /// The input id at position `t` for an image: AR models see `[SOS, x0, .., x(n-2)]`,
    /// BERT models the image itself.
    #[inline(always)]
    fn input_id(&self, image: &[u16], t: usize) -> usize {
        if self.causal {
            if t == 0 {
                self.config.sos()
            } else {
                image.get(t - 1).map_or(0, |&x| x as usize)
            }
        } else {
            image.get(t).map_or(0, |&x| x as usize)
        }
    }

    fn check_image(&self, image: &[u16]) -> Result<()> {
        let n = self.config.seq_len();
        if image.len() != n {
            return Err(Error::LengthMismatch {
                what: "image tokens",
                expected: n,
                got: image.len(),
            });
        }
        if let Some(&t) = image.iter().find(|&&t| t as usize >= self.config.vocab) {
            return Err(Error::BadToken(t));
        }
        Ok(())
    }

    /// `x[t] = wte[id] + wpe[pos]` for one row.
    #[inline(always)]
    fn embed(&self, x: &mut [f32], id: usize, pos: usize, tmp: &mut [f32]) -> Result<()> {
        self.weights.wte()?.dequant_row(id, x);
        self.weights.wpe()?.dequant_row(pos, tmp);
        for (a, b) in x.iter_mut().zip(tmp.iter()) {
            *a += b;
        }
        Ok(())
    }

    /// Mean-pooled features of `layer` (`0..=L`, see [`format::ProbeRecord::layer`]) for
    /// an image of `n` palette tokens: only blocks `0..layer` run. `out`: `d` values.
    pub fn features(
        &self,
        image: &[u16],
        layer: usize,
        s: &mut Scratch<'_>,
        out: &mut [f32],
    ) -> Result<()> {
        self.features_with(&mut Portable, image, layer, s, out)
    }

    /// [`Model::features`] with the heavy operations run by `ops`.
    #[inline(always)]
    pub fn features_with<O: Ops>(
        &self,
        ops: &mut O,
        image: &[u16],
        layer: usize,
        s: &mut Scratch<'_>,
        out: &mut [f32],
    ) -> Result<()> {
        s.check(&self.config)?;
        self.features_in(ops, image, layer, s.f, s.q, out)
    }

    #[inline(always)]
    fn features_in<O: Ops>(
        &self,
        ops: &mut O,
        image: &[u16],
        layer: usize,
        f: &mut [f32],
        q: &mut [i8],
        out: &mut [f32],
    ) -> Result<()> {
        self.check_image(image)?;
        if layer > self.stored {
            return Err(Error::BadLayer {
                layer,
                max: self.stored,
            });
        }
        let d = self.config.width;
        if out.len() != d {
            return Err(Error::LengthMismatch {
                what: "feature buffer",
                expected: d,
                got: out.len(),
            });
        }
        let n = self.config.seq_len();
        let mut w = Work::split(f, q, &self.config)?;
        self.embed_image(image, &mut w)?;
        self.run_blocks(ops, &mut w, layer)?;
        let g = self.weights.feature_norm(layer)?;
        out.fill(0.0);
        let a = w.rest.a.get_mut(..d).ok_or(OOB)?;
        for xr in w.x.chunks_exact(d) {
            rmsnorm(a, xr, g);
            for (o, v) in out.iter_mut().zip(a.iter()) {
                *o += v;
            }
        }
        let inv = 1.0 / n as f32;
        out.iter_mut().for_each(|o| *o *= inv);
        Ok(())
    }

    /// Blocks `0..upto` over the whole sequence in `w.x`.
    #[inline(always)]
    fn run_blocks<O: Ops>(&self, ops: &mut O, w: &mut Work<'_>, upto: usize) -> Result<()> {
        for l in 0..upto {
            let b = self.weights.block(l)?;
            let kv = (&mut *w.k, &mut *w.v);
            block(
                ops,
                l,
                &self.config,
                &b,
                w.x,
                0,
                kv,
                self.causal,
                &mut w.rest,
            )?;
        }
        Ok(())
    }

    /// Embeds the whole input sequence of an image into `w.x`.
    #[inline(always)]
    fn embed_image(&self, image: &[u16], w: &mut Work<'_>) -> Result<()> {
        let d = self.config.width;
        let tmp = w.rest.a.get_mut(..d).ok_or(OOB)?;
        for (t, x) in w.x.chunks_exact_mut(d).enumerate() {
            self.embed(x, self.input_id(image, t), t, tmp)?;
        }
        Ok(())
    }

    /// Probe classification of an image of `n` palette tokens: features of the probe's
    /// layer, standardised, then the linear head and a softmax.
    #[inline(always)]
    pub fn classify(&self, image: &[u16], s: &mut Scratch<'_>) -> Result<Prediction> {
        self.classify_with(&mut Portable, image, s)
    }

    /// [`Model::classify`] with the heavy operations run by `ops`.
    #[inline(always)]
    pub fn classify_with<O: Ops>(
        &self,
        ops: &mut O,
        image: &[u16],
        s: &mut Scratch<'_>,
    ) -> Result<Prediction> {
        let p = self.probe.ok_or(Error::NoProbe)?;
        s.check(&self.config)?;
        let d = self.config.width;
        // The features take the last d floats of the scratch (counted in its size); the
        // forward's buffers are carved from the front.
        let total = s.f.len();
        let (front, feat) = s.f.split_at_mut(total - d);
        self.features_in(ops, image, p.layer as usize, front, s.q, feat)?;
        let classes = p.classes as usize;
        let mut probs = heapless::Vec::<f32, MAX_CLASSES>::new();
        for c in 0..classes {
            let mut z = f32_at(p.bias, c);
            for (i, &f) in feat.iter().enumerate() {
                let x = (f - f32_at(p.mean, i)) / f32_at(p.std, i);
                z += f32_at(p.weight, c * d + i) * x;
            }
            probs
                .push(z)
                .map_err(|_| Error::Malformed("too many classes"))?;
        }
        let class = argmax(&probs);
        softmax(&mut probs);
        Ok(Prediction { class, probs })
    }

    /// Next-token logits of an image of `n` palette tokens: `out` (n, k), row `t`
    /// predicting token `t` (AR) or scoring it (BERT). Needs a full model.
    #[inline(always)]
    pub fn logits(&self, image: &[u16], s: &mut Scratch<'_>, out: &mut [f32]) -> Result<()> {
        self.logits_with(&mut Portable, image, s, out)
    }

    /// [`Model::logits`] with the heavy operations run by `ops`.
    #[inline(always)]
    pub fn logits_with<O: Ops>(
        &self,
        ops: &mut O,
        image: &[u16],
        s: &mut Scratch<'_>,
        out: &mut [f32],
    ) -> Result<()> {
        self.check_image(image)?;
        let (gain, head) = self.weights.head()?;
        let (n, d, k) = (self.config.seq_len(), self.config.width, self.config.vocab);
        if out.len() != n * k {
            return Err(Error::LengthMismatch {
                what: "logits buffer",
                expected: n * k,
                got: out.len(),
            });
        }
        s.check(&self.config)?;
        let mut w = Work::split(s.f, s.q, &self.config)?;
        self.embed_image(image, &mut w)?;
        self.run_blocks(ops, &mut w, self.config.layers)?;
        head_logits(ops, w.x, gain, &head, d, &mut w.rest, out)
    }

    /// One KV-cached step of an AR model: feeds token `id` (a colour, or SOS at position
    /// 0) at position `cache.len()` and writes the next token's `k` logits into `out`.
    #[inline(always)]
    pub fn step(
        &self,
        id: u16,
        cache: &mut KvCache<'_>,
        s: &mut Scratch<'_>,
        out: &mut [f32],
    ) -> Result<()> {
        self.step_with(&mut Portable, id, cache, s, out)
    }

    /// [`Model::step`] with the heavy operations run by `ops`.
    #[inline(always)]
    pub fn step_with<O: Ops>(
        &self,
        ops: &mut O,
        id: u16,
        cache: &mut KvCache<'_>,
        s: &mut Scratch<'_>,
        out: &mut [f32],
    ) -> Result<()> {
        if !self.causal {
            return Err(Error::NotCausal);
        }
        let (gain, head) = self.weights.head()?;
        let (n, d, k) = (self.config.seq_len(), self.config.width, self.config.vocab);
        if id as usize > self.config.vocab {
            return Err(Error::BadToken(id));
        }
        if out.len() != k {
            return Err(Error::LengthMismatch {
                what: "logits buffer",
                expected: k,
                got: out.len(),
            });
        }
        let pos = cache.len;
        if pos >= n {
            return Err(Error::BufferTooSmall {
                needed: pos + 1,
                got: n,
            });
        }
        let need = crate::state::kv_f32_len(&self.config) / 2;
        if cache.k.len() < need || cache.v.len() < need {
            return Err(Error::BufferTooSmall {
                needed: need * 2,
                got: cache.k.len() + cache.v.len(),
            });
        }
        s.check(&self.config)?;
        let w = Work::split(s.f, s.q, &self.config)?;
        let mut rest = w.rest;
        let x = w.x.get_mut(..d).ok_or(OOB)?;
        let tmp = w.k.get_mut(..d).ok_or(OOB)?;
        self.embed(x, id as usize, pos, tmp)?;
        let layer_len = n * d;
        for l in 0..self.config.layers {
            let b = self.weights.block(l)?;
            let kk = cache
                .k
                .get_mut(l * layer_len..(l + 1) * layer_len)
                .ok_or(OOB)?;
            let vv = cache
                .v
                .get_mut(l * layer_len..(l + 1) * layer_len)
                .ok_or(OOB)?;
            block(ops, l, &self.config, &b, x, pos, (kk, vv), true, &mut rest)?;
        }
        cache.len = pos + 1;
        head_logits(ops, x, gain, &head, d, &mut rest, out)
    }
}

/// An internal slice bound that validated sizes make unreachable.
const OOB: Error = Error::Malformed("internal buffer bound");

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v.get(best).copied().unwrap_or(f32::NEG_INFINITY) {
            best = i;
        }
    }
    best
}

/// The scratch carved into named buffers.
struct Work<'w> {
    /// Residual stream (n, d).
    x: &'w mut [f32],
    /// Keys (n, d) of the current block.
    k: &'w mut [f32],
    /// Values (n, d) of the current block.
    v: &'w mut [f32],
    rest: Rest<'w>,
}

/// Buffers a block uses besides x, k and v.
struct Rest<'w> {
    /// Norm output, then attention output (n, d).
    a: &'w mut [f32],
    /// Queries (n, d).
    q: &'w mut [f32],
    /// Attention's work: scores and one head's transposed keys.
    attn: &'w mut [f32],
    /// Row scales of `aq` (n).
    xs: &'w mut [f32],
    /// MLP hidden rows (MLP_ROWS, 4d).
    hid: &'w mut [f32],
    /// Group scales of `hq` (MLP_ROWS, groups(4d)).
    hs: &'w mut [f32],
    /// Quantized rows of `a` (n, d).
    aq: &'w mut [i8],
    /// Quantized MLP hidden rows (MLP_ROWS, 4d).
    hq: &'w mut [i8],
}

impl<'w> Work<'w> {
    #[inline(always)]
    fn split(f: &'w mut [f32], qb: &'w mut [i8], c: &Config) -> Result<Work<'w>> {
        let (n, d, m) = (c.seq_len(), c.width, c.mlp_width());
        let (x, f) = f.split_at_mut_checked(n * d).ok_or(OOB)?;
        let (a, f) = f.split_at_mut_checked(n * d).ok_or(OOB)?;
        let (q, f) = f.split_at_mut_checked(n * d).ok_or(OOB)?;
        let (k, f) = f.split_at_mut_checked(n * d).ok_or(OOB)?;
        let (v, f) = f.split_at_mut_checked(n * d).ok_or(OOB)?;
        let (attn, f) = f
            .split_at_mut_checked(crate::state::attn_work_len(c))
            .ok_or(OOB)?;
        let (xs, f) = f.split_at_mut_checked(n).ok_or(OOB)?;
        let (hid, f) = f.split_at_mut_checked(MLP_ROWS * m).ok_or(OOB)?;
        let (hs, _) = f.split_at_mut_checked(MLP_ROWS * groups(m)).ok_or(OOB)?;
        let (aq, qb) = qb.split_at_mut_checked(n * d).ok_or(OOB)?;
        let (hq, _) = qb.split_at_mut_checked(MLP_ROWS * m).ok_or(OOB)?;
        Ok(Work {
            x,
            k,
            v,
            rest: Rest {
                a,
                q,
                attn,
                xs,
                hid,
                hs,
                aq,
                hq,
            },
        })
    }
}

/// One transformer block over rows `x` (T, d) at positions `p0..p0+T`: keys and values of
/// these rows are written at their positions in `keys`/`vals` (n, d), and attention reads
/// positions `0..=p` (causal) or `0..T` (bidirectional, then `p0` must be 0).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn block<O: Ops>(
    ops: &mut O,
    layer: usize,
    c: &Config,
    b: &BlockWeights<'_>,
    x: &mut [f32],
    p0: usize,
    (keys, vals): (&mut [f32], &mut [f32]),
    causal: bool,
    r: &mut Rest<'_>,
) -> Result<()> {
    let (d, hd, m) = (c.width, c.head_dim(), c.mlp_width());
    let t_len = x.len() / d;
    let rows = t_len * d;
    let span = p0 + t_len;
    let a = r.a.get_mut(..rows).ok_or(OOB)?;
    let aq = r.aq.get_mut(..rows).ok_or(OOB)?;
    let xs = r.xs.get_mut(..t_len).ok_or(OOB)?;
    let q = r.q.get_mut(..rows).ok_or(OOB)?;
    // rmsnorm(x) · ln_1, quantized per row.
    ops.norm_quant(x, d, b.ln_1, a, aq, xs);
    // q, k, v (T, d); k and v land at their positions.
    ops.matmul(layer, Mat::Q, q, aq, xs, &b.q, false);
    let kr = keys.get_mut(p0 * d..span * d).ok_or(OOB)?;
    ops.matmul(layer, Mat::K, kr, aq, xs, &b.k, false);
    let vr = vals.get_mut(p0 * d..span * d).ok_or(OOB)?;
    ops.matmul(layer, Mat::V, vr, aq, xs, &b.v, false);
    // Attention of every row and head, into a (T, d).
    let args = AttnArgs {
        q,
        keys: keys.get(..span * d).ok_or(OOB)?,
        vals: vals.get(..span * d).ok_or(OOB)?,
        p0,
        causal,
        width: d,
        head_dim: hd,
        scale: 1.0 / libm::sqrtf(hd as f32),
    };
    ops.attention(a, &args, r.attn);
    // x += att · c_proj
    ops.quantize(a, d, aq, xs);
    ops.matmul(layer, Mat::Proj, x, aq, xs, &b.c_proj, true);
    // MLP in groups of MLP_ROWS rows: x += quick_gelu(rmsnorm(x) · c_fc) · mlp_proj
    for xg in x.chunks_mut(MLP_ROWS * d) {
        let g = xg.len() / d;
        let ag = a.get_mut(..g * d).ok_or(OOB)?;
        let aqg = aq.get_mut(..g * d).ok_or(OOB)?;
        let xsg = xs.get_mut(..g).ok_or(OOB)?;
        ops.norm_quant(xg, d, b.ln_2, ag, aqg, xsg);
        let hid = r.hid.get_mut(..g * m).ok_or(OOB)?;
        ops.matmul(layer, Mat::Fc, hid, aqg, xsg, &b.c_fc, false);
        let hq = r.hq.get_mut(..g * m).ok_or(OOB)?;
        let hs = r.hs.get_mut(..g * groups(m)).ok_or(OOB)?;
        ops.gelu_quant(hid, m, hq, hs);
        ops.matmul_grouped(layer, xg, hq, hs, &b.mlp_proj, true);
    }
    Ok(())
}

/// `out (T, k) = quantize(rmsnorm(x) · ln_f) · lm_headᵀ`.
#[inline(always)]
fn head_logits<O: Ops>(
    ops: &mut O,
    x: &[f32],
    gain: &[u8],
    head: &crate::weights::QMat<'_>,
    d: usize,
    r: &mut Rest<'_>,
    out: &mut [f32],
) -> Result<()> {
    let t_len = x.len() / d;
    let a = r.a.get_mut(..t_len * d).ok_or(OOB)?;
    let aq = r.aq.get_mut(..t_len * d).ok_or(OOB)?;
    let xs = r.xs.get_mut(..t_len).ok_or(OOB)?;
    ops.norm_quant(x, d, gain, a, aq, xs);
    ops.matmul(0, Mat::Head, out, aq, xs, head, false);
    Ok(())
}
