//! The 8-lane kernels (AVX2): int8 products two ways ([`wide`]: `vpmaddwd` on i16
//! copies, AVX2 only; [`vnni`]: 256-bit `vpdpbusd`, AVX-VNNI), attention over keys
//! transposed 8x8 in registers, RMS norm + quantization and quick_gelu + quantization.
//! Each is the exact twin of igpt-core's portable function (see the parent module): where
//! the core sums in 16 lanes, two registers hold lanes 0-7 and 8-15, and adding them is the
//! first step of its halving tree.
//!
//! **AVX2 products** ([`wide`]). The weights are packed once as i16 and each activation
//! row is widened to i16 per call; `vpmaddwd` multiplies i16 pairs and adds each pair into
//! an i32 lane, then `vpaddd` accumulates. Exact for every int8 value: `|x·w| ≤ 128·128`,
//! so a pair sum is at most `2·2¹⁴ = 32768` in magnitude, far inside i32 (`vpmaddwd` wraps
//! only when both pairs are `−32768 · −32768`, impossible for widened bytes), and the i32
//! accumulation is exact (`|Σ| ≤ 2¹⁴ · C`, below 2³¹ for `C < 131,072`); −128 needs no
//! special case in weights or activations.
//!
//! This replaced the sign trick (`vpmaddubsw(|x|, sign(w, x))` then `vpmaddwd` by ones;
//! i16 pair sums at most `2·128·127 = 32512 < 32767` when weights exclude −128): both
//! spend two multiplies per 32 multiply-adds, but the sign trick adds a `vpsignb` per
//! product and a `vpabsb` per row on the same ports, and measured 15-20% slower on this
//! machine (`bench/RESULTS.md`, "int8 kernels per instruction set").
//!
//! **AVX-VNNI** ([`vnni`]): as the AVX-512 kernel, `w + 128` unsigned times `x` signed,
//! four products per 32-bit lane summed into i32 (no saturation: `vpdpbusd` does not
//! saturate, `|Σ| ≤ 255 · 128 · C`), then `128 · Σ x` subtracted.
//!
//! Safety: every `unsafe fn` here needs the CPU features of its `target_feature`
//! attribute and the buffer lengths its documentation states; the parent module checks
//! both before each call (the set is checked once, when the weights are packed).

use super::PackedMat;
use igpt_core::kernels::{AttnArgs, GROUP};
use std::arch::x86_64::*;

/// Rows per tile of the grouped product (which also holds f32 sums).
const GROUPED_ROWS: usize = 3;

/// The int8 product code, once per int8 step: `$k` inputs per 32-bit lane (4 bytes of
/// `vpdpbusd`, 2 i16 of `vpmaddwd`), so 64 bytes of packed weights (16 outputs × `$k`
/// inputs) and 4 bytes of an activation row per step; `$rows` rows per tile of the plain
/// product (at most 6: two accumulators per row, on 16 registers). The tiles call `step`,
/// which each module defines with its own `target_feature`s, so it inlines into them.
macro_rules! int8_products {
    ($feat:literal, $k:literal, $rows:literal) => {
        /// Inputs per 32-bit lane of a step.
        const K: usize = $k;

        /// `out (T, O) [+]= …` as igpt-core's `matmul_q` (one activation scale per
        /// row) or, `grouped`, `matmul_qg` (`groups(C)` scales per row, each group
        /// summed apart).
        ///
        /// # Safety
        /// The CPU has this module's features; `pm` packed for this module's kernel set;
        /// `out` has `T·O` values, `xq` at least `T·C`, `xs` at least `T`
        /// (`T·groups(C)` when grouped).
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $feat)]
        pub unsafe fn matmul(
            out: &mut [f32],
            xq: &[i8],
            xs: &[f32],
            pm: &PackedMat,
            add: bool,
            t: usize,
            grouped: bool,
            work: &mut super::super::Work,
        ) {
            let (o, c) = (pm.rows, pm.cols);
            let g = if grouped {
                igpt_core::kernels::groups(c)
            } else {
                1
            };
            let (xp, wp) = prepare(xq, t, c, grouped, pm, work);
            let (op, sp, cp) = (out.as_mut_ptr(), xs.as_ptr(), work.sums.as_ptr());
            let scp = pm.scales.as_ptr();
            let rows = if grouped { GROUPED_ROWS } else { $rows };
            // One block of 16 outputs (its weights stay in L1) while every row passes.
            for b in 0..o / 16 {
                let mut r0 = 0;
                while r0 < t {
                    let mr = (t - r0).min(rows);
                    let tile = Tile {
                        out: op.add(r0 * o + b * 16),
                        o,
                        x: xp.add(r0 * c * 4 / K),
                        c,
                        xs: sp.add(r0 * g),
                        sums: cp.add(r0 * g),
                        g,
                        w: wp.add(b * 16 * c * 4 / K),
                        scales: scp.add(b * 16),
                        add,
                    };
                    match (mr, grouped) {
                        (6, false) => tile.plain::<6>(),
                        (5, false) => tile.plain::<5>(),
                        (4, false) => tile.plain::<4>(),
                        (3, false) => tile.plain::<3>(),
                        (2, false) => tile.plain::<2>(),
                        (1, false) => tile.plain::<1>(),
                        (3, true) => tile.grouped::<3>(),
                        (2, true) => tile.grouped::<2>(),
                        (1, true) => tile.grouped::<1>(),
                        _ => {}
                    }
                    r0 += mr;
                }
            }
        }

        /// Up to 6 rows by one block of 16 outputs, by
        /// raw pointers into the checked buffers of [`matmul`] (`x` and `w` as bytes:
        /// `4/K` per value).
        struct Tile {
            out: *mut f32,
            o: usize,
            x: *const u8,
            c: usize,
            xs: *const f32,
            sums: *const i32,
            g: usize,
            w: *const u8,
            scales: *const f32,
            add: bool,
        }

        impl Tile {
            /// `Σ` over steps `k0..k1` (`K` inputs each) of the tile's products, into
            /// `acc` (outputs 0-7 and 8-15 of the block).
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn dot<const MR: usize>(
                &self,
                acc: &mut [[__m256i; 2]; MR],
                k0: usize,
                k1: usize,
            ) {
                let row = self.c * 4 / K;
                for k in k0..k1 {
                    let w0 = _mm256_loadu_si256(self.w.add(k * 64) as *const __m256i);
                    let w1 = _mm256_loadu_si256(self.w.add(k * 64 + 32) as *const __m256i);
                    for (r, ar) in acc.iter_mut().enumerate() {
                        let four = (self.x.add(r * row + k * 4) as *const i32).read_unaligned();
                        let xb = _mm256_set1_epi32(four);
                        ar[0] = step(ar[0], w0, xb);
                        ar[1] = step(ar[1], w1, xb);
                    }
                }
            }

            /// The i32 sums of row `r`, group `gi`, as f32 (`128 · Σ x` taken off first
            /// for biased weights).
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn exact(&self, a: __m256i, r: usize, gi: usize) -> __m256 {
                _mm256_cvtepi32_ps(unbias(a, self.sums.add(r * self.g + gi)))
            }

            /// `out = (acc as f32 · xs) · scale [+ out]`: `matmul_q`'s order.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn plain<const MR: usize>(&self) {
                let mut acc = [[_mm256_setzero_si256(); 2]; MR];
                self.dot(&mut acc, 0, self.c / K);
                for (r, ar) in acc.iter().enumerate() {
                    let sx = _mm256_set1_ps(*self.xs.add(r));
                    for (h, &a) in ar.iter().enumerate() {
                        let v = _mm256_mul_ps(self.exact(a, r, 0), sx);
                        let v = _mm256_mul_ps(v, _mm256_loadu_ps(self.scales.add(h * 8)));
                        self.store(r, h, v);
                    }
                }
            }

            /// `out = (Σ_groups (acc_g as f32 · xs_g), in order) · scale [+ out]`:
            /// `matmul_qg`'s order.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn grouped<const MR: usize>(&self) {
                let mut accf = [[_mm256_setzero_ps(); 2]; MR];
                for gi in 0..self.g {
                    let k0 = gi * GROUP / K;
                    let k1 = ((gi + 1) * GROUP).min(self.c) / K;
                    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
                    self.dot(&mut acc, k0, k1);
                    for (r, (ar, fr)) in acc.iter().zip(accf.iter_mut()).enumerate() {
                        let sx = _mm256_set1_ps(*self.xs.add(r * self.g + gi));
                        for (&a, f) in ar.iter().zip(fr.iter_mut()) {
                            *f = _mm256_add_ps(*f, _mm256_mul_ps(self.exact(a, r, gi), sx));
                        }
                    }
                }
                for (r, fr) in accf.iter().enumerate() {
                    for (h, &f) in fr.iter().enumerate() {
                        let v = _mm256_mul_ps(f, _mm256_loadu_ps(self.scales.add(h * 8)));
                        self.store(r, h, v);
                    }
                }
            }

            /// Outputs `8h..8h+8` of row `r`.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn store(&self, r: usize, h: usize, v: __m256) {
                let dst = self.out.add(r * self.o + h * 8);
                let v = if self.add {
                    _mm256_add_ps(_mm256_loadu_ps(dst), v)
                } else {
                    v
                };
                _mm256_storeu_ps(dst, v);
            }
        }
    };
}

/// int8 products by `vpmaddwd` on i16 copies (AVX2; see the module documentation for
/// why they are exact). Weights packed as i16, `(O/16, C/2, 16, 2)`.
pub mod wide {
    use super::*;

    /// `acc + Σ` of the two i16 products in each 32-bit lane of `w` and `xb`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn step(acc: __m256i, w: __m256i, xb: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(xb, w))
    }

    /// Unbiased weights: the sums as they are.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unbias(a: __m256i, _sums: *const i32) -> __m256i {
        a
    }

    /// The activation rows widened to i16 in `work`, and the packed i16 weights, as
    /// bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn prepare(
        xq: &[i8],
        t: usize,
        c: usize,
        _grouped: bool,
        pm: &PackedMat,
        work: &mut super::super::Work,
    ) -> (*const u8, *const u8) {
        let x16 = &mut work.x16;
        x16.clear();
        x16.extend(xq.iter().take(t * c).map(|&v| v as i16));
        (x16.as_ptr() as *const u8, pm.wide.as_ptr() as *const u8)
    }

    // 4 rows: 6 measured no faster (the ports, not the loads, are the limit).
    int8_products!("avx2", 2, 4);
}

/// int8 products by 256-bit `vpdpbusd` (AVX-VNNI). Weights packed as `w + 128`,
/// `(O/16, C/4, 16, 4)` bytes.
pub mod vnni {
    use super::*;

    /// `acc + Σ` of the four products in each 32-bit lane of `w` (unsigned, `w + 128`)
    /// and `xb` (signed).
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn step(acc: __m256i, w: __m256i, xb: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, w, xb)
    }

    /// `Σ (w + 128) · x − 128 · Σ x = Σ w · x`, exactly, in i32.
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn unbias(a: __m256i, sums: *const i32) -> __m256i {
        _mm256_sub_epi32(a, _mm256_set1_epi32(*sums))
    }

    /// `128 · Σ x` per row (or row and group) in `work`; the rows and weights as bytes.
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn prepare(
        xq: &[i8],
        t: usize,
        c: usize,
        grouped: bool,
        pm: &PackedMat,
        work: &mut super::super::Work,
    ) -> (*const u8, *const u8) {
        let span = if grouped { GROUP } else { c };
        work.sums.clear();
        for row in xq.chunks_exact(c).take(t) {
            for part in row.chunks(span) {
                work.sums
                    .push(128 * part.iter().map(|&v| v as i32).sum::<i32>());
            }
        }
        (xq.as_ptr() as *const u8, pm.data.as_ptr())
    }

    // 6 rows: 15% faster than 4 on this machine.
    int8_products!("avx2,avxvnni", 4, 6);
}

/// The horizontal sum of 16 lanes (`lo` lanes 0-7, `hi` 8-15) in igpt-core's tree order:
/// `l + (l+8)`, then `+4`, `+2`, `+1`.
///
/// # Safety
/// AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
pub unsafe fn tree_sum(lo: __m256, hi: __m256) -> f32 {
    let t = _mm256_add_ps(lo, hi);
    let a = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t));
    let b = _mm_add_ps(a, _mm_movehl_ps(a, a));
    let c = _mm_add_ps(b, _mm_shuffle_ps::<0b01>(b, b));
    _mm_cvtss_f32(c)
}

/// The largest lane of `v` (no NaN lanes: callers skip them).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hmax(v: __m256) -> f32 {
    let a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let b = _mm_max_ps(a, _mm_movehl_ps(a, a));
    let c = _mm_max_ps(b, _mm_shuffle_ps::<0b01>(b, b));
    _mm_cvtss_f32(c)
}

/// `|v|`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn abs(v: __m256) -> __m256 {
    _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX)))
}

/// `max(m, |v|)` skipping NaN as `f32::max` does (`vmaxps` returns its second operand
/// when either is NaN; `m` never is).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn max_abs(v: __m256, m: __m256) -> __m256 {
    _mm256_max_ps(abs(v), m)
}

/// Lane `g` of the result = the largest lane of `m[g]` (no NaN lanes).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn reduce_max_8x8(m: &[__m256; 8]) -> __m256 {
    // Element k of 128-bit lane L: rows interleaved, halves of each row's lanes folded.
    let s =
        |a: __m256, b: __m256| _mm256_max_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    let (s01, s23, s45, s67) = (s(m[0], m[1]), s(m[2], m[3]), s(m[4], m[5]), s(m[6], m[7]));
    // Lane L of q0 = rows 0..4, each over its 128-bit lane L; q1 rows 4..8.
    let q0 = _mm256_max_ps(
        _mm256_shuffle_ps::<0x44>(s01, s23),
        _mm256_shuffle_ps::<0xEE>(s01, s23),
    );
    let q1 = _mm256_max_ps(
        _mm256_shuffle_ps::<0x44>(s45, s67),
        _mm256_shuffle_ps::<0xEE>(s45, s67),
    );
    _mm256_max_ps(
        _mm256_permute2f128_ps::<0x20>(q0, q1),
        _mm256_permute2f128_ps::<0x31>(q0, q1),
    )
}

/// `round_q(y)` (igpt-core's quantizer: half away from zero, clamped to [−127, 127], NaN
/// to 0) on 8 lanes, as i32. The magnitude is clamped to 128 before the conversion (which
/// gives `i32::MIN` above 2³¹ and for NaN, where Rust's `as` saturates).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn round8(y: __m256) -> __m256i {
    let a = _mm256_add_ps(abs(y), _mm256_set1_ps(0.5));
    // min(128, a) keeps NaN (second operand), which converts to i32::MIN, then 0.
    let a = _mm256_min_ps(_mm256_set1_ps(128.0), a);
    let m = _mm256_min_epi32(_mm256_cvttps_epi32(a), _mm256_set1_epi32(127));
    let m = _mm256_max_epi32(m, _mm256_setzero_si256());
    // Negated where y's sign bit is set (y < 0, or −0 / NaN where m is 0 anyway).
    _mm256_sign_epi32(m, _mm256_castps_si256(y))
}

/// `q = round_q(x · inv)` for `n` values (a multiple of 8).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn round_store(x: *const f32, n: usize, inv: f32, q: *mut i8) {
    let vinv = _mm256_set1_ps(inv);
    let mut i = 0;
    while i + 16 <= n {
        let a = round8(_mm256_mul_ps(_mm256_loadu_ps(x.add(i)), vinv));
        let b = round8(_mm256_mul_ps(_mm256_loadu_ps(x.add(i + 8)), vinv));
        // i16 [a0-3 b0-3 | a4-7 b4-7] → [a0-7 | b0-7] → 16 bytes (no saturation: all in
        // [−127, 127]).
        let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
        let p = _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
        _mm_storeu_si128(q.add(i) as *mut __m128i, p);
        i += 16;
    }
    if i < n {
        let a = round8(_mm256_mul_ps(_mm256_loadu_ps(x.add(i)), vinv));
        // i16 [a0-3 a0-3 | a4-7 a4-7] → [a0-3 a4-7 | ..] → 8 bytes.
        let p = _mm256_permute4x64_epi64::<0b00_00_10_00>(_mm256_packs_epi32(a, a));
        let p = _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_castsi256_si128(p));
        _mm_storel_epi64(q.add(i) as *mut __m128i, p);
    }
}

/// igpt-core's `quantize_row` scale of a row's largest magnitude: `(amax / 127, 127 /
/// amax)`, both 0 for 0.
#[inline]
fn scale_of(amax: f32) -> (f32, f32) {
    let qmax = igpt_core::quant::QMAX;
    if amax > 0.0 {
        (amax / qmax, qmax / amax)
    } else {
        (0.0, 0.0)
    }
}

/// igpt-core's `quantize_row` of `n` values (a multiple of 8) at `x` into `q`; returns
/// the scale.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn quant_row(x: *const f32, n: usize, q: *mut i8) -> f32 {
    let mut m = _mm256_setzero_ps();
    for i in (0..n).step_by(8) {
        m = max_abs(_mm256_loadu_ps(x.add(i)), m);
    }
    let (scale, inv) = scale_of(hmax(m));
    round_store(x, n, inv, q);
    scale
}

/// igpt-core's `quantize_rows` for rows of `cols` values (a multiple of 8), eight rows'
/// scales at a time.
///
/// # Safety
/// AVX2 present; `cols` a multiple of 8 dividing `x.len()`; `q` as long as `x`, `s` one
/// per row.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize(x: &[f32], cols: usize, q: &mut [i8], s: &mut [f32]) {
    let rows = (x.len() / cols).min(s.len());
    let (xp, qp, sp) = (x.as_ptr(), q.as_mut_ptr(), s.as_mut_ptr());
    let mut r0 = 0;
    while r0 + 8 <= rows {
        let mut m = [_mm256_setzero_ps(); 8];
        for (r, mr) in m.iter_mut().enumerate() {
            let xr = xp.add((r0 + r) * cols);
            for i in (0..cols).step_by(8) {
                *mr = max_abs(_mm256_loadu_ps(xr.add(i)), *mr);
            }
        }
        let inv = scales8(reduce_max_8x8(&m), sp.add(r0));
        for (r, &iv) in inv.iter().enumerate() {
            let at = (r0 + r) * cols;
            round_store(xp.add(at), cols, iv, qp.add(at));
        }
        r0 += 8;
    }
    for r in r0..rows {
        *sp.add(r) = quant_row(xp.add(r * cols), cols, qp.add(r * cols));
    }
}

/// `Σ x²` of one row of `cols` values (a multiple of 8) in igpt-core's 16 lanes, as the
/// 8 lanes after the tree's first step (`l + (l+8)`): two registers hold lanes 0-7 and
/// 8-15; a row of `16k + 8` values ends with lanes 0-7 only, as the core's last chunk
/// does.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn sum_sq(xr: *const f32, cols: usize) -> __m256 {
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= cols {
        let (a, b) = (_mm256_loadu_ps(xr.add(i)), _mm256_loadu_ps(xr.add(i + 8)));
        lo = _mm256_add_ps(lo, _mm256_mul_ps(a, a));
        hi = _mm256_add_ps(hi, _mm256_mul_ps(b, b));
        i += 16;
    }
    if i < cols {
        let a = _mm256_loadu_ps(xr.add(i));
        lo = _mm256_add_ps(lo, _mm256_mul_ps(a, a));
    }
    _mm256_add_ps(lo, hi)
}

/// Lane `r` of the result = the rest of igpt-core's halving tree over the 8 lanes of
/// `t[r]` (already `l + (l+8)`): `l + (l+4)`, then `+2`, `+1`, eight rows at once.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tree_8x8(t: &[__m256; 8]) -> __m256 {
    // c[k]: 128-bit lane 0 = row 2k's lanes l + (l+4), lane 1 = row 2k+1's.
    let mut c = [_mm256_setzero_ps(); 4];
    for (k, ck) in c.iter_mut().enumerate() {
        let (a, b) = (t[2 * k], t[2 * k + 1]);
        *ck = _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        );
    }
    // l + (l+2): e0 lane 0 = rows 0 and 2 (two sums each), lane 1 = rows 1 and 3; e1 the
    // same for rows 4-7.
    let e = |a: __m256, b: __m256| {
        _mm256_add_ps(
            _mm256_shuffle_ps::<0x44>(a, b),
            _mm256_shuffle_ps::<0xEE>(a, b),
        )
    };
    let (e0, e1) = (e(c[0], c[1]), e(c[2], c[3]));
    // l + (l+1): lane 0 = rows 0, 2, 4, 6; lane 1 = rows 1, 3, 5, 7.
    let f = _mm256_add_ps(
        _mm256_shuffle_ps::<0x88>(e0, e1),
        _mm256_shuffle_ps::<0xDD>(e0, e1),
    );
    _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// `quantize_row`'s scales of eight rows' (or groups') largest magnitudes `amax`:
/// stores `amax / 127` (0 for 0) at `s`, returns `127 / amax` (0 for 0).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scales8(amax: __m256, s: *mut f32) -> [f32; 8] {
    let qmax = _mm256_set1_ps(igpt_core::quant::QMAX);
    let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(amax, _mm256_setzero_ps());
    _mm256_storeu_ps(s, _mm256_and_ps(_mm256_div_ps(amax, qmax), pos));
    let mut inv = [0f32; 8];
    _mm256_storeu_ps(
        inv.as_mut_ptr(),
        _mm256_and_ps(_mm256_div_ps(qmax, amax), pos),
    );
    inv
}

/// igpt-core's `rmsnorm` of each row (into `tmp`), then `quantize_rows`: `Σ x²` in the
/// core's lanes and tree order ([`sum_sq`], [`tree_8x8`] / [`tree_sum`]), `rms_inv`, then
/// `(x · inv) · g`; eight rows at a time, so their reductions and scales are vector
/// operations.
///
/// # Safety
/// AVX2 present; `cols` a multiple of 8 dividing `x.len()`, `gain` `4·cols` bytes, `tmp`
/// and `q` as long as `x`, `s` one per row.
#[target_feature(enable = "avx2")]
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
    let (xp, tp, qp, sp) = (x.as_ptr(), tmp.as_mut_ptr(), q.as_mut_ptr(), s.as_mut_ptr());
    // (x · inv) · g into tmp; returns the largest magnitude's lanes.
    let scale_row = |r: usize, inv: f32| {
        let (xr, tr) = (xp.add(r * cols), tp.add(r * cols));
        let inv = _mm256_set1_ps(inv);
        let mut m = _mm256_setzero_ps();
        for i in (0..cols).step_by(8) {
            let v = _mm256_mul_ps(_mm256_loadu_ps(xr.add(i)), inv);
            let y = _mm256_mul_ps(v, _mm256_loadu_ps(gp.add(i)));
            _mm256_storeu_ps(tr.add(i), y);
            m = max_abs(y, m);
        }
        m
    };
    let mut r0 = 0;
    while r0 + 8 <= rows {
        let mut t = [_mm256_setzero_ps(); 8];
        for (r, tr) in t.iter_mut().enumerate() {
            *tr = sum_sq(xp.add((r0 + r) * cols), cols);
        }
        // rms_inv on 8 rows: 1 / sqrt(Σx² / n + eps), each step correctly rounded.
        let ms = _mm256_div_ps(tree_8x8(&t), _mm256_set1_ps(cols as f32));
        let ms = _mm256_add_ps(ms, _mm256_set1_ps(igpt_core::model::NORM_EPS));
        let inv = _mm256_div_ps(_mm256_set1_ps(1.0), _mm256_sqrt_ps(ms));
        let mut invs = [0f32; 8];
        _mm256_storeu_ps(invs.as_mut_ptr(), inv);
        let mut m = [_mm256_setzero_ps(); 8];
        for (r, (mr, &iv)) in m.iter_mut().zip(&invs).enumerate() {
            *mr = scale_row(r0 + r, iv);
        }
        let qinv = scales8(reduce_max_8x8(&m), sp.add(r0));
        for (r, &iv) in qinv.iter().enumerate() {
            let at = (r0 + r) * cols;
            round_store(tp.add(at), cols, iv, qp.add(at));
        }
        r0 += 8;
    }
    for r in r0..rows {
        let t = sum_sq(xp.add(r * cols), cols);
        let zero = _mm256_setzero_ps();
        let inv = igpt_core::kernels::rms_inv(tree_sum(t, zero), cols);
        let (scale, qinv) = scale_of(hmax(scale_row(r, inv)));
        *sp.add(r) = scale;
        round_store(tp.add(r * cols), cols, qinv, qp.add(r * cols));
    }
}

/// igpt-core's `quick_gelu` on `h` in place, then `quantize_groups` (rows a multiple of
/// `GROUP` long, so every group is whole); the scales of eight groups at a time from
/// one vector of their maxima.
///
/// # Safety
/// AVX2 present; `q` as long as `h`, `s` one per group.
#[target_feature(enable = "avx2")]
pub unsafe fn gelu_quant(h: &mut [f32], q: &mut [i8], s: &mut [f32]) {
    const { assert!(GROUP == 32) };
    let ng = (h.len() / GROUP).min(s.len());
    let (hp, qp, sp) = (h.as_mut_ptr(), q.as_mut_ptr(), s.as_mut_ptr());
    let mut g0 = 0;
    while g0 + 8 <= ng {
        let p = hp.add(g0 * GROUP);
        let mut m = [_mm256_setzero_ps(); 8];
        for (g, mg) in m.iter_mut().enumerate() {
            let at = p.add(g * GROUP);
            let y = gelu8x([0, 8, 16, 24].map(|i| _mm256_loadu_ps(at.add(i))));
            for (i, &yi) in y.iter().enumerate() {
                _mm256_storeu_ps(at.add(8 * i), yi);
                *mg = max_abs(yi, *mg);
            }
        }
        let inv = scales8(reduce_max_8x8(&m), sp.add(g0));
        for (g, &iv) in inv.iter().enumerate() {
            let at = (g0 + g) * GROUP;
            round_store(hp.add(at), GROUP, iv, qp.add(at));
        }
        g0 += 8;
    }
    for gi in g0..ng {
        let p = hp.add(gi * GROUP);
        for i in (0..GROUP).step_by(8) {
            _mm256_storeu_ps(p.add(i), gelu8(_mm256_loadu_ps(p.add(i))));
        }
        *sp.add(gi) = quant_row(p, GROUP, qp.add(gi * GROUP));
    }
}

/// igpt-core's `quick_gelu` on 8 lanes: `v / (1 + fast_exp(-1.702 · v))`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn gelu8(v: __m256) -> __m256 {
    gelu8x([v])[0]
}

/// [`gelu8`] on `N` vectors, step by step across them (see [`exp8x`]).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn gelu8x<const N: usize>(v: [__m256; N]) -> [__m256; N] {
    let c = _mm256_set1_ps(-igpt_core::model::QUICK_GELU);
    let e = exp8x(v.map(|x| _mm256_mul_ps(c, x)));
    let one = _mm256_set1_ps(1.0);
    std::array::from_fn(|i| _mm256_div_ps(v[i], _mm256_add_ps(one, e[i])))
}

/// igpt-core's `fast_exp` on 8 lanes, operation for operation (no fused multiply-adds,
/// as the scalar code has none).
///
/// # Safety
/// AVX2 present.
#[inline]
#[target_feature(enable = "avx2")]
pub unsafe fn exp8(x: __m256) -> __m256 {
    exp8x([x])[0]
}

/// [`exp8`] on `N` vectors, each step on all of them before the next: the polynomial is
/// one long dependency chain, and a CPU's scheduler holds only a few chains written one
/// after another, so interleaving them in the instruction stream is what lets them
/// overlap.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn exp8x<const N: usize>(x: [__m256; N]) -> [__m256; N] {
    const ROUND: f32 = 12_582_912.0;
    let s = _mm256_set1_ps;
    // `f32::clamp`: NaN stays NaN (`vmaxps` / `vminps` return the second operand when
    // either is NaN, so the input goes second).
    let x = x.map(|x| _mm256_min_ps(s(88.0), _mm256_max_ps(s(-87.0), x)));
    let n = x.map(|x| _mm256_mul_ps(x, s(std::f32::consts::LOG2_E)));
    let n = n.map(|n| _mm256_sub_ps(_mm256_add_ps(n, s(ROUND)), s(ROUND)));
    let mut r: [__m256; N] =
        std::array::from_fn(|i| _mm256_sub_ps(x[i], _mm256_mul_ps(n[i], s(0.693_145_75))));
    for (ri, &ni) in r.iter_mut().zip(&n) {
        *ri = _mm256_sub_ps(*ri, _mm256_mul_ps(ni, s(1.428_606_8e-6)));
    }
    let mut p = [s(1.0 / 720.0); N];
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        for (pi, &ri) in p.iter_mut().zip(&r) {
            *pi = _mm256_add_ps(_mm256_mul_ps(*pi, ri), s(c));
        }
    }
    std::array::from_fn(|i| {
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvttps_epi32(n[i]),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p[i], _mm256_castsi256_ps(bits))
    })
}

/// All-ones in the lanes of 8-lane block `b` below `seen`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn lanes_below(seen: usize, b: usize) -> __m256 {
    let left = seen.saturating_sub(b * 8).min(8) as i32;
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(left), iota))
}

/// Writes the transpose of the 8x8 tile at `src` (rows `ss` apart) to `dst` (rows `ds`
/// apart).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn transpose_8x8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    let mut r = [_mm256_setzero_ps(); 8];
    for (i, ri) in r.iter_mut().enumerate() {
        *ri = _mm256_loadu_ps(src.add(i * ss));
    }
    // Pairs of rows: in each 128-bit lane, [a0 b0 a1 b1] and [a2 b2 a3 b3].
    let mut t = [_mm256_setzero_ps(); 8];
    for k in 0..4 {
        t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    // Quads of rows: u[4k + c], 128-bit lane L = rows 4k..4k+4 at column 4L + c.
    let mut u = [_mm256_setzero_ps(); 8];
    for k in 0..2 {
        u[4 * k] = _mm256_shuffle_ps::<0x44>(t[4 * k], t[4 * k + 2]);
        u[4 * k + 1] = _mm256_shuffle_ps::<0xEE>(t[4 * k], t[4 * k + 2]);
        u[4 * k + 2] = _mm256_shuffle_ps::<0x44>(t[4 * k + 1], t[4 * k + 3]);
        u[4 * k + 3] = _mm256_shuffle_ps::<0xEE>(t[4 * k + 1], t[4 * k + 3]);
    }
    // Column c = lane 0 of u[c] and u[4 + c]; column 4 + c = their lane 1.
    for c in 0..4 {
        _mm256_storeu_ps(
            dst.add(c * ds),
            _mm256_permute2f128_ps::<0x20>(u[c], u[4 + c]),
        );
        _mm256_storeu_ps(
            dst.add((4 + c) * ds),
            _mm256_permute2f128_ps::<0x31>(u[c], u[4 + c]),
        );
    }
}

/// Query rows per attention tile (6: 3% faster than 4 on this machine).
const ATT_ROWS: usize = 6;

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

    /// Rows `i0..i0+MR` of head `h`: scores, softmax, values.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn rows<const MR: usize>(&self, h: usize, i0: usize) {
        for jb in 0..self.seen(i0 + MR - 1).div_ceil(16) {
            self.scores::<MR>(h, i0, jb);
        }
        let mut seen = [0usize; MR];
        for (r, sr) in seen.iter_mut().enumerate() {
            *sr = self.seen(i0 + r);
        }
        for (r, &n) in seen.iter().enumerate() {
            softmax_row(self.probs.add(r * self.sp), n);
        }
        // Three rows at a time (5% faster than two here), 32 of the head's inputs at a
        // time.
        let mut r = 0;
        while r < MR {
            let n = (MR - r).min(3);
            let mut e = 0;
            while e < self.hd {
                match ((self.hd - e) / 8, n) {
                    (1, 1) => self.values::<1, 1>(h, i0, r, e),
                    (2, 1) => self.values::<1, 2>(h, i0, r, e),
                    (3, 1) => self.values::<1, 3>(h, i0, r, e),
                    (_, 1) => self.values::<1, 4>(h, i0, r, e),
                    (1, 2) => self.values::<2, 1>(h, i0, r, e),
                    (2, 2) => self.values::<2, 2>(h, i0, r, e),
                    (3, 2) => self.values::<2, 3>(h, i0, r, e),
                    (_, 2) => self.values::<2, 4>(h, i0, r, e),
                    (1, _) => self.values::<3, 1>(h, i0, r, e),
                    (2, _) => self.values::<3, 2>(h, i0, r, e),
                    (3, _) => self.values::<3, 3>(h, i0, r, e),
                    (_, _) => self.values::<3, 4>(h, i0, r, e),
                }
                e += 32;
            }
            r += n;
        }
    }

    /// `out_e = Σ_j p_j · v_je`, `j` in order, for rows `i0+r .. i0+r+R` (probabilities
    /// at tile rows `r..r+R`) and the head's inputs `e0 .. e0+8·CH`: the rows together
    /// while all see position `j`, then the later rows' tails.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn values<const R: usize, const CH: usize>(
        &self,
        h: usize,
        i0: usize,
        r: usize,
        e0: usize,
    ) {
        let common = self.seen(i0 + r);
        let col = h * self.hd + e0;
        let mut o = [[_mm256_setzero_ps(); CH]; R];
        for j in 0..common {
            let vr = self.vals.add(j * self.d + col);
            let mut p = [_mm256_setzero_ps(); R];
            for (k, pk) in p.iter_mut().enumerate() {
                *pk = _mm256_set1_ps(*self.probs.add((r + k) * self.sp + j));
            }
            for v in 0..CH {
                let vv = _mm256_loadu_ps(vr.add(v * 8));
                for (ok, &pk) in o.iter_mut().zip(&p) {
                    ok[v] = _mm256_add_ps(ok[v], _mm256_mul_ps(pk, vv));
                }
            }
        }
        for (k, ok) in o.iter_mut().enumerate() {
            for j in common..self.seen(i0 + r + k) {
                let p = _mm256_set1_ps(*self.probs.add((r + k) * self.sp + j));
                let vr = self.vals.add(j * self.d + col);
                for (v, ov) in ok.iter_mut().enumerate() {
                    *ov = _mm256_add_ps(*ov, _mm256_mul_ps(p, _mm256_loadu_ps(vr.add(v * 8))));
                }
            }
            let orow = self.out.add((i0 + r + k) * self.d + col);
            for (v, &ov) in ok.iter().enumerate() {
                _mm256_storeu_ps(orow.add(v * 8), ov);
            }
        }
    }

    /// Scores of rows `i0..i0+MR` against positions `16·jb .. 16·jb+16`:
    /// `(Σ_e q_e · kᵀ[e][j], e in order) · scale`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn scores<const MR: usize>(&self, h: usize, i0: usize, jb: usize) {
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for e in 0..self.hd {
            let kr = self.kt.add((h * self.hd + e) * self.sp + jb * 16);
            let (k0, k1) = (_mm256_loadu_ps(kr), _mm256_loadu_ps(kr.add(8)));
            for (r, ar) in acc.iter_mut().enumerate() {
                let qv = _mm256_set1_ps(*self.q.add((i0 + r) * self.d + h * self.hd + e));
                ar[0] = _mm256_add_ps(ar[0], _mm256_mul_ps(qv, k0));
                ar[1] = _mm256_add_ps(ar[1], _mm256_mul_ps(qv, k1));
            }
        }
        let scale = _mm256_set1_ps(self.scale);
        for (r, ar) in acc.iter().enumerate() {
            let dst = self.probs.add(r * self.sp + jb * 16);
            _mm256_storeu_ps(dst, _mm256_mul_ps(ar[0], scale));
            _mm256_storeu_ps(dst.add(8), _mm256_mul_ps(ar[1], scale));
        }
    }
}

/// igpt-core's `softmax` of the `seen` values at `p` in place: the maximum (NaN skipped,
/// as `f32::max` skips it in `max_f32`; two accumulators, the order does not matter),
/// `fast_exp(x - max)`, their sum in the core's 16 lanes (8-position blocks alternate
/// between `lo`, lanes 0-7, and `hi`, 8-15) and tree, then the scaling. Only the last,
/// partial block is masked; positions past `seen` are left as they are (no one reads
/// them).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn softmax_row(p: *mut f32, seen: usize) {
    let (full, tail) = (seen / 8, seen % 8);
    let mask = lanes_below(seen, full);
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let (mut m0, mut m1) = (ninf, ninf);
    let mut b = 0;
    while b + 2 <= full {
        m0 = _mm256_max_ps(_mm256_loadu_ps(p.add(8 * b)), m0);
        m1 = _mm256_max_ps(_mm256_loadu_ps(p.add(8 * b + 8)), m1);
        b += 2;
    }
    if b < full {
        m0 = _mm256_max_ps(_mm256_loadu_ps(p.add(8 * b)), m0);
    }
    if tail > 0 {
        let x = _mm256_blendv_ps(ninf, _mm256_loadu_ps(p.add(8 * full)), mask);
        m1 = _mm256_max_ps(x, m1);
    }
    let m = _mm256_set1_ps(hmax(_mm256_max_ps(m0, m1)));
    // exp of the blocks b..b+N, stored.
    let e = |b: usize, n: usize| {
        let x = |k: usize| _mm256_sub_ps(_mm256_loadu_ps(p.add(8 * (b + k))), m);
        let mut out = [_mm256_setzero_ps(); 4];
        match n {
            4 => out = exp8x([x(0), x(1), x(2), x(3)]),
            2 => out[..2].copy_from_slice(&exp8x([x(0), x(1)])),
            _ => out[0] = exp8(x(0)),
        }
        for (k, &ek) in out.iter().enumerate().take(n) {
            _mm256_storeu_ps(p.add(8 * (b + k)), ek);
        }
        out
    };
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut b = 0;
    // Four blocks at a time (their exponentials interleaved), then two, then one; even
    // blocks into `lo`, odd into `hi`, each in order.
    while b + 4 <= full {
        let x = e(b, 4);
        lo = _mm256_add_ps(_mm256_add_ps(lo, x[0]), x[2]);
        hi = _mm256_add_ps(_mm256_add_ps(hi, x[1]), x[3]);
        b += 4;
    }
    if b + 2 <= full {
        let x = e(b, 2);
        lo = _mm256_add_ps(lo, x[0]);
        hi = _mm256_add_ps(hi, x[1]);
        b += 2;
    }
    if b < full {
        lo = _mm256_add_ps(lo, e(b, 1)[0]);
    }
    if tail > 0 {
        let at = 8 * full;
        let x = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(at)), m)), mask);
        _mm256_storeu_ps(p.add(at), x);
        // Zeros in the masked lanes: adding +0 leaves a (non-negative) sum as it is.
        if full % 2 == 0 {
            lo = _mm256_add_ps(lo, x);
        } else {
            hi = _mm256_add_ps(hi, x);
        }
    }
    let total = tree_sum(lo, hi);
    let inv = _mm256_set1_ps(if total > 0.0 { 1.0 / total } else { 0.0 });
    for b in 0..seen.div_ceil(8) {
        let q = p.add(8 * b);
        _mm256_storeu_ps(q, _mm256_mul_ps(_mm256_loadu_ps(q), inv));
    }
}

/// igpt-core's `attention`, with the keys transposed into `kt` so 8 positions' scores
/// are one vector, [`ATT_ROWS`] query rows at a time.
///
/// # Safety
/// AVX2 present; shapes as checked by the caller (`hd` a multiple of 8, `d` a multiple
/// of `hd`, keys and values of `p0 + T` rows).
#[target_feature(enable = "avx2")]
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
    if probs.len() < ATT_ROWS * sp {
        probs.resize(ATT_ROWS * sp, 0.0);
    }
    // kᵀ: 8x8 tiles in registers, the last span % 8 positions one by one.
    let whole = span / 8 * 8;
    for j0 in (0..whole).step_by(8) {
        for c0 in (0..d).step_by(8) {
            let src = a.keys.as_ptr().add(j0 * d + c0);
            transpose_8x8(src, d, kt.as_mut_ptr().add(c0 * sp + j0), sp);
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
    for h in 0..d / hd {
        let mut i0 = 0;
        while i0 < t {
            let mr = (t - i0).min(ATT_ROWS);
            match mr {
                6 => cx.rows::<6>(h, i0),
                5 => cx.rows::<5>(h, i0),
                4 => cx.rows::<4>(h, i0),
                3 => cx.rows::<3>(h, i0),
                2 => cx.rows::<2>(h, i0),
                _ => cx.rows::<1>(h, i0),
            }
            i0 += mr;
        }
    }
}
