//! The AVX-512 F/BW/VNNI kernels: int8 products with `vpdpbusd` (64 multiply-adds per
//! instruction) on weights packed as `w + 128`, attention over keys transposed 16x16 in
//! registers, RMS norm + quantization and quick_gelu + quantization with their rows' (or
//! groups') reductions sixteen at a time. Each is the exact twin of igpt-core's portable
//! function (see the parent module).
//!
//! Safety: every `unsafe fn` here needs the CPU features of its `target_feature`
//! attribute and the buffer lengths its documentation states; the parent module checks
//! both before each call (the set is checked once, when the weights are packed).

use super::PackedMat;
use igpt_core::kernels::{AttnArgs, GROUP};
use std::arch::x86_64::*;

/// Largest head width / 16 the attention kernel takes.
pub const MAX_HV: usize = 8;

/// `out (T, O) [+]= …` as igpt-core's `matmul_q` (one activation scale per row) or,
/// `grouped`, `matmul_qg` (`groups(C)` scales per row, each group summed apart).
///
/// # Safety
/// AVX-512 F/BW/VNNI present; `out` has `T·O` values, `xq` at least `T·C`, `xs` at
/// least `T` (`T·groups(C)` when grouped).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn matmul(
    out: &mut [f32],
    xq: &[i8],
    xs: &[f32],
    pm: &PackedMat,
    add: bool,
    t: usize,
    grouped: bool,
    sums: &mut Vec<i32>,
) {
    let (o, c) = (pm.rows, pm.cols);
    let g = if grouped {
        igpt_core::kernels::groups(c)
    } else {
        1
    };
    // 128 · Σ x per row, or per row and group.
    let span = if grouped { GROUP } else { c };
    sums.clear();
    for row in xq.chunks_exact(c).take(t) {
        for part in row.chunks(span) {
            sums.push(128 * part.iter().map(|&v| v as i32).sum::<i32>());
        }
    }
    let nb = o / 16;
    let (op, xp, sp, cp) = (out.as_mut_ptr(), xq.as_ptr(), xs.as_ptr(), sums.as_ptr());
    let (wp, scp) = (pm.data.as_ptr(), pm.scales.as_ptr());
    // Outer loop over groups of output blocks, so their weights stay in L1 while
    // every row passes.
    let nbt = if grouped { 2 } else { 4 };
    let mut b0 = 0;
    while b0 < nb {
        let nbk = (nb - b0).min(nbt);
        let mut r0 = 0;
        while r0 < t {
            let mr = (t - r0).min(if grouped { 4 } else { 6 });
            let tile = Tile {
                out: op.add(r0 * o + b0 * 16),
                o,
                x: xp.add(r0 * c),
                c,
                xs: sp.add(r0 * g),
                sums: cp.add(r0 * g),
                g,
                w: wp.add(b0 * 16 * c),
                scales: scp.add(b0 * 16),
                add,
            };
            macro_rules! go {
                ($($m:literal $n:literal),*) => {
                    match (mr, nbk, grouped) {
                        $(
                            ($m, $n, false) => tile.plain::<$m, $n>(),
                            ($m, $n, true) => tile.grouped::<$m, $n>(),
                        )*
                        _ => {}
                    }
                };
            }
            go!(
                6 4, 6 3, 6 2, 6 1, 5 4, 5 3, 5 2, 5 1, 4 4, 4 3, 4 2, 4 1, 3 4, 3 3, 3 2,
                3 1, 2 4, 2 3, 2 2, 2 1, 1 4, 1 3, 1 2, 1 1
            );
            r0 += mr;
        }
        b0 += nbk;
    }
}

/// One tile of up to 4 rows by up to 4 blocks of 16 outputs, by raw pointers into the
/// checked buffers of [`matmul`].
struct Tile {
    out: *mut f32,
    o: usize,
    x: *const i8,
    c: usize,
    xs: *const f32,
    sums: *const i32,
    g: usize,
    w: *const u8,
    scales: *const f32,
    add: bool,
}

impl Tile {
    /// `Σ_{kq in k0..k1} dpbusd` for the tile, into `acc`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn dot<const MR: usize, const NB: usize>(
        &self,
        acc: &mut [[__m512i; NB]; MR],
        k0: usize,
        k1: usize,
    ) {
        let stride = 16 * self.c;
        for kq in k0..k1 {
            let mut wv = [_mm512_setzero_si512(); NB];
            for (b, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(self.w.add(b * stride + kq * 64) as *const _);
            }
            for (r, ar) in acc.iter_mut().enumerate() {
                let four = (self.x.add(r * self.c + kq * 4) as *const i32).read_unaligned();
                let xb = _mm512_set1_epi32(four);
                for (a, &v) in ar.iter_mut().zip(&wv) {
                    *a = _mm512_dpbusd_epi32(*a, v, xb);
                }
            }
        }
    }

    /// `out = (acc as f32 · xs) · scale [+ out]`: `matmul_q`'s order.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn plain<const MR: usize, const NB: usize>(&self) {
        let mut acc = [[_mm512_setzero_si512(); NB]; MR];
        self.dot(&mut acc, 0, self.c / 4);
        for (r, ar) in acc.iter().enumerate() {
            let corr = _mm512_set1_epi32(*self.sums.add(r));
            let sx = _mm512_set1_ps(*self.xs.add(r));
            for (b, &a) in ar.iter().enumerate() {
                let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(a, corr));
                let v = _mm512_mul_ps(
                    _mm512_mul_ps(v, sx),
                    _mm512_loadu_ps(self.scales.add(b * 16)),
                );
                self.store(r, b, v);
            }
        }
    }

    /// `out = (Σ_groups (acc_g as f32 · xs_g), in order) · scale [+ out]`:
    /// `matmul_qg`'s order.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn grouped<const MR: usize, const NB: usize>(&self) {
        let mut accf = [[_mm512_setzero_ps(); NB]; MR];
        for gi in 0..self.g {
            let k0 = gi * GROUP / 4;
            let k1 = ((gi + 1) * GROUP).min(self.c) / 4;
            let mut acc = [[_mm512_setzero_si512(); NB]; MR];
            self.dot(&mut acc, k0, k1);
            for (r, (ar, fr)) in acc.iter().zip(accf.iter_mut()).enumerate() {
                let corr = _mm512_set1_epi32(*self.sums.add(r * self.g + gi));
                let sx = _mm512_set1_ps(*self.xs.add(r * self.g + gi));
                for (&a, f) in ar.iter().zip(fr.iter_mut()) {
                    let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(a, corr));
                    *f = _mm512_add_ps(*f, _mm512_mul_ps(v, sx));
                }
            }
        }
        for (r, fr) in accf.iter().enumerate() {
            for (b, &f) in fr.iter().enumerate() {
                let v = _mm512_mul_ps(f, _mm512_loadu_ps(self.scales.add(b * 16)));
                self.store(r, b, v);
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(&self, r: usize, b: usize, v: __m512) {
        let dst = self.out.add(r * self.o + b * 16);
        let v = if self.add {
            _mm512_add_ps(_mm512_loadu_ps(dst), v)
        } else {
            v
        };
        _mm512_storeu_ps(dst, v);
    }
}

/// igpt-core's `quantize_row` of `n` values (a multiple of 16) at `x` into `q`;
/// returns the scale. The magnitude is clamped to 128 before the integer conversion
/// (which would wrap above 2³¹ where Rust's `as` saturates) and NaN gives 0, as in
/// `round_q`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quant_row(x: *const f32, n: usize, q: *mut i8) -> f32 {
    let mut m = _mm512_setzero_ps();
    for i in (0..n).step_by(16) {
        // vmaxps returns its second operand when either is NaN: f32::max's choice.
        m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x.add(i))), m);
    }
    let amax = _mm512_reduce_max_ps(m);
    let qmax = igpt_core::quant::QMAX;
    let (scale, inv) = if amax > 0.0 {
        (amax / qmax, qmax / amax)
    } else {
        (0.0, 0.0)
    };
    round_store(x, n, inv, q);
    scale
}

/// `q = round_q(x · inv)` for `n` values (a multiple of 16).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn round_store(x: *const f32, n: usize, inv: f32, q: *mut i8) {
    let (vinv, half, zero) = (
        _mm512_set1_ps(inv),
        _mm512_set1_ps(0.5),
        _mm512_setzero_si512(),
    );
    for i in (0..n).step_by(16) {
        let y = _mm512_mul_ps(_mm512_loadu_ps(x.add(i)), vinv);
        let a = _mm512_add_ps(_mm512_abs_ps(y), half);
        // min(128, a) keeps NaN (second operand) so the conversion gives i32::MIN → 0.
        let a = _mm512_min_ps(_mm512_set1_ps(128.0), a);
        let m = _mm512_min_epi32(_mm512_cvttps_epi32(a), _mm512_set1_epi32(127));
        let m = _mm512_max_epi32(m, zero);
        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(y, _mm512_setzero_ps());
        let m = _mm512_mask_sub_epi32(m, neg, zero, m);
        _mm_storeu_si128(q.add(i) as *mut __m128i, _mm512_cvtepi32_epi8(m));
    }
}

/// igpt-core's `quantize_rows` for rows of `cols` values (a multiple of 16).
///
/// # Safety
/// AVX-512 F/BW present; `q` as long as `x`, `s` one per row.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn quantize(x: &[f32], cols: usize, q: &mut [i8], s: &mut [f32]) {
    for (r, sr) in s.iter_mut().enumerate().take(x.len() / cols) {
        *sr = quant_row(x.as_ptr().add(r * cols), cols, q.as_mut_ptr().add(r * cols));
    }
}

/// igpt-core's `rmsnorm` of each row (into `tmp`), then `quantize_rows`.
///
/// # Safety
/// AVX-512 F/BW present; `cols` a multiple of 16, `gain` `4·cols` bytes, `tmp` and `q`
/// as long as `x`, `s` one per row.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn norm_quant(
    x: &[f32],
    cols: usize,
    gain: &[u8],
    tmp: &mut [f32],
    q: &mut [i8],
    s: &mut [f32],
) {
    let gp = gain.as_ptr() as *const f32;
    let rows = (x.len() / cols).min(s.len());
    let (xp, tp, qp) = (x.as_ptr(), tmp.as_mut_ptr(), q.as_mut_ptr());
    // Sixteen rows at a time: their Σx² and maxima reduced together.
    let mut r0 = 0;
    while r0 + 16 <= rows {
        let mut acc = [_mm512_setzero_ps(); 16];
        for (r, a) in acc.iter_mut().enumerate() {
            let xr = xp.add((r0 + r) * cols);
            for i in (0..cols).step_by(16) {
                let v = _mm512_loadu_ps(xr.add(i));
                *a = _mm512_add_ps(*a, _mm512_mul_ps(v, v));
            }
        }
        // rms_inv on 16 rows: 1 / sqrt(Σx² / n + eps), each step correctly rounded.
        let ms = _mm512_div_ps(reduce_16x16::<false>(&acc), _mm512_set1_ps(cols as f32));
        let ms = _mm512_add_ps(ms, _mm512_set1_ps(igpt_core::model::NORM_EPS));
        let inv = _mm512_div_ps(_mm512_set1_ps(1.0), _mm512_sqrt_ps(ms));
        let mut invs = [0f32; 16];
        _mm512_storeu_ps(invs.as_mut_ptr(), inv);
        let mut m = [_mm512_setzero_ps(); 16];
        for (r, (mr, &iv)) in m.iter_mut().zip(&invs).enumerate() {
            let (xr, tr) = (xp.add((r0 + r) * cols), tp.add((r0 + r) * cols));
            let iv = _mm512_set1_ps(iv);
            for i in (0..cols).step_by(16) {
                let v = _mm512_mul_ps(_mm512_loadu_ps(xr.add(i)), iv);
                let y = _mm512_mul_ps(v, _mm512_loadu_ps(gp.add(i)));
                _mm512_storeu_ps(tr.add(i), y);
                *mr = _mm512_max_ps(_mm512_abs_ps(y), *mr);
            }
        }
        let qinv = scales16(reduce_16x16::<true>(&m), s.as_mut_ptr().add(r0));
        for (r, &iv) in qinv.iter().enumerate() {
            let at = (r0 + r) * cols;
            round_store(tp.add(at), cols, iv, qp.add(at));
        }
        r0 += 16;
    }
    for (r, sr) in s.iter_mut().enumerate().take(rows).skip(r0) {
        let (xr, tr) = (x.as_ptr().add(r * cols), tmp.as_mut_ptr().add(r * cols));
        let mut acc = _mm512_setzero_ps();
        for i in (0..cols).step_by(16) {
            let v = _mm512_loadu_ps(xr.add(i));
            acc = _mm512_add_ps(acc, _mm512_mul_ps(v, v));
        }
        let inv = _mm512_set1_ps(igpt_core::kernels::rms_inv(tree_sum(acc), cols));
        for i in (0..cols).step_by(16) {
            let v = _mm512_mul_ps(_mm512_loadu_ps(xr.add(i)), inv);
            _mm512_storeu_ps(tr.add(i), _mm512_mul_ps(v, _mm512_loadu_ps(gp.add(i))));
        }
        *sr = quant_row(tr, cols, q.as_mut_ptr().add(r * cols));
    }
}

/// igpt-core's `quick_gelu` on `h` in place, then `quantize_groups` (rows a multiple
/// of `GROUP` long, so every group is whole).
///
/// # Safety
/// AVX-512 F/BW present; `q` as long as `h`, `s` one per group.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn gelu_quant(h: &mut [f32], q: &mut [i8], s: &mut [f32]) {
    const { assert!(GROUP == 32) };
    let ng = (h.len() / GROUP).min(s.len());
    let (hp, qp, sp) = (h.as_mut_ptr(), q.as_mut_ptr(), s.as_mut_ptr());
    // Sixteen groups at a time: their maxima gathered into one vector, so the scales
    // are two vector divisions.
    let mut g0 = 0;
    while g0 + 16 <= ng {
        let p = hp.add(g0 * GROUP);
        let mut m = [_mm512_setzero_ps(); 16];
        // Two groups (four vectors) at a time, their exponentials interleaved.
        for (g2, mg) in m.chunks_exact_mut(2).enumerate() {
            let at = p.add(2 * g2 * GROUP);
            let y = gelu16x([0, 16, 32, 48].map(|i| _mm512_loadu_ps(at.add(i))));
            for (i, &yi) in y.iter().enumerate() {
                _mm512_storeu_ps(at.add(16 * i), yi);
                mg[i / 2] = _mm512_max_ps(_mm512_abs_ps(yi), mg[i / 2]);
            }
        }
        let inv = scales16(reduce_16x16::<true>(&m), sp.add(g0));
        for (g, &iv) in inv.iter().enumerate() {
            let at = (g0 + g) * GROUP;
            round_store(hp.add(at), GROUP, iv, qp.add(at));
        }
        g0 += 16;
    }
    for gi in g0..ng {
        let p = hp.add(gi * GROUP);
        for i in [0, 16] {
            _mm512_storeu_ps(p.add(i), gelu16(_mm512_loadu_ps(p.add(i))));
        }
        *sp.add(gi) = quant_row(p, GROUP, qp.add(gi * GROUP));
    }
}

/// igpt-core's `quick_gelu` on 16 lanes: `v / (1 + fast_exp(-1.702 · v))`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gelu16(v: __m512) -> __m512 {
    gelu16x([v])[0]
}

/// [`gelu16`] on `N` vectors, step by step across them (see [`exp16x`]).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gelu16x<const N: usize>(v: [__m512; N]) -> [__m512; N] {
    let c = _mm512_set1_ps(-igpt_core::model::QUICK_GELU);
    let e = exp16x(v.map(|x| _mm512_mul_ps(c, x)));
    let one = _mm512_set1_ps(1.0);
    std::array::from_fn(|i| _mm512_div_ps(v[i], _mm512_add_ps(one, e[i])))
}

/// `a max b` (`MAX`) or `a + b`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn op<const MAX: bool>(a: __m512, b: __m512) -> __m512 {
    if MAX {
        _mm512_max_ps(a, b)
    } else {
        _mm512_add_ps(a, b)
    }
}

/// Lane `g` of the result = the max (`MAX`) or the sum of the lanes of `m[g]`: 16
/// horizontal reductions at once by halving shuffles, then one permutation back into
/// order. The sums follow `tree_sum`'s order exactly: lanes `l` and `l+8` (128-bit
/// lanes 0 and 2, 1 and 3), then `l+4`, `l+2`, `l+1`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn reduce_16x16<const MAX: bool>(m: &[__m512; 16]) -> __m512 {
    // 16 → 8 vectors: 128-bit lanes 0-1 of c[k] hold row 2k (l + l+8), 2-3 row 2k+1.
    let mut c = [_mm512_setzero_ps(); 8];
    for (k, ck) in c.iter_mut().enumerate() {
        let (a, b) = (m[2 * k], m[2 * k + 1]);
        let lo = _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b);
        let hi = _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b);
        *ck = op::<MAX>(lo, hi);
    }
    // 8 → 4: 128-bit lane L of e[k] holds row 4k + L (l + l+4).
    let mut e = [_mm512_setzero_ps(); 4];
    for (k, ek) in e.iter_mut().enumerate() {
        let (a, b) = (c[2 * k], c[2 * k + 1]);
        let lo = _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b);
        let hi = _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b);
        *ek = op::<MAX>(lo, hi);
    }
    // Within 128-bit lanes (l + l+2, then l + l+1): element k of lane L = row 4k + L.
    let f0 = op::<MAX>(
        _mm512_unpacklo_ps(e[0], e[1]),
        _mm512_unpackhi_ps(e[0], e[1]),
    );
    let f1 = op::<MAX>(
        _mm512_unpacklo_ps(e[2], e[3]),
        _mm512_unpackhi_ps(e[2], e[3]),
    );
    let u = _mm512_shuffle_ps::<0b01_00_01_00>(f0, f1);
    let v = _mm512_shuffle_ps::<0b11_10_11_10>(f0, f1);
    let g = op::<MAX>(u, v);
    // Position 4L + k holds row 4k + L: move row G to position G.
    let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_ps(idx, g)
}

/// Row scales and the inverse scales of 16 rows' largest magnitudes `amax`, as
/// `quantize_row` computes them one by one (`amax / 127`, `127 / amax`, 0 for 0):
/// stores the scales at `s`, returns the inverses.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn scales16(amax: __m512, s: *mut f32) -> [f32; 16] {
    let qmax = _mm512_set1_ps(igpt_core::quant::QMAX);
    let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(amax, _mm512_setzero_ps());
    _mm512_storeu_ps(s, _mm512_maskz_div_ps(pos, amax, qmax));
    let mut inv = [0f32; 16];
    _mm512_storeu_ps(inv.as_mut_ptr(), _mm512_maskz_div_ps(pos, qmax, amax));
    inv
}

/// igpt-core's `fast_exp` on 16 lanes, operation for operation (no fused
/// multiply-adds, as the scalar code has none).
///
/// # Safety
/// AVX-512 F present.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn exp16(x: __m512) -> __m512 {
    exp16x([x])[0]
}

/// [`exp16`] on `N` vectors, each step on all of them before the next: the polynomial is
/// one long dependency chain, and a CPU's scheduler holds only a few chains written one
/// after another, so interleaving them in the instruction stream is what lets them
/// overlap.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn exp16x<const N: usize>(x: [__m512; N]) -> [__m512; N] {
    const ROUND: f32 = 12_582_912.0;
    let s = _mm512_set1_ps;
    // `f32::clamp`: NaN stays NaN. `vmaxps` / `vminps` return their second operand when
    // either is NaN, so the input goes second.
    let x = x.map(|x| _mm512_min_ps(s(88.0), _mm512_max_ps(s(-87.0), x)));
    let n = x.map(|x| _mm512_mul_ps(x, s(std::f32::consts::LOG2_E)));
    let n = n.map(|n| _mm512_sub_ps(_mm512_add_ps(n, s(ROUND)), s(ROUND)));
    let mut r: [__m512; N] =
        std::array::from_fn(|i| _mm512_sub_ps(x[i], _mm512_mul_ps(n[i], s(0.693_145_75))));
    for (ri, &ni) in r.iter_mut().zip(&n) {
        *ri = _mm512_sub_ps(*ri, _mm512_mul_ps(ni, s(1.428_606_8e-6)));
    }
    let mut p = [s(1.0 / 720.0); N];
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        for (pi, &ri) in p.iter_mut().zip(&r) {
            *pi = _mm512_add_ps(_mm512_mul_ps(*pi, ri), s(c));
        }
    }
    std::array::from_fn(|i| {
        let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvttps_epi32(n[i]),
            _mm512_set1_epi32(127),
        ));
        _mm512_mul_ps(p[i], _mm512_castsi512_ps(bits))
    })
}

/// The lanes' sum in igpt-core's `sum_f32` tree order: `l + (l+8)`, then `+4`, `+2`,
/// `+1`.
///
/// # Safety
/// AVX-512 F present.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn tree_sum(v: __m512) -> f32 {
    let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b11_10_11_10>(v, v));
    let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b01_01_01_01>(v, v));
    let v = _mm512_add_ps(v, _mm512_permute_ps::<0b11_10_11_10>(v));
    let v = _mm512_add_ps(v, _mm512_permute_ps::<0b01_01_01_01>(v));
    _mm512_cvtss_f32(v)
}

/// The mask of the lanes of block `b` below `seen`.
#[inline]
fn lanes_below(seen: usize, b: usize) -> __mmask16 {
    let left = seen.saturating_sub(b * 16);
    if left >= 16 {
        0xffff
    } else {
        ((1u32 << left) - 1) as __mmask16
    }
}

/// igpt-core's `softmax` of rows `s + r·sp` (`seen[r]` values each) in place; each row
/// has room for whole 16-lane blocks (lanes past `seen` end up 0). The rows'
/// exponentials interleave, so their dependency chains overlap.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_rows<const MR: usize>(s: *mut f32, sp: usize, seen: &[usize; MR]) {
    let mut mx = [_mm512_setzero_ps(); MR];
    let mut sum = [_mm512_setzero_ps(); MR];
    let mut blocks = 0;
    for (r, m) in mx.iter_mut().enumerate() {
        let mut v = _mm512_set1_ps(f32::NEG_INFINITY);
        for b in 0..seen[r].div_ceil(16) {
            let x = _mm512_mask_loadu_ps(v, lanes_below(seen[r], b), s.add(r * sp + b * 16));
            // NaN scores are skipped, as `f32::max` skips them in `max_f32` (`vmaxps`
            // returns its second operand when either is NaN).
            v = _mm512_max_ps(x, v);
        }
        *m = _mm512_set1_ps(_mm512_reduce_max_ps(v));
        blocks = blocks.max(seen[r].div_ceil(16));
    }
    for b in 0..blocks {
        for (r, (m, su)) in mx.iter().zip(sum.iter_mut()).enumerate() {
            if b * 16 < seen[r] {
                let p = s.add(r * sp + b * 16);
                let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p), *m));
                let e = _mm512_maskz_mov_ps(lanes_below(seen[r], b), e);
                _mm512_storeu_ps(p, e);
                *su = _mm512_add_ps(*su, e);
            }
        }
    }
    for (r, &su) in sum.iter().enumerate() {
        let total = tree_sum(su);
        let inv = _mm512_set1_ps(if total > 0.0 { 1.0 / total } else { 0.0 });
        for b in 0..seen[r].div_ceil(16) {
            let p = s.add(r * sp + b * 16);
            _mm512_storeu_ps(p, _mm512_mul_ps(_mm512_loadu_ps(p), inv));
        }
    }
}

/// igpt-core's `attention`, with the keys transposed into `kt` so 16 positions'
/// scores are one vector, four query rows at a time.
///
/// # Safety
/// AVX-512 F present; shapes as checked by the caller (`hd` a multiple of 16 up to
/// `16 · MAX_HV`, `d` a multiple of `hd`, keys and values of `p0 + T` rows).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn attention(
    out: &mut [f32],
    a: &AttnArgs<'_>,
    kt: &mut Vec<f32>,
    probs: &mut Vec<f32>,
) {
    let (d, hd) = (a.width, a.head_dim);
    let t = out.len() / d;
    let span = a.keys.len() / d;
    let sp = span.div_ceil(16) * 16;
    // Lanes past `span` are never read unmasked, so neither buffer needs clearing.
    if kt.len() < d * sp {
        kt.resize(d * sp, 0.0);
    }
    if probs.len() < 4 * sp {
        probs.resize(4 * sp, 0.0);
    }
    // kᵀ: 16x16 tiles in registers, the last span % 16 positions one by one.
    let whole = span / 16 * 16;
    for j0 in (0..whole).step_by(16) {
        for c0 in (0..d).step_by(16) {
            let src = a.keys.as_ptr().add(j0 * d + c0);
            transpose_16x16(src, d, kt.as_mut_ptr().add(c0 * sp + j0), sp);
        }
    }
    for (j, kr) in a.keys.chunks_exact(d).enumerate().skip(whole) {
        for (cc, &v) in kr.iter().enumerate() {
            kt[cc * sp + j] = v;
        }
    }
    let cx = Attn {
        kt: kt.as_ptr(),
        sp,
        probs: probs.as_mut_ptr(),
        q: a.q.as_ptr(),
        vals: a.vals.as_ptr(),
        out: out.as_mut_ptr(),
        d,
        hd,
        p0: a.p0,
        span,
        causal: a.causal,
        scale: a.scale,
    };
    let hv = hd / 16;
    for h in 0..d / hd {
        let mut i0 = 0;
        while i0 < t {
            let mr = (t - i0).min(4);
            macro_rules! go {
                ($($m:literal),*) => {
                    match (mr, hv) {
                        $(
                            ($m, 1) => cx.rows::<$m, 1>(h, i0),
                            ($m, 2) => cx.rows::<$m, 2>(h, i0),
                            ($m, 3) => cx.rows::<$m, 3>(h, i0),
                            ($m, 4) => cx.rows::<$m, 4>(h, i0),
                            ($m, 5) => cx.rows::<$m, 5>(h, i0),
                            ($m, 6) => cx.rows::<$m, 6>(h, i0),
                            ($m, 7) => cx.rows::<$m, 7>(h, i0),
                            ($m, 8) => cx.rows::<$m, 8>(h, i0),
                        )*
                        _ => {}
                    }
                };
            }
            go!(4, 3, 2, 1);
            i0 += mr;
        }
    }
}

/// Writes the transpose of the 16x16 tile at `src` (rows `ss` apart) to `dst` (rows
/// `ds` apart).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_16x16(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    let mut r = [_mm512_setzero_ps(); 16];
    for (i, ri) in r.iter_mut().enumerate() {
        *ri = _mm512_loadu_ps(src.add(i * ss));
    }
    // Pairs of rows: in each 128-bit lane, [a0 b0 a1 b1] and [a2 b2 a3 b3].
    let mut t = [_mm512_setzero_ps(); 16];
    for k in 0..8 {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    // Quads of rows: u[4k + c], 128-bit lane L = rows 4k..4k+4 at column 4L + c.
    let mut u = [_mm512_setzero_ps(); 16];
    for k in 0..4 {
        u[4 * k] = _mm512_shuffle_ps::<0x44>(t[4 * k], t[4 * k + 2]);
        u[4 * k + 1] = _mm512_shuffle_ps::<0xEE>(t[4 * k], t[4 * k + 2]);
        u[4 * k + 2] = _mm512_shuffle_ps::<0x44>(t[4 * k + 1], t[4 * k + 3]);
        u[4 * k + 3] = _mm512_shuffle_ps::<0xEE>(t[4 * k + 1], t[4 * k + 3]);
    }
    // A 4x4 transpose of 128-bit lanes: column 4L + c gathers lane L of u[c + 4R].
    for c in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x44>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_f32x4::<0xEE>(u[c], u[4 + c]);
        let v2 = _mm512_shuffle_f32x4::<0x44>(u[8 + c], u[12 + c]);
        let v3 = _mm512_shuffle_f32x4::<0xEE>(u[8 + c], u[12 + c]);
        _mm512_storeu_ps(dst.add(c * ds), _mm512_shuffle_f32x4::<0x88>(v0, v2));
        _mm512_storeu_ps(dst.add((4 + c) * ds), _mm512_shuffle_f32x4::<0xDD>(v0, v2));
        _mm512_storeu_ps(dst.add((8 + c) * ds), _mm512_shuffle_f32x4::<0x88>(v1, v3));
        _mm512_storeu_ps(dst.add((12 + c) * ds), _mm512_shuffle_f32x4::<0xDD>(v1, v3));
    }
}

/// One attention call's buffers, by raw pointers into what [`attention`] checked.
struct Attn {
    kt: *const f32,
    sp: usize,
    probs: *mut f32,
    q: *const f32,
    vals: *const f32,
    out: *mut f32,
    d: usize,
    hd: usize,
    p0: usize,
    span: usize,
    causal: bool,
    scale: f32,
}

impl Attn {
    /// Positions query row `i` sees.
    #[inline]
    fn seen(&self, i: usize) -> usize {
        if self.causal {
            (self.p0 + i + 1).min(self.span)
        } else {
            self.span
        }
    }

    /// Rows `i0..i0+MR` of head `h` (head width `16·HV`): scores, softmax, values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const MR: usize, const HV: usize>(&self, h: usize, i0: usize) {
        let blocks = self.seen(i0 + MR - 1).div_ceil(16);
        let mut jb = 0;
        while jb + 2 <= blocks {
            self.scores::<MR, 2>(h, i0, jb);
            jb += 2;
        }
        if jb < blocks {
            self.scores::<MR, 1>(h, i0, jb);
        }
        let mut seen = [0usize; MR];
        for (r, sr) in seen.iter_mut().enumerate() {
            *sr = self.seen(i0 + r);
        }
        softmax_rows::<MR>(self.probs, self.sp, &seen);
        // out_e = Σ_j p_j · v_je, j in order: the rows together while all see
        // position j, then each row's own tail.
        let common = self.seen(i0);
        let mut o = [[_mm512_setzero_ps(); HV]; MR];
        for j in 0..common {
            let vr = self.vals.add(j * self.d + h * self.hd);
            let mut p = [_mm512_setzero_ps(); MR];
            for (r, pr) in p.iter_mut().enumerate() {
                *pr = _mm512_set1_ps(*self.probs.add(r * self.sp + j));
            }
            for v in 0..HV {
                let vv = _mm512_loadu_ps(vr.add(v * 16));
                for (or, &pr) in o.iter_mut().zip(&p) {
                    or[v] = _mm512_add_ps(or[v], _mm512_mul_ps(pr, vv));
                }
            }
        }
        for (r, or) in o.iter_mut().enumerate() {
            for j in common..self.seen(i0 + r) {
                let p = _mm512_set1_ps(*self.probs.add(r * self.sp + j));
                let vr = self.vals.add(j * self.d + h * self.hd);
                for (v, ov) in or.iter_mut().enumerate() {
                    *ov = _mm512_add_ps(*ov, _mm512_mul_ps(p, _mm512_loadu_ps(vr.add(v * 16))));
                }
            }
            let orow = self.out.add((i0 + r) * self.d + h * self.hd);
            for (v, &ov) in or.iter().enumerate() {
                _mm512_storeu_ps(orow.add(v * 16), ov);
            }
        }
    }

    /// Scores of rows `i0..i0+MR` against positions `16·jb .. 16·(jb+NJ)`:
    /// `(Σ_e q_e · kᵀ[e][j], e in order) · scale`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn scores<const MR: usize, const NJ: usize>(&self, h: usize, i0: usize, jb: usize) {
        let mut acc = [[_mm512_setzero_ps(); NJ]; MR];
        for e in 0..self.hd {
            let kr = self.kt.add((h * self.hd + e) * self.sp + jb * 16);
            let mut kv = [_mm512_setzero_ps(); NJ];
            for (b, k) in kv.iter_mut().enumerate() {
                *k = _mm512_loadu_ps(kr.add(b * 16));
            }
            for (r, ar) in acc.iter_mut().enumerate() {
                let qv = _mm512_set1_ps(*self.q.add((i0 + r) * self.d + h * self.hd + e));
                for (a, &k) in ar.iter_mut().zip(&kv) {
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(qv, k));
                }
            }
        }
        let scale = _mm512_set1_ps(self.scale);
        for (r, ar) in acc.iter().enumerate() {
            for (b, &a) in ar.iter().enumerate() {
                let dst = self.probs.add(r * self.sp + (jb + b) * 16);
                _mm512_storeu_ps(dst, _mm512_mul_ps(a, scale));
            }
        }
    }
}
