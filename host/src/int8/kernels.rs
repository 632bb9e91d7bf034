//! The host's vector kernels for igpt-core's int8 forward pass, plugged in through
//! [`igpt_core::kernels::Ops`]: the int8 matrix products with AVX-512 VNNI (`vpdpbusd`,
//! 64 multiply-adds per instruction) on weights repacked once per model, and attention
//! with AVX-512 over a transposed copy of the keys.
//!
//! Every kernel computes exactly what igpt-core's portable function computes, in the same
//! order, so results are equal bit for bit (the tests check it on random shapes and on
//! whole models; the firmware examples check the portable path against the same
//! predictions). On a CPU without AVX-512 VNNI, or for shapes the kernels do not take
//! (outputs not a multiple of 16, inputs not a multiple of 4, head width not a multiple
//! of 16 or above 128), the portable functions run.
//!
//! The int8 product. `vpdpbusd` multiplies unsigned bytes by signed bytes, four at a time,
//! summing into i32 lanes. The weights are stored as `w + 128` (unsigned), the activations
//! stay signed (broadcast four at a time), and `128 · Σ x` is subtracted afterwards:
//! `Σ (w + 128) · x − 128 · Σ x = Σ w · x`, exactly, in i32 (no saturation: |Σ| ≤ 255 ·
//! 127 · C). Packed layout of an `(O, C)` matrix: blocks of 16 outputs, in each block
//! `C/4` groups of 64 bytes (16 outputs × 4 consecutive inputs), so one 64-byte load feeds
//! one instruction for 16 outputs.

use igpt_core::kernels::{self as ck, AttnArgs, Mat, Ops};
use igpt_core::weights::QMat;
use igpt_core::Model;

/// One int8 matrix repacked for `vpdpbusd` (see the module documentation).
#[derive(Debug, Clone)]
pub struct PackedMat {
    rows: usize,
    cols: usize,
    /// `(rows/16, cols/4, 16, 4)` bytes of `w + 128`.
    data: Vec<u8>,
    /// One scale per output row.
    scales: Vec<f32>,
}

impl PackedMat {
    /// Repacks `w`, or `None` for a shape the kernels do not take.
    pub fn new(w: &QMat<'_>) -> Option<PackedMat> {
        let (o, c) = (w.rows, w.cols);
        if o == 0 || c == 0 || !o.is_multiple_of(16) || !c.is_multiple_of(4) {
            return None;
        }
        let mut data = vec![0u8; o * c];
        for (r, row) in w.data.chunks_exact(c).enumerate() {
            let (b, lane) = (r / 16, r % 16);
            for (kq, four) in row.chunks_exact(4).enumerate() {
                let at = b * 16 * c + kq * 64 + lane * 4;
                for (dst, &v) in data[at..at + 4].iter_mut().zip(four) {
                    *dst = v ^ 0x80;
                }
            }
        }
        let scales = (0..o).map(|r| w.scale(r)).collect();
        Some(PackedMat {
            rows: o,
            cols: c,
            data,
            scales,
        })
    }
}

/// A model's matrices repacked, made once per model and shared by every thread.
#[derive(Debug, Clone)]
pub struct Packed {
    /// `[layer][Mat::index]` for the six block matrices.
    blocks: Vec<[Option<PackedMat>; 6]>,
    head: Option<PackedMat>,
    /// The CPU has what the kernels need.
    simd: bool,
}

/// True when this CPU runs the vector kernels (x86-64 with AVX-512 F, BW and VNNI).
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Packed {
    /// Repacks every stored matrix of `model` when the CPU has the vector kernels;
    /// otherwise holds nothing and every operation runs the portable code.
    pub fn new(model: &Model<'_>) -> igpt_core::Result<Packed> {
        Self::with_simd(model, simd_available())
    }

    /// [`Packed::new`] with the vector kernels forced off (`simd = false`) or left to
    /// the CPU check; used by the tests and `bench infer` to time both.
    pub fn with_simd(model: &Model<'_>, simd: bool) -> igpt_core::Result<Packed> {
        let simd = simd && simd_available();
        let mut blocks = Vec::new();
        let mut head = None;
        if simd {
            let w = model.weights();
            for l in 0..model.stored_layers() {
                let b = w.block(l)?;
                blocks.push(
                    [&b.q, &b.k, &b.v, &b.c_proj, &b.c_fc, &b.mlp_proj].map(|m| PackedMat::new(m)),
                );
            }
            if model.has_head() {
                head = PackedMat::new(&w.head()?.1);
            }
        }
        Ok(Packed { blocks, head, simd })
    }

    /// True when the vector kernels run.
    pub fn simd(&self) -> bool {
        self.simd
    }

    fn get(&self, layer: usize, which: Mat) -> Option<&PackedMat> {
        if which == Mat::Head {
            return self.head.as_ref();
        }
        self.blocks.get(layer)?.get(which.index())?.as_ref()
    }

    /// The per-thread operations over these packed weights; run them only on the model
    /// they were packed from (they are looked up by layer and matrix).
    pub fn ops(&self) -> FastOps<'_> {
        FastOps {
            packed: self,
            sums: Vec::new(),
            kt: Vec::new(),
            probs: Vec::new(),
        }
    }
}

/// [`Ops`] with the vector kernels; one per thread (it owns small work buffers). Its
/// methods are `#[inline(always)]` so that, inside a caller compiled for AVX-512 / AVX2
/// (`igpt::int8::classify`), the portable fallbacks are compiled for it too.
#[derive(Debug)]
pub struct FastOps<'p> {
    packed: &'p Packed,
    /// `128 · Σ x` per activation row (or row and group).
    sums: Vec<i32>,
    /// Keys transposed: `(d, span rounded up to 16)`.
    kt: Vec<f32>,
    /// Scores, then probabilities, of four query rows.
    probs: Vec<f32>,
}

/// Checks that a product's buffers have the lengths of `T` rows of `pm`; returns `T`.
fn rows_of(
    pm: &PackedMat,
    out: &[f32],
    xq: &[i8],
    xs: &[f32],
    scales_per_row: usize,
) -> Option<usize> {
    let t = out.len() / pm.rows;
    (out.len() == t * pm.rows && xq.len() >= t * pm.cols && xs.len() >= t * scales_per_row)
        .then_some(t)
}

impl FastOps<'_> {
    /// The VNNI product by matrix `which` of block `layer` (`matmul_qg`'s when
    /// `grouped`, else `matmul_q`'s), when that matrix was packed and the buffers fit it;
    /// false when the portable code must run instead.
    #[inline(always)]
    fn vnni(
        &mut self,
        (layer, which, grouped): (usize, Mat, bool),
        out: &mut [f32],
        xq: &[i8],
        xs: &[f32],
        w: &QMat<'_>,
        add: bool,
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if let Some(pm) = self.packed.get(layer, which) {
            let per_row = if grouped { ck::groups(pm.cols) } else { 1 };
            if pm.rows == w.rows && pm.cols == w.cols {
                if let Some(t) = rows_of(pm, out, xq, xs, per_row) {
                    // SAFETY: `simd` was checked at packing (no packed matrix otherwise);
                    // the lengths were checked just above.
                    unsafe { x86::matmul(out, xq, xs, pm, add, t, grouped, &mut self.sums) };
                    return true;
                }
            }
        }
        let _ = (layer, which, grouped, out, xq, xs, w, add);
        false
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    /// With the vector kernels on, the number of rows of `cols` values (a multiple of
    /// `unit`) in `len` values, when they divide exactly.
    fn rows(&self, len: usize, cols: usize, unit: usize) -> Option<usize> {
        (self.packed.simd && cols > 0 && cols.is_multiple_of(unit) && len.is_multiple_of(cols))
            .then(|| len / cols)
    }
}

impl Ops for FastOps<'_> {
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
        #[cfg(target_arch = "x86_64")]
        if self.rows(x.len(), cols, 16).is_some_and(|t| {
            gain.len() == cols * 4 && tmp.len() >= x.len() && q.len() >= x.len() && s.len() >= t
        }) {
            // SAFETY: AVX-512 present (`simd`); lengths checked just above.
            unsafe { x86::norm_quant(x, cols, gain, tmp, q, s) };
            return;
        }
        ck::Portable.norm_quant(x, cols, gain, tmp, q, s);
    }

    #[inline(always)]
    fn quantize(&mut self, x: &[f32], cols: usize, q: &mut [i8], s: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self
            .rows(x.len(), cols, 16)
            .is_some_and(|t| q.len() >= x.len() && s.len() >= t)
        {
            // SAFETY: as above.
            unsafe { x86::quantize(x, cols, q, s) };
            return;
        }
        ck::Portable.quantize(x, cols, q, s);
    }

    #[inline(always)]
    fn gelu_quant(&mut self, h: &mut [f32], cols: usize, q: &mut [i8], s: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self
            .rows(h.len(), cols, ck::GROUP)
            .is_some_and(|_| q.len() >= h.len() && s.len() >= h.len() / ck::GROUP)
        {
            // SAFETY: as above.
            unsafe { x86::gelu_quant(h, q, s) };
            return;
        }
        ck::Portable.gelu_quant(h, cols, q, s);
    }

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
        if !self.vnni((layer, which, false), out, xq, xs, w, add) {
            ck::matmul_q(out, xq, xs, w, add);
        }
    }

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
        if !self.vnni((layer, Mat::MlpProj, true), out, xq, xs, w, add) {
            ck::matmul_qg(out, xq, xs, w, add);
        }
    }

    #[inline(always)]
    fn attention(&mut self, out: &mut [f32], a: &AttnArgs<'_>, work: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.packed.simd {
            let (d, hd) = (a.width, a.head_dim);
            let ok = d > 0
                && hd > 0
                && hd.is_multiple_of(16)
                && hd <= 16 * x86::MAX_HV
                && d.is_multiple_of(hd)
                && out.len().is_multiple_of(d)
                && a.q.len() == out.len()
                && a.keys.len() == a.vals.len()
                && a.keys.len().is_multiple_of(d)
                && a.keys.len() / d == a.p0 + out.len() / d;
            if ok {
                // SAFETY: `simd` is only true on a CPU with AVX-512 F/BW/VNNI; the shapes
                // were checked just above.
                unsafe { x86::attention(out, a, &mut self.kt, &mut self.probs) };
                return;
            }
        }
        ck::attention(out, a, work);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
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
            for (g, mg) in m.iter_mut().enumerate() {
                for i in [0, 16] {
                    let y = gelu16(_mm512_loadu_ps(p.add(g * GROUP + i)));
                    _mm512_storeu_ps(p.add(g * GROUP + i), y);
                    *mg = _mm512_max_ps(_mm512_abs_ps(y), *mg);
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
        let c = _mm512_set1_ps(-igpt_core::model::QUICK_GELU);
        let e = exp16(_mm512_mul_ps(c, v));
        _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0), e))
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
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp16(x: __m512) -> __m512 {
        const ROUND: f32 = 12_582_912.0;
        let s = _mm512_set1_ps;
        let x = _mm512_min_ps(_mm512_max_ps(x, s(-87.0)), s(88.0));
        let n = _mm512_mul_ps(x, s(std::f32::consts::LOG2_E));
        let n = _mm512_sub_ps(_mm512_add_ps(n, s(ROUND)), s(ROUND));
        let r = _mm512_sub_ps(x, _mm512_mul_ps(n, s(0.693_145_75)));
        let r = _mm512_sub_ps(r, _mm512_mul_ps(n, s(1.428_606_8e-6)));
        let mut p = s(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_add_ps(_mm512_mul_ps(p, r), s(c));
        }
        let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvttps_epi32(n),
            _mm512_set1_epi32(127),
        ));
        _mm512_mul_ps(p, _mm512_castsi512_ps(bits))
    }

    /// The lanes' sum in igpt-core's `sum_f32` tree order: `l + (l+8)`, then `+4`, `+2`,
    /// `+1`.
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
                v = _mm512_max_ps(v, x);
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
}

/// The 16-lane twins of igpt-core's scalar functions, on slices, for the tests.
#[cfg(all(test, target_arch = "x86_64"))]
mod twins {
    /// `fast_exp` on each value through the 16-lane kernel (`None` without AVX-512).
    pub fn exp(x: &[f32]) -> Option<Vec<f32>> {
        if !super::simd_available() {
            return None;
        }
        let mut out = Vec::with_capacity(x.len());
        for ch in x.chunks(16) {
            let mut buf = [0f32; 16];
            buf[..ch.len()].copy_from_slice(ch);
            // SAFETY: AVX-512 F checked above; `buf` holds 16 values.
            unsafe {
                use std::arch::x86_64::*;
                let v = super::x86::exp16(_mm512_loadu_ps(buf.as_ptr()));
                _mm512_storeu_ps(buf.as_mut_ptr(), v);
            }
            out.extend_from_slice(&buf[..ch.len()]);
        }
        Some(out)
    }

    /// `sum_f32`'s tree over 16 lanes through the vector kernel.
    pub fn tree_sum(lanes: &[f32; 16]) -> Option<f32> {
        if !super::simd_available() {
            return None;
        }
        // SAFETY: AVX-512 F checked above.
        Some(unsafe { super::x86::tree_sum(std::arch::x86_64::_mm512_loadu_ps(lanes.as_ptr())) })
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    //! Each vector kernel against igpt-core's portable function, compared bit for bit, on
    //! shapes that exercise every remainder (rows not a multiple of 4, blocks not a
    //! multiple of 4, a last group shorter than 32, positions not a multiple of 16).
    use super::*;
    use igpt_core::quant::write_qmat;
    use rand::{Rng, SeedableRng};

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(7)
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Skips (with a line saying so) on a CPU without the kernels: there is nothing to
    /// compare there.
    fn have_simd() -> bool {
        let ok = simd_available();
        if !ok {
            eprintln!("skipped: this CPU has no AVX-512 VNNI, the vector kernels never run");
        }
        ok
    }

    fn ops(simd: bool) -> FastOps<'static> {
        let p = Box::leak(Box::new(Packed {
            blocks: Vec::new(),
            head: None,
            simd,
        }));
        p.ops()
    }

    #[test]
    fn int8_products_equal_portable() {
        if !have_simd() {
            return;
        }
        let mut r = rng();
        let mut compared = 0;
        for &(o, c) in &[
            (16, 4),
            (48, 36),
            (64, 128),
            (80, 96),
            (128, 100),
            (16, 512),
        ] {
            let w: Vec<f32> = (0..o * c).map(|_| r.gen_range(-1.0..1.0)).collect();
            let mut bytes = vec![0u8; igpt_core::format::qmat_bytes(o, c)];
            write_qmat(&w, o, c, &mut bytes).unwrap();
            let m = QMat::from_bytes(&bytes, o, c).unwrap();
            let pm = PackedMat::new(&m).unwrap();
            let packed = Packed {
                blocks: vec![std::array::from_fn(|_| Some(pm.clone()))],
                head: None,
                simd: true,
            };
            for t in [1usize, 3, 5, 16] {
                let xq: Vec<i8> = (0..t * c).map(|_| r.gen_range(-127..=127)).collect();
                let g = ck::groups(c);
                let xs: Vec<f32> = (0..t * g).map(|_| r.gen_range(0.001..0.1)).collect();
                for add in [false, true] {
                    let init: Vec<f32> = (0..t * o).map(|_| r.gen_range(-1.0..1.0)).collect();
                    let (mut a, mut b) = (init.clone(), init.clone());
                    packed
                        .ops()
                        .matmul(0, Mat::Q, &mut a, &xq, &xs[..t], &m, add);
                    ck::matmul_q_ref(&mut b, &xq, &xs[..t], &m, add);
                    assert_eq!(bits(&a), bits(&b), "matmul o={o} c={c} t={t} add={add}");
                    let (mut a, mut b) = (init.clone(), init);
                    packed.ops().matmul_grouped(0, &mut a, &xq, &xs, &m, add);
                    ck::matmul_qg(&mut b, &xq, &xs, &m, add);
                    assert_eq!(bits(&a), bits(&b), "grouped o={o} c={c} t={t} add={add}");
                    compared += 2;
                }
            }
        }
        assert_eq!(compared, 6 * 4 * 2 * 2);
        // Shapes the kernels do not take are refused at packing (the portable code runs).
        let bytes = vec![0u8; igpt_core::format::qmat_bytes(15, 8)];
        assert!(PackedMat::new(&QMat::from_bytes(&bytes, 15, 8).unwrap()).is_none());
    }

    #[test]
    fn attention_equals_portable() {
        if !have_simd() {
            return;
        }
        let mut r = rng();
        for &(d, hd) in &[(64usize, 32usize), (48, 16), (128, 128)] {
            for &(p0, t) in &[(0usize, 1usize), (0, 7), (0, 37), (5, 1), (20, 13)] {
                for causal in [true, false] {
                    if !causal && p0 > 0 {
                        continue;
                    }
                    let span = p0 + t;
                    let q: Vec<f32> = (0..t * d).map(|_| r.gen_range(-2.0..2.0)).collect();
                    let k: Vec<f32> = (0..span * d).map(|_| r.gen_range(-2.0..2.0)).collect();
                    let v: Vec<f32> = (0..span * d).map(|_| r.gen_range(-2.0..2.0)).collect();
                    let a = AttnArgs {
                        q: &q,
                        keys: &k,
                        vals: &v,
                        p0,
                        causal,
                        width: d,
                        head_dim: hd,
                        scale: 1.0 / (hd as f32).sqrt(),
                    };
                    let mut sc = vec![0f32; span * (hd + 1)];
                    let (mut fast, mut plain) = (vec![9f32; t * d], vec![7f32; t * d]);
                    ops(true).attention(&mut fast, &a, &mut sc);
                    ck::attention(&mut plain, &a, &mut sc);
                    let what = format!("d={d} hd={hd} p0={p0} t={t} causal={causal}");
                    assert_eq!(bits(&fast), bits(&plain), "{what}");
                }
            }
        }
    }

    #[test]
    fn norm_quantize_and_gelu_equal_portable() {
        if !have_simd() {
            return;
        }
        let mut r = rng();
        let (t, d) = (37usize, 48usize);
        let gain: Vec<u8> = (0..d)
            .flat_map(|_| r.gen_range(0.3f32..1.5).to_le_bytes())
            .collect();
        let mut x: Vec<f32> = (0..t * d).map(|_| r.gen_range(-3.0..3.0)).collect();
        // A zero row (scale 0) and a row with one huge value.
        x[d..2 * d].fill(0.0);
        x[2 * d + 3] = 1e6;
        let run = |simd: bool| {
            let (mut tmp, mut q, mut s) = (vec![0f32; t * d], vec![0i8; t * d], vec![0f32; t]);
            ops(simd).norm_quant(&x, d, &gain, &mut tmp, &mut q, &mut s);
            let (mut q2, mut s2) = (vec![0i8; t * d], vec![0f32; t]);
            ops(simd).quantize(&x, d, &mut q2, &mut s2);
            (q, bits(&s), q2, bits(&s2))
        };
        assert_eq!(run(true), run(false));
        // Groups of 32 sixteen at a time and one at a time: 10 groups, 48, 21.
        for (t, m) in [(5usize, 64usize), (3, 512), (7, 96)] {
            let mut h: Vec<f32> = (0..t * m).map(|_| r.gen_range(-6.0..6.0)).collect();
            h[32..64].fill(0.0);
            h[70] = 3e4;
            let gelu = |simd: bool| {
                let mut h = h.clone();
                let (mut q, mut s) = (vec![0i8; t * m], vec![0f32; t * ck::groups(m)]);
                ops(simd).gelu_quant(&mut h, m, &mut q, &mut s);
                (bits(&h), q, bits(&s))
            };
            assert_eq!(gelu(true), gelu(false), "t={t} m={m}");
        }
    }

    #[test]
    fn exp_and_lane_sum_twins_are_exact() {
        if !have_simd() {
            return;
        }
        let xs: Vec<f32> = (0..20_000).map(|i| -100.0 + i as f32 * 0.0097).collect();
        let fast = twins::exp(&xs).unwrap();
        let plain: Vec<f32> = xs.iter().map(|&x| ck::fast_exp(x)).collect();
        assert_eq!(bits(&fast), bits(&plain));
        let mut r = rng();
        for _ in 0..100 {
            let lanes: [f32; 16] = std::array::from_fn(|_| r.gen_range(-1e3..1e3));
            assert_eq!(twins::tree_sum(&lanes).unwrap(), ck::sum_f32(&lanes));
        }
    }
}
