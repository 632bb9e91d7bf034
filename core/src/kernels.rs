//! The int8 forward pass's operations as free functions, outputs first.
//!
//! `matmul_q` is the fast kernel (four weight rows per pass over an input row, so each
//! input row is read once per four outputs); `matmul_q_ref` is its plain twin, and a test
//! checks they agree exactly (both sum in i32, so they must). Everything else has one
//! plain version. Dimension letters: R rows (positions), C inputs, O outputs.
//!
//! [`Ops`] is the hook for faster kernels: the forward pass calls its three heavy
//! operations (the int8 products, the grouped int8 product and attention) through it. Its
//! default methods are this module's portable functions ([`Portable`] uses them as they
//! are); the host implements them with AVX-512 VNNI. An implementation must give the
//! same results bit for bit, so this module fixes every f32 summation order: the int8
//! products sum in i32 (exact), attention scores sum over the head's inputs in order,
//! weighted values over positions in order, and [`sum_f32`] in 16 lanes then a halving
//! tree — orders a 16-lane vector unit follows naturally.

use crate::weights::QMat;

/// The weight matrices the forward pass multiplies by, for [`Ops`] implementations that
/// keep their own (repacked) copy of the weights: a block's six, and the next-token head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mat {
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Attention output projection.
    Proj,
    /// MLP up-projection.
    Fc,
    /// MLP down-projection (the grouped product).
    MlpProj,
    /// Next-token head (layer index 0).
    Head,
}

impl Mat {
    /// A block's matrices in file order.
    pub const BLOCK: [Mat; 6] = [Mat::Q, Mat::K, Mat::V, Mat::Proj, Mat::Fc, Mat::MlpProj];

    /// 0..7, for tables indexed by matrix.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One attention call: queries of the `T` positions `p0..p0+T` against the keys and
/// values of positions `0..p0+T`.
#[derive(Debug, Clone, Copy)]
pub struct AttnArgs<'a> {
    /// Queries `(T, d)`.
    pub q: &'a [f32],
    /// Keys `(p0+T, d)`.
    pub keys: &'a [f32],
    /// Values `(p0+T, d)`.
    pub vals: &'a [f32],
    /// Position of the first query.
    pub p0: usize,
    /// Query `i` sees positions `0..=p0+i` (AR) or all of them (BERT).
    pub causal: bool,
    /// `d`.
    pub width: usize,
    /// `hd = d / heads`.
    pub head_dim: usize,
    /// `1 / sqrt(hd)`.
    pub scale: f32,
}

/// The forward pass's heavy operations. The defaults are this module's portable
/// functions; an implementation (the host's vector kernels) must equal them bit for bit.
pub trait Ops {
    /// Rows of `x` (`cols` each) through [`rmsnorm`] with `gain`, then quantized into
    /// `q` and `s` ([`quantize_rows`](crate::quant::quantize_rows)). `tmp` (as long as `x`) may hold the normed rows.
    #[inline(always)]
    fn norm_quant(
        &mut self,
        x: &[f32],
        cols: usize,
        gain: &[u8],
        tmp: &mut [f32],
        q: &mut [i8],
        s: &mut [f32],
    ) {
        if cols == 0 {
            return;
        }
        for (tr, xr) in tmp.chunks_exact_mut(cols).zip(x.chunks_exact(cols)) {
            rmsnorm(tr, xr, gain);
        }
        crate::quant::quantize_rows(tmp, cols, q, s);
    }

    /// [`quantize_rows`](crate::quant::quantize_rows).
    #[inline(always)]
    fn quantize(&mut self, x: &[f32], cols: usize, q: &mut [i8], s: &mut [f32]) {
        crate::quant::quantize_rows(x, cols, q, s);
    }

    /// [`quick_gelu`] on `h` in place, then [`quantize_groups`](crate::quant::quantize_groups)
    /// of its rows (`cols` each).
    #[inline(always)]
    fn gelu_quant(&mut self, h: &mut [f32], cols: usize, q: &mut [i8], s: &mut [f32]) {
        quick_gelu(h);
        crate::quant::quantize_groups(h, cols, q, s);
    }

    /// [`matmul_q`] by matrix `which` of block `layer`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn matmul(
        &mut self,
        layer: usize,
        which: Mat,
        out: &mut [f32],
        xq: &[i8],
        xs: &[f32],
        w: &QMat<'_>,
        add: bool,
    ) {
        let _ = (layer, which);
        matmul_q(out, xq, xs, w, add);
    }

    /// [`matmul_qg`] by the MLP down-projection of block `layer`.
    #[inline(always)]
    fn matmul_grouped(
        &mut self,
        layer: usize,
        out: &mut [f32],
        xq: &[i8],
        xs: &[f32],
        w: &QMat<'_>,
        add: bool,
    ) {
        let _ = layer;
        matmul_qg(out, xq, xs, w, add);
    }

    /// [`attention`]; `work` holds at least `(p0+T)·(hd+1)` values.
    #[inline(always)]
    fn attention(&mut self, out: &mut [f32], a: &AttnArgs<'_>, work: &mut [f32]) {
        attention(out, a, work);
    }
}

/// The portable kernels of this module.
#[derive(Debug, Clone, Copy, Default)]
pub struct Portable;

impl Ops for Portable {}

/// Attention, written plainly (the reference of every [`Ops::attention`]): for each head
/// and query row `i`, `score_j = (Σ_e q_e · k_je, in order of e) · scale` over the
/// positions `j` it sees, [`softmax`], then `out_e = Σ_j p_j · v_je` in order of `j`.
///
/// `work` (at least `span·(hd+1)` values, `span = p0+T`) holds one row's scores and the
/// head's keys transposed, `kᵀ[e][j]`, so the scores of 16 positions are one loop over
/// contiguous memory that compilers vectorise (the order per score is unchanged).
#[inline(always)]
pub fn attention(out: &mut [f32], a: &AttnArgs<'_>, work: &mut [f32]) {
    let (d, hd) = (a.width, a.head_dim);
    if d == 0 || hd == 0 {
        return;
    }
    let span = a.keys.len() / d;
    let Some((sc, kt)) = work.split_at_mut_checked(span) else {
        return;
    };
    let Some(kt) = kt.get_mut(..span * hd) else {
        return;
    };
    for h in 0..d / hd {
        let cols = h * hd..(h + 1) * hd;
        for (j, kr) in a.keys.chunks_exact(d).enumerate() {
            for (e, &k) in kr.get(cols.clone()).unwrap_or(&[]).iter().enumerate() {
                if let Some(t) = kt.get_mut(e * span + j) {
                    *t = k;
                }
            }
        }
        for (i, (orow, qrow)) in out.chunks_exact_mut(d).zip(a.q.chunks_exact(d)).enumerate() {
            let seen = if a.causal {
                (a.p0 + i + 1).min(span)
            } else {
                span
            };
            let (Some(s), Some(qh), Some(oh)) = (
                sc.get_mut(..seen),
                qrow.get(cols.clone()),
                orow.get_mut(cols.clone()),
            ) else {
                return;
            };
            // 64 positions per pass: four independent 16-lane sums per input `e`, so
            // the loop vectorises and its adds do not wait on each other.
            const SPAN: usize = 4 * SUM_LANES;
            for (jc, sb) in s.chunks_mut(SPAN).enumerate() {
                let mut acc = [0f32; SPAN];
                for (e, &qe) in qh.iter().enumerate() {
                    let at = e * span + jc * SPAN;
                    match kt.get(at..at + SPAN).map(<&[f32; SPAN]>::try_from) {
                        Some(Ok(kr)) => {
                            for (x, &k) in acc.iter_mut().zip(kr) {
                                *x += qe * k;
                            }
                        }
                        _ => {
                            for (x, &k) in acc.iter_mut().zip(kt.get(at..).unwrap_or(&[])) {
                                *x += qe * k;
                            }
                        }
                    }
                }
                for (x, &v) in sb.iter_mut().zip(&acc) {
                    *x = v * a.scale;
                }
            }
            softmax(s);
            oh.fill(0.0);
            for (&p, vr) in s.iter().zip(a.vals.chunks_exact(d)) {
                for (o, &v) in oh.iter_mut().zip(vr.get(cols.clone()).unwrap_or(&[])) {
                    *o += p * v;
                }
            }
        }
    }
}

/// `Σ a_i · b_i` in i32; `b` holds int8 bit patterns.
#[inline(always)]
pub fn dot_i8(a: &[i8], b: &[u8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x as i32 * (y as i8) as i32)
        .sum()
}

/// `out (R, O) [+]= (xq (R, C) · wᵀ) ⊙ xs ⊗ w.scales`: an int8 product summed in i32,
/// scaled once per output. `add`: accumulate into `out` (a residual) instead of writing.
#[inline(always)]
pub fn matmul_q(out: &mut [f32], xq: &[i8], xs: &[f32], w: &QMat<'_>, add: bool) {
    let (o, c) = (w.rows, w.cols);
    if o == 0 || c == 0 {
        return;
    }
    let mut r0 = 0;
    let mut rows = w.data.chunks_exact(c);
    // Four weight rows at a time.
    while r0 + 4 <= o {
        let (Some(w0), Some(w1), Some(w2), Some(w3)) =
            (rows.next(), rows.next(), rows.next(), rows.next())
        else {
            return;
        };
        let s = [
            w.scale(r0),
            w.scale(r0 + 1),
            w.scale(r0 + 2),
            w.scale(r0 + 3),
        ];
        for ((xr, &sx), orow) in xq.chunks_exact(c).zip(xs).zip(out.chunks_exact_mut(o)) {
            let (mut a0, mut a1, mut a2, mut a3) = (0i32, 0i32, 0i32, 0i32);
            for ((((&x, &b0), &b1), &b2), &b3) in xr.iter().zip(w0).zip(w1).zip(w2).zip(w3) {
                let x = x as i32;
                a0 += x * (b0 as i8) as i32;
                a1 += x * (b1 as i8) as i32;
                a2 += x * (b2 as i8) as i32;
                a3 += x * (b3 as i8) as i32;
            }
            if let Some(dst) = orow.get_mut(r0..r0 + 4) {
                for ((d, a), s) in dst.iter_mut().zip([a0, a1, a2, a3]).zip(s) {
                    let v = a as f32 * sx * s;
                    *d = if add { *d + v } else { v };
                }
            }
        }
        r0 += 4;
    }
    for (r, wr) in (r0..o).zip(rows) {
        let s = w.scale(r);
        for ((xr, &sx), orow) in xq.chunks_exact(c).zip(xs).zip(out.chunks_exact_mut(o)) {
            if let Some(d) = orow.get_mut(r) {
                let v = dot_i8(xr, wr) as f32 * sx * s;
                *d = if add { *d + v } else { v };
            }
        }
    }
}

/// The plain twin of [`matmul_q`]: one output at a time.
pub fn matmul_q_ref(out: &mut [f32], xq: &[i8], xs: &[f32], w: &QMat<'_>, add: bool) {
    let (o, c) = (w.rows, w.cols);
    if o == 0 || c == 0 {
        return;
    }
    for ((xr, &sx), orow) in xq.chunks_exact(c).zip(xs).zip(out.chunks_exact_mut(o)) {
        for ((r, d), wr) in orow.iter_mut().enumerate().zip(w.data.chunks_exact(c)) {
            let v = dot_i8(xr, wr) as f32 * sx * w.scale(r);
            *d = if add { *d + v } else { v };
        }
    }
}

/// Inputs per activation scale in [`matmul_qg`] (the MLP's down-projection, whose input
/// rows, after quick_gelu, are too heavy-tailed for one scale per row).
pub const GROUP: usize = 32;

/// Groups of [`GROUP`] inputs in a row of `cols` (the last may be shorter).
pub const fn groups(cols: usize) -> usize {
    cols.div_ceil(GROUP)
}

/// `out (R, O) [+]= Σ_g (Σ_{i∈g} xq_i · w_i) · xs[r][g] · w.scale(o)`: like [`matmul_q`]
/// with one activation scale per group of [`GROUP`] inputs (`xs` is `(R, groups(C))`).
/// Each group sums in i32, the groups in f32.
#[inline(always)]
pub fn matmul_qg(out: &mut [f32], xq: &[i8], xs: &[f32], w: &QMat<'_>, add: bool) {
    let (o, c) = (w.rows, w.cols);
    let g = groups(c);
    if o == 0 || c == 0 {
        return;
    }
    for ((xr, sr), orow) in xq
        .chunks_exact(c)
        .zip(xs.chunks_exact(g))
        .zip(out.chunks_exact_mut(o))
    {
        for ((r, d), wr) in orow.iter_mut().enumerate().zip(w.data.chunks_exact(c)) {
            let mut acc = 0f32;
            for ((xg, wg), &s) in xr.chunks(GROUP).zip(wr.chunks(GROUP)).zip(sr) {
                acc += dot_i8(xg, wg) as f32 * s;
            }
            let v = acc * w.scale(r);
            *d = if add { *d + v } else { v };
        }
    }
}

/// RMS norm of one row: `out = x / sqrt(mean(x²) + eps) · g` (`g`: f32 LE bytes), with
/// `Σ x²` summed as [`sum_f32`] sums and the factor from [`rms_inv`].
#[inline(always)]
pub fn rmsnorm(out: &mut [f32], x: &[f32], gain: &[u8]) {
    let mut acc = [0f32; SUM_LANES];
    for ch in x.chunks(SUM_LANES) {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += v * v;
        }
    }
    let inv = rms_inv(tree(acc), x.len());
    for ((o, &v), g) in out.iter_mut().zip(x).zip(gain.chunks_exact(4)) {
        *o = v * inv * f32::from_le_bytes([g[0], g[1], g[2], g[3]]);
    }
}

/// `1 / sqrt(Σx² / n + eps)`: the factor of [`rmsnorm`].
#[inline(always)]
pub fn rms_inv(sum_sq: f32, n: usize) -> f32 {
    1.0 / libm::sqrtf(sum_sq / n.max(1) as f32 + crate::model::NORM_EPS)
}

/// `exp(x)` to within ~2 ulp for x in [-87, 88] (inputs are clamped to that range),
/// written so that loops over it vectorise: no branches, no calls, rounding by the
/// 1.5·2²³ trick. Its reference twin is `libm::expf` (see the tests). The host's fused
/// training kernels use this same function.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23
    let x = x.clamp(-87.0, 88.0);
    // exp(x) = 2^n · exp(r), n = round(x / ln 2), r = x - n·ln 2 in [-ln2/2, ln2/2].
    let n = (x * core::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_145_75;
    let r = r - n * 1.428_606_8e-6;
    // Degree-6 Taylor polynomial of exp on the reduced range (error < 3e-8 relative).
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let bits = ((n as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// quick_gelu in place: `x · σ(1.702 x)`.
#[inline(always)]
pub fn quick_gelu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v /= 1.0 + fast_exp(-crate::model::QUICK_GELU * *v);
    }
}

/// Softmax in place (max subtracted first). The exponentials and the sum are separate
/// loops so both vectorise.
#[inline(always)]
pub fn softmax(x: &mut [f32]) {
    let m = max_f32(x);
    for v in x.iter_mut() {
        *v = fast_exp(*v - m);
    }
    let sum = sum_f32(x);
    let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// The largest value (−∞ for an empty slice), in 8 lanes.
#[inline(always)]
pub fn max_f32(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let c = x.chunks_exact(8);
    let tail = c
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for ch in c {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a = a.max(v);
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// The largest magnitude (0 for an empty slice), in 8 lanes.
#[inline(always)]
pub fn max_abs_f32(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let c = x.chunks_exact(8);
    let tail = c.remainder().iter().fold(0f32, |m, &v| m.max(v.abs()));
    for ch in c {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a = a.max(v.abs());
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// Lanes of [`sum_f32`].
pub const SUM_LANES: usize = 16;

/// `Σ x_i` in 16 interleaved lanes (lane `l` adds `x_l, x_(l+16), ..` in order, from 0),
/// then a halving tree (lane `l` += lane `l+8`, then `l+4`, `l+2`, `l+1`): the order of a
/// 16-lane vector sum followed by its usual horizontal reduction.
#[inline(always)]
pub fn sum_f32(x: &[f32]) -> f32 {
    let mut acc = [0f32; SUM_LANES];
    for ch in x.chunks(SUM_LANES) {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += v;
        }
    }
    tree(acc)
}

/// The halving-tree sum of 16 lanes (see [`sum_f32`]).
#[inline(always)]
fn tree(mut acc: [f32; SUM_LANES]) -> f32 {
    let mut w = SUM_LANES / 2;
    while w > 0 {
        let (lo, hi) = acc.split_at_mut(w);
        for (a, &b) in lo.iter_mut().zip(hi.iter()) {
            *a += b;
        }
        w /= 2;
    }
    acc[0]
}

/// `Σ a_i · b_i` in f32, summed in 8 interleaved lanes (so the loop vectorises; the
/// order differs from a left-to-right sum by rounding only).
#[inline(always)]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, p), q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_matmul_equals_reference() {
        // 7 outputs (a block of four and three left over), 37 inputs, 5 rows.
        let (o, c, r) = (7usize, 37usize, 5usize);
        let mut bytes = vec![0u8; crate::format::qmat_bytes(o, c)];
        let w: Vec<f32> = (0..o * c)
            .map(|i| ((i * 29 % 53) as f32 - 26.0) / 9.0)
            .collect();
        crate::quant::write_qmat(&w, o, c, &mut bytes).unwrap();
        let m = QMat::from_bytes(&bytes, o, c).unwrap();
        let xq: Vec<i8> = (0..r * c)
            .map(|i| ((i * 17 % 255) as i32 - 127) as i8)
            .collect();
        let xs: Vec<f32> = (0..r).map(|i| 0.01 * (i + 1) as f32).collect();
        for add in [false, true] {
            let mut a = vec![0.5f32; r * o];
            let mut b = a.clone();
            matmul_q(&mut a, &xq, &xs, &m, add);
            matmul_q_ref(&mut b, &xq, &xs, &m, add);
            assert_eq!(a, b);
        }
        // A hand-computed element: row 0, output 0.
        let mut a = vec![0f32; r * o];
        matmul_q(&mut a, &xq, &xs, &m, false);
        let acc: i32 = (0..c)
            .map(|i| xq[i] as i32 * bytes[o * 4 + i] as i8 as i32)
            .sum();
        assert_eq!(a[0], acc as f32 * xs[0] * m.scale(0));
    }

    #[test]
    fn grouped_matmul_by_hand() {
        // 2 outputs, 70 inputs (groups of 32, 32, 6), 2 rows.
        let (o, c, r) = (2usize, 70usize, 2usize);
        let w: Vec<f32> = (0..o * c)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 5.0)
            .collect();
        let mut bytes = vec![0u8; crate::format::qmat_bytes(o, c)];
        crate::quant::write_qmat(&w, o, c, &mut bytes).unwrap();
        let m = QMat::from_bytes(&bytes, o, c).unwrap();
        let x: Vec<f32> = (0..r * c)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) * (1 + i / 40) as f32)
            .collect();
        let mut xq = vec![0i8; r * c];
        let mut xs = vec![0f32; r * groups(c)];
        crate::quant::quantize_groups(&x, c, &mut xq, &mut xs);
        let mut out = vec![1.0f32; r * o];
        matmul_qg(&mut out, &xq, &xs, &m, true);
        for row in 0..r {
            for oo in 0..o {
                let mut acc = 0f32;
                for (gi, g0) in (0..c).step_by(GROUP).enumerate() {
                    let g1 = (g0 + GROUP).min(c);
                    let dot: i32 = (g0..g1)
                        .map(|i| xq[row * c + i] as i32 * bytes[o * 4 + oo * c + i] as i8 as i32)
                        .sum();
                    acc += dot as f32 * xs[row * 3 + gi];
                }
                assert_eq!(out[row * o + oo], 1.0 + acc * m.scale(oo));
            }
        }
        assert_eq!(groups(64), 2);
        assert_eq!(groups(65), 3);
    }

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst: f32 = 0.0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (fast_exp(x), libm::expf(x));
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(fast_exp(-1000.0), fast_exp(-87.0));
        assert_eq!(fast_exp(0.0), 1.0);
    }

    #[test]
    fn lane_reductions_equal_plain_ones() {
        let x: Vec<f32> = (0..29).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.5).collect();
        assert_eq!(
            max_f32(&x),
            x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
        );
        assert_eq!(max_abs_f32(&x), x.iter().fold(0f32, |m, &v| m.max(v.abs())));
        // Halves and small integers: every partial sum is exact.
        assert_eq!(sum_f32(&x), x.iter().sum::<f32>());
        assert_eq!(max_f32(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn lane_dot_equals_plain_sum_on_exact_values() {
        // Small integers: every partial sum is exact, so the order cannot matter.
        let a: Vec<f32> = (0..37).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| (i % 5) as f32).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(dot_f32(&a, &b), plain);
    }

    #[test]
    fn small_ops_exact() {
        let mut s = [0.0f32, 0.0, 0.0, 0.0];
        softmax(&mut s);
        assert_eq!(s, [0.25; 4]);
        let mut g = [0.0f32, 1.0];
        quick_gelu(&mut g);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 1.0 / (1.0 + (-1.702f32).exp())).abs() < 1e-6);
        let mut o = [0f32; 2];
        let gain: Vec<u8> = [2.0f32, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        rmsnorm(&mut o, &[3.0, 4.0], &gain);
        let inv = 1.0 / (12.5f32 + 1e-5).sqrt();
        assert_eq!(o, [6.0 * inv, 4.0 * inv]);
        assert_eq!(dot_i8(&[1, -2, 3], &[255, 2, 127]), -1 - 4 + 381);
    }
}
