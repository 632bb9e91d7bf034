//! The aarch64 NEON int8 products, in two sets: `neondot` with `sdot` (the dot-product
//! extension, `asimddp`: Cortex-A76 and later, Apple M1 and later, Graviton 2 and later)
//! and `neon` with `smull` + `sadalp` (every aarch64 CPU, e.g. the Cortex-A72 of a
//! Raspberry Pi 4). Each is the exact twin of igpt-core's `matmul_q` / `matmul_qg`: the
//! products are summed in i32, which is exact in any order, and the f32 steps after it
//! are the core's, in the core's order, lane by lane.
//!
//! Weights are packed by the parent module as blocks of 16 outputs, in each block groups
//! of 64 bytes: 16 outputs × 4 consecutive inputs, the int8 values themselves. A group
//! is four 16-byte registers `w_j` (outputs `4j..4j+4`, 4 inputs each), and the 4 inputs
//! of an activation row are one 32-bit lane broadcast to all four lanes, `x`:
//!
//! - `sdot acc_j, w_j, x` adds lane `i` = `Σ_k w[4j+i][k] · x[k]` (k < 4): 16
//!   multiply-adds per instruction, summed in i32.
//! - `smull` / `smull2` multiply the low / high eight bytes of `w_j` by `x` into eight
//!   i16 each; every product is at most 128 · 128 = 16,384 in magnitude, inside i16
//!   (an int8 times an int8 cannot overflow it). `sadalp` then adds adjacent pairs of
//!   them into i32 lanes, widening first, so nothing overflows before i32: lanes
//!   `(4j, k0+k1), (4j, k2+k3), (4j+1, k0+k1), (4j+1, k2+k3)` of the low half, likewise
//!   `4j+2, 4j+3` of the high half. One `addp` at the end gives the four outputs.
//!
//! An i32 sum of C products overflows only for C > 2³¹ / 16,384 = 131,072 inputs; the
//! widest matrix of a model has C = 4·width.
//!
//! Safety: `matmul_sdot` needs the dot-product extension (`Packed::with_kernels` checks
//! the CPU before a matrix is packed for `neondot`); both need the buffer lengths their
//! documentation states, which the parent module checks before each call.

use super::PackedMat;
use core::arch::aarch64::*;
use igpt_core::kernels::GROUP;

/// One of the two ways to sum `w_j · x` into i32 lanes.
trait Dot {
    /// Accumulators of one row and one register of four outputs.
    type Acc: Copy;
    /// Rows of activations per tile: each row keeps 4 `Acc`s, beside the 4 weight
    /// registers and the broadcast inputs, in the 32 vector registers.
    const ROWS: usize;
    /// All zero.
    fn zero() -> Self::Acc;
    /// `acc += w · x` (see the module documentation).
    ///
    /// # Safety
    /// The CPU runs the instructions of the set.
    unsafe fn mac(acc: &mut Self::Acc, w: int8x16_t, x: int8x16_t);
    /// The four i32 sums of four outputs.
    fn finish(acc: Self::Acc) -> int32x4_t;
}

/// `sdot`: the dot-product extension.
struct Sdot;

/// `acc += sdot(w, x)`, by `asm!` (the `vdotq_s32` intrinsic is not stable).
///
/// # Safety
/// The CPU has the dot-product extension.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn sdot(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    core::arch::asm!(
        "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
        acc = inout(vreg) acc,
        w = in(vreg) w,
        x = in(vreg) x,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

impl Dot for Sdot {
    type Acc = int32x4_t;
    const ROWS: usize = 4;
    #[inline(always)]
    fn zero() -> int32x4_t {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe { vdupq_n_s32(0) }
    }
    #[inline(always)]
    unsafe fn mac(acc: &mut int32x4_t, w: int8x16_t, x: int8x16_t) {
        *acc = sdot(*acc, w, x);
    }
    #[inline(always)]
    fn finish(acc: int32x4_t) -> int32x4_t {
        acc
    }
}

/// `smull` + `sadalp`: every aarch64 CPU.
struct Smull;

impl Dot for Smull {
    /// Pair sums of outputs `4j, 4j+1` (low half) and `4j+2, 4j+3` (high half).
    type Acc = (int32x4_t, int32x4_t);
    const ROWS: usize = 2;
    #[inline(always)]
    fn zero() -> Self::Acc {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe { (vdupq_n_s32(0), vdupq_n_s32(0)) }
    }
    #[inline(always)]
    unsafe fn mac(acc: &mut Self::Acc, w: int8x16_t, x: int8x16_t) {
        let lo = vmull_s8(vget_low_s8(w), vget_low_s8(x));
        let hi = vmull_high_s8(w, x);
        acc.0 = vpadalq_s16(acc.0, lo);
        acc.1 = vpadalq_s16(acc.1, hi);
    }
    #[inline(always)]
    fn finish(acc: Self::Acc) -> int32x4_t {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe { vpaddq_s32(acc.0, acc.1) }
    }
}

/// `out (T, O) [+]= …` as igpt-core's `matmul_q` (one activation scale per row) or,
/// `grouped`, `matmul_qg` (`groups(C)` scales per row), with `sdot`.
///
/// # Safety
/// The CPU has the dot-product extension; `pm` is packed for a NEON set; `out` has
/// `T·O` values, `xq` at least `T·C`, `xs` at least `T` (`T·groups(C)` when grouped).
#[target_feature(enable = "dotprod")]
pub unsafe fn matmul_sdot(
    out: &mut [f32],
    xq: &[i8],
    xs: &[f32],
    pm: &PackedMat,
    add: bool,
    t: usize,
    grouped: bool,
) {
    drive::<Sdot>(out, xq, xs, pm, add, t, grouped);
}

/// [`matmul_sdot`] with `smull` + `sadalp` (no extension needed).
///
/// # Safety
/// As [`matmul_sdot`], without the extension.
pub unsafe fn matmul_smull(
    out: &mut [f32],
    xq: &[i8],
    xs: &[f32],
    pm: &PackedMat,
    add: bool,
    t: usize,
    grouped: bool,
) {
    drive::<Smull>(out, xq, xs, pm, add, t, grouped);
}

/// Every block of 16 outputs (its weights, 16·C bytes, stay in L1 while every row
/// passes), in tiles of up to `K::ROWS` rows.
#[inline(always)]
unsafe fn drive<K: Dot>(
    out: &mut [f32],
    xq: &[i8],
    xs: &[f32],
    pm: &PackedMat,
    add: bool,
    t: usize,
    grouped: bool,
) {
    let (o, c) = (pm.rows, pm.cols);
    let g = if grouped {
        igpt_core::kernels::groups(c)
    } else {
        1
    };
    let (op, xp, sp) = (out.as_mut_ptr(), xq.as_ptr(), xs.as_ptr());
    for b in 0..o / 16 {
        let mut r0 = 0;
        while r0 < t {
            let mr = (t - r0).min(K::ROWS);
            let tile = Tile {
                out: op.add(r0 * o + b * 16),
                o,
                x: xp.add(r0 * c),
                c,
                xs: sp.add(r0 * g),
                g,
                w: pm.data.as_ptr().add(b * 16 * c) as *const i8,
                scales: pm.scales.as_ptr().add(b * 16),
                add,
            };
            match (mr, grouped) {
                (4, false) => tile.plain::<K, 4>(),
                (3, false) => tile.plain::<K, 3>(),
                (2, false) => tile.plain::<K, 2>(),
                (1, false) => tile.plain::<K, 1>(),
                (4, true) => tile.grouped::<K, 4>(),
                (3, true) => tile.grouped::<K, 3>(),
                (2, true) => tile.grouped::<K, 2>(),
                (1, true) => tile.grouped::<K, 1>(),
                _ => {}
            }
            r0 += mr;
        }
    }
}

/// Up to `ROWS` rows by one block of 16 outputs, by raw pointers into the checked
/// buffers of [`drive`].
struct Tile {
    out: *mut f32,
    o: usize,
    x: *const i8,
    c: usize,
    xs: *const f32,
    g: usize,
    w: *const i8,
    scales: *const f32,
    add: bool,
}

impl Tile {
    /// `acc[r][j] += Σ_{kq in k0..k1} w_j · x_r` for the tile.
    #[inline(always)]
    unsafe fn dot<K: Dot, const MR: usize>(
        &self,
        acc: &mut [[K::Acc; 4]; MR],
        k0: usize,
        k1: usize,
    ) {
        for kq in k0..k1 {
            let w = self.w.add(kq * 64);
            let wv = [
                vld1q_s8(w),
                vld1q_s8(w.add(16)),
                vld1q_s8(w.add(32)),
                vld1q_s8(w.add(48)),
            ];
            for (r, ar) in acc.iter_mut().enumerate() {
                let four = (self.x.add(r * self.c + kq * 4) as *const i32).read_unaligned();
                let x = vreinterpretq_s8_s32(vdupq_n_s32(four));
                for (a, &v) in ar.iter_mut().zip(&wv) {
                    K::mac(a, v, x);
                }
            }
        }
    }

    /// `out = (acc as f32 · xs) · scale [+ out]`: `matmul_q`'s order.
    #[inline(always)]
    unsafe fn plain<K: Dot, const MR: usize>(&self) {
        let mut acc = [[K::zero(); 4]; MR];
        self.dot::<K, MR>(&mut acc, 0, self.c / 4);
        for (r, ar) in acc.iter().enumerate() {
            let sx = vdupq_n_f32(*self.xs.add(r));
            for (j, &a) in ar.iter().enumerate() {
                let v = vcvtq_f32_s32(K::finish(a));
                let v = vmulq_f32(vmulq_f32(v, sx), vld1q_f32(self.scales.add(4 * j)));
                self.store(r, j, v);
            }
        }
    }

    /// `out = (Σ_groups (acc_g as f32 · xs_g), in order, from 0) · scale [+ out]`:
    /// `matmul_qg`'s order (a multiply, then an add: no fused multiply-add).
    #[inline(always)]
    unsafe fn grouped<K: Dot, const MR: usize>(&self) {
        let mut accf = [[vdupq_n_f32(0.0); 4]; MR];
        for gi in 0..self.g {
            let k0 = gi * GROUP / 4;
            let k1 = ((gi + 1) * GROUP).min(self.c) / 4;
            let mut acc = [[K::zero(); 4]; MR];
            self.dot::<K, MR>(&mut acc, k0, k1);
            for (r, (ar, fr)) in acc.iter().zip(accf.iter_mut()).enumerate() {
                let sx = vdupq_n_f32(*self.xs.add(r * self.g + gi));
                for (&a, f) in ar.iter().zip(fr.iter_mut()) {
                    let v = vcvtq_f32_s32(K::finish(a));
                    *f = vaddq_f32(*f, vmulq_f32(v, sx));
                }
            }
        }
        for (r, fr) in accf.iter().enumerate() {
            for (j, &f) in fr.iter().enumerate() {
                self.store(r, j, vmulq_f32(f, vld1q_f32(self.scales.add(4 * j))));
            }
        }
    }

    /// Outputs `4j..4j+4` of row `r`: `v`, or `out + v` when adding.
    #[inline(always)]
    unsafe fn store(&self, r: usize, j: usize, v: float32x4_t) {
        let dst = self.out.add(r * self.o + 4 * j);
        let v = if self.add {
            vaddq_f32(vld1q_f32(dst), v)
        } else {
            v
        };
        vst1q_f32(dst, v);
    }
}
