//! Fused CPU kernels (f32) for the training hot paths, and their dfdx tape wrappers.
//!
//! Each kernel is a plain function on slices with its backward, registered on dfdx's tape
//! with `Tape::add_backward_op`; gradients are accumulated into
//! `Gradients::get_or_alloc_mut`. The reference twins are the dfdx compositions in
//! [`crate::nn`] (`rmsnorm`, `quick_gelu`, `attention`) and [`crate::train`]
//! (`loss`, `AdamW::update`); tests compare forward values and gradients of every pair.
//!
//! | kernel | replaces | saves |
//! |---|---|---|
//! | [`rmsnorm`] | square, mean, add, sqrt, recip, 2 broadcasts, 2 muls | 9 tensors and their backward passes |
//! | [`mlp`] | 2 matmuls, mul, sigmoid, mul | the (B,T,4C) intermediates as tensors; a vectorised exp |
//! | [`self_attention`] | 3 matmuls, 3 reshapes, 3 permutes, 2 batched matmuls, scale, mask add, softmax | q, k, v as tensors, the permute copies, the (B,H,T,T) mask and score temporaries; masked key blocks skipped |
//! | [`head_cross_entropy`] | head matmul, log_softmax, select, weight mul, sum | the (B,T,V) logits and log-probabilities as tensors |
//! | [`linear`] | dfdx matmul (gemm 0.15, AVX2) | gemm 0.19 with AVX-512 where the CPU has it; no transposed copies |
//!
//! Matrix products go through the `gemm` crate (dfdx's own CPU matmul) with strides, so
//! per-head views need no copies. Work over (batch, head) pairs and rows is split with
//! rayon.

use crate::nn::{Act, Param, NORM_EPS, QUICK_GELU};
use dfdx::prelude::*;
use multiversion::multiversion;
use rayon::prelude::*;

/// The instruction set the f32 training kernels run with on this CPU: gemm 0.19's and
/// the fused kernels' (multiversion clones) choice, made at run time among what the
/// build holds. A build without the `avx512` feature (`--no-default-features`) holds
/// no AVX-512 code, so on an AVX-512 machine it runs what an AVX2 machine runs.
pub fn training_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl");
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        match (cfg!(feature = "avx512"), avx512, avx2) {
            (true, true, _) => "avx512 (gemm x86-v4; the fused kernels' AVX-512 clones)",
            (false, true, _) => {
                "avx2+fma (this CPU has AVX-512; the build leaves it out: no `avx512` feature)"
            }
            (_, _, true) => "avx2+fma",
            _ => "x86-64 baseline (SSE2)",
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon (gemm's aarch64 kernels; LLVM's NEON for the fused kernels)"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "portable"
    }
}

/// A tensor's values as a `Vec` with one `memcpy` (dfdx's `as_vec` walks the strides
/// element by element, which was 10% of a training profile).
///
/// The tensor must be contiguous (dfdx does not expose strides to check): every tensor
/// the model hands to the fused kernels is (parameters, fused-op outputs, outputs of
/// dfdx's element-wise ops). Debug builds, and so every test, compare with `as_vec`.
pub fn read<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut v = vec![0f32; t.shape().num_elements()];
    t.copy_into(&mut v);
    debug_assert!(
        v.iter()
            .zip(t.as_vec())
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "read: tensor is not contiguous"
    );
    v
}

fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs + 1
}

/// `dst (m×n) = [dst +] scale · lhs (m×k) · rhs (k×n)` on strided views of slices, on
/// the calling thread. Panics if a view reaches outside its slice (an internal shape bug).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_st: (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    lhs_st: (usize, usize),
    rhs: &[f32],
    rhs_st: (usize, usize),
    scale: f32,
) {
    gemm_checked(
        m,
        n,
        k,
        dst,
        dst_st,
        accumulate,
        (lhs, lhs_st),
        (rhs, rhs_st),
        scale,
        false,
    )
}

/// [`gemm`] with scale 1, using rayon's threads inside the product (the large
/// projections).
#[allow(clippy::too_many_arguments)]
pub fn gemm_par(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_st: (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    lhs_st: (usize, usize),
    rhs: &[f32],
    rhs_st: (usize, usize),
) {
    gemm_checked(
        m,
        n,
        k,
        dst,
        dst_st,
        accumulate,
        (lhs, lhs_st),
        (rhs, rhs_st),
        1.0,
        true,
    )
}

#[allow(clippy::too_many_arguments)]
fn gemm_checked(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_st: (usize, usize),
    accumulate: bool,
    (lhs, lhs_st): (&[f32], (usize, usize)),
    (rhs, rhs_st): (&[f32], (usize, usize)),
    scale: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        span(m, n, dst_st.0, dst_st.1) <= dst.len(),
        "gemm: dst view out of bounds"
    );
    // Safety: the destination view lies inside `dst` (checked above), which is a unique
    // borrow for the duration of the call.
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_st,
            accumulate,
            lhs,
            lhs_st,
            rhs,
            rhs_st,
            scale,
            parallel,
        )
    }
}

/// [`gemm`] into a raw destination.
///
/// # Safety
/// The `m×n` view at `dst` with strides `dst_st` must be valid for reads and writes and
/// not accessed by anything else during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    scale: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // Safety: inside the destination view (caller's contract).
                    unsafe { *dst.add(i * dst_rs + j * dst_cs) = 0.0 };
                }
            }
        }
        return;
    }
    assert!(
        span(m, k, lhs_rs, lhs_cs) <= lhs.len(),
        "gemm: lhs view out of bounds"
    );
    assert!(
        span(k, n, rhs_rs, rhs_cs) <= rhs.len(),
        "gemm: rhs view out of bounds"
    );
    // Safety: the input views were checked to lie inside their slices; the destination
    // view is valid and unaliased by the caller's contract.
    unsafe {
        gemm_crate::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            match rayon::current_num_threads() {
                n if parallel && n > 1 => gemm_crate::Parallelism::Rayon(n),
                _ => gemm_crate::Parallelism::None,
            },
        )
    }
}

/// `exp(x)` to within ~2 ulp, vectorisable: igpt-core's (one implementation for both).
pub use igpt_core::kernels::fast_exp;

// ---------------------------------------------------------------------------------------
// Linear layers

/// Fused linear layer on dfdx's tape: `x (B, T, I) · W` with `W` stored `(I, O)`, or with
/// `transposed` stored `(O, I)` (`x · Wᵀ`, the head's layout). Forward and both backward
/// products go through `gemm` directly.
pub fn linear<T: Tape<f32, Cpu>>(
    x: Act<f32, Cpu, T>,
    w: &Param<f32, Cpu>,
    transposed: bool,
) -> Act<f32, Cpu, T> {
    let (b, t, i) = *x.shape();
    let (wr, wc) = *w.shape();
    let o = if transposed { wr } else { wc };
    assert_eq!(
        if transposed { wc } else { wr },
        i,
        "linear: width mismatch"
    );
    let rows = b * t;
    // Strides of W viewed as (I, O).
    let w_st = if transposed { (1, wc) } else { (wc, 1) };
    let (x, mut tape) = x.split_tape();
    let (xv, wv) = (read(&x), read(w));
    let mut y = vec![0f32; rows * o];
    gemm_par(rows, o, i, &mut y, (o, 1), false, &xv, (i, 1), &wv, w_st);
    let out = x.device().tensor_from_vec(y, (b, t, o));
    if T::OWNS_TAPE {
        let (out_g, x_g, w_g) = (out.clone(), x.clone(), w.clone());
        tape.add_backward_op(move |grads| {
            let dy = grads.get_or_alloc_mut(&out_g)?.to_vec();
            // dx (rows×I) += dy (rows×O) · Wᵀ (O×I)
            gemm_par(
                rows,
                i,
                o,
                grads.get_or_alloc_mut(&x_g)?,
                (i, 1),
                true,
                &dy,
                (o, 1),
                &wv,
                (w_st.1, w_st.0),
            );
            // dW (I×O) += xᵀ (I×rows) · dy (rows×O), written in W's own layout.
            gemm_par(
                i,
                o,
                rows,
                grads.get_or_alloc_mut(&w_g)?,
                w_st,
                true,
                &xv,
                (1, i),
                &dy,
                (o, 1),
            );
            Ok(())
        });
    }
    out.put_tape(tape)
}

// ---------------------------------------------------------------------------------------
// RMS norm

/// Forward: `y[i] = x[i] · r[i] · g`, `r[i] = 1/sqrt(mean(x[i]²) + eps)` for each row of
/// width `c`; `r` is saved for the backward pass.
pub fn rmsnorm_fwd(x: &[f32], g: &[f32], y: &mut [f32], r: &mut [f32]) {
    let c = g.len();
    y.par_chunks_mut(c * 64)
        .zip(x.par_chunks(c * 64))
        .zip(r.par_chunks_mut(64))
        .for_each(|((y, x), r)| {
            for ((y, x), r) in y
                .chunks_exact_mut(c)
                .zip(x.chunks_exact(c))
                .zip(r.iter_mut())
            {
                let ms = x.iter().map(|v| v * v).sum::<f32>() / c as f32;
                *r = 1.0 / (ms + NORM_EPS).sqrt();
                for ((y, x), g) in y.iter_mut().zip(x).zip(g) {
                    *y = x * *r * g;
                }
            }
        });
}

/// Backward of [`rmsnorm_fwd`]: adds into `dx` and `dg`.
pub fn rmsnorm_bwd(x: &[f32], g: &[f32], r: &[f32], dy: &[f32], dx: &mut [f32], dg: &mut [f32]) {
    let c = g.len();
    let rows = r.len();
    // dg: per-chunk partial sums, then reduced.
    let partial: Vec<Vec<f32>> = (0..rows)
        .collect::<Vec<_>>()
        .par_chunks(64)
        .map(|chunk| {
            let mut acc = vec![0f32; c];
            for &i in chunk {
                let (xr, dyr) = (&x[i * c..(i + 1) * c], &dy[i * c..(i + 1) * c]);
                for ((a, x), d) in acc.iter_mut().zip(xr).zip(dyr) {
                    *a += d * x * r[i];
                }
            }
            acc
        })
        .collect();
    for p in partial {
        for (a, b) in dg.iter_mut().zip(p) {
            *a += b;
        }
    }
    dx.par_chunks_mut(c).enumerate().for_each(|(i, dxr)| {
        let (xr, dyr) = (&x[i * c..(i + 1) * c], &dy[i * c..(i + 1) * c]);
        let ri = r[i];
        let dot: f32 = xr.iter().zip(dyr).zip(g).map(|((x, d), g)| x * d * g).sum();
        let k = ri * ri * ri * dot / c as f32;
        for (((dx, x), d), g) in dxr.iter_mut().zip(xr).zip(dyr).zip(g) {
            *dx += ri * g * d - k * x;
        }
    });
}

/// Fused RMS norm on dfdx's tape: `x / sqrt(mean_C(x²) + eps) · g`.
pub fn rmsnorm<T: Tape<f32, Cpu>>(x: Act<f32, Cpu, T>, g: &Param<f32, Cpu>) -> Act<f32, Cpu, T> {
    let shape = *x.shape();
    let (x, mut tape) = x.split_tape();
    let dev = x.device().clone();
    let xv = read(&x);
    let gv = read(g);
    let rows = shape.0 * shape.1;
    let mut y = vec![0f32; xv.len()];
    let mut r = vec![0f32; rows];
    rmsnorm_fwd(&xv, &gv, &mut y, &mut r);
    let out = dev.tensor_from_vec(y, shape);
    if T::OWNS_TAPE {
        let (out_g, x_g, g_g) = (out.clone(), x.clone(), g.clone());
        tape.add_backward_op(move |grads| {
            let dy = grads.get_or_alloc_mut(&out_g)?.to_vec();
            let mut dg = vec![0f32; gv.len()];
            {
                let dx = grads.get_or_alloc_mut(&x_g)?;
                rmsnorm_bwd(&xv, &gv, &r, &dy, dx, &mut dg);
            }
            for (a, b) in grads.get_or_alloc_mut(&g_g)?.iter_mut().zip(&dg) {
                *a += b;
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

// ---------------------------------------------------------------------------------------
// quick_gelu

#[cfg_attr(
    feature = "avx512",
    multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl", "x86_64+avx2+fma"))
)]
#[cfg_attr(not(feature = "avx512"), multiversion(targets("x86_64+avx2+fma")))]
fn quick_gelu_chunk(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        let s = 1.0 / (1.0 + fast_exp(-(QUICK_GELU) * x));
        *y = x * s;
    }
}

#[cfg_attr(
    feature = "avx512",
    multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl", "x86_64+avx2+fma"))
)]
#[cfg_attr(not(feature = "avx512"), multiversion(targets("x86_64+avx2+fma")))]
fn quick_gelu_bwd_chunk(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let a = QUICK_GELU;
    for ((dx, &x), &d) in dx.iter_mut().zip(x).zip(dy) {
        let s = 1.0 / (1.0 + fast_exp(-a * x));
        *dx += d * (s + a * x * s * (1.0 - s));
    }
}

/// `y = x · σ(1.702 x)`.
pub fn quick_gelu_fwd(x: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(4096)
        .zip(x.par_chunks(4096))
        .for_each(|(y, x)| quick_gelu_chunk(x, y));
}

/// Backward of [`quick_gelu_fwd`]: `dx += dy · (s + 1.702 x s (1 - s))`.
pub fn quick_gelu_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    dx.par_chunks_mut(4096)
        .zip(x.par_chunks(4096).zip(dy.par_chunks(4096)))
        .for_each(|(dx, (x, dy))| quick_gelu_bwd_chunk(x, dy, dx));
}

/// Fused MLP on dfdx's tape: `quick_gelu(m · W_fc) · W_proj` for the normed input
/// `m (B, T, C)`, `W_fc (C, 4C)`, `W_proj (4C, C)`, without handing the `(B, T, 4C)`
/// intermediates to dfdx.
pub fn mlp<T: Tape<f32, Cpu>>(
    m: Act<f32, Cpu, T>,
    w_fc: &Param<f32, Cpu>,
    w_proj: &Param<f32, Cpu>,
) -> Act<f32, Cpu, T> {
    let (b, t, c) = *m.shape();
    let f = w_fc.shape().1;
    assert_eq!((w_fc.shape().0, *w_proj.shape()), (c, (f, c)), "mlp shapes");
    let rows = b * t;
    let (m, mut tape) = m.split_tape();
    let (mv, fcv, pv) = (read(&m), read(w_fc), read(w_proj));
    let mut h = vec![0f32; rows * f];
    gemm_par(rows, f, c, &mut h, (f, 1), false, &mv, (c, 1), &fcv, (f, 1));
    let mut g = vec![0f32; rows * f];
    quick_gelu_fwd(&h, &mut g);
    let mut y = vec![0f32; rows * c];
    gemm_par(rows, c, f, &mut y, (c, 1), false, &g, (f, 1), &pv, (c, 1));
    let out = m.device().tensor_from_vec(y, (b, t, c));
    if T::OWNS_TAPE {
        let (out_g, m_g, fc_g, p_g) = (out.clone(), m.clone(), w_fc.clone(), w_proj.clone());
        tape.add_backward_op(move |grads| {
            let dy = grads.get_or_alloc_mut(&out_g)?.to_vec();
            // dW_proj += gᵀ · dy ; dg = dy · W_projᵀ
            gemm_par(
                f,
                c,
                rows,
                grads.get_or_alloc_mut(&p_g)?,
                (c, 1),
                true,
                &g,
                (1, f),
                &dy,
                (c, 1),
            );
            let mut dg = vec![0f32; rows * f];
            gemm_par(rows, f, c, &mut dg, (f, 1), false, &dy, (c, 1), &pv, (1, c));
            // dh = dg ⊙ quick_gelu'(h)
            let mut dh = vec![0f32; rows * f];
            quick_gelu_bwd(&h, &dg, &mut dh);
            // dW_fc += mᵀ · dh ; dm += dh · W_fcᵀ
            gemm_par(
                c,
                f,
                rows,
                grads.get_or_alloc_mut(&fc_g)?,
                (f, 1),
                true,
                &mv,
                (1, c),
                &dh,
                (f, 1),
            );
            gemm_par(
                rows,
                c,
                f,
                grads.get_or_alloc_mut(&m_g)?,
                (c, 1),
                true,
                &dh,
                (f, 1),
                &fcv,
                (1, f),
            );
            Ok(())
        });
    }
    out.put_tape(tape)
}

// ---------------------------------------------------------------------------------------
// Attention

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Batch.
    pub b: usize,
    /// Positions.
    pub t: usize,
    /// Heads.
    pub h: usize,
    /// Head width.
    pub hd: usize,
    /// Causal mask (AR) or none (BERT).
    pub causal: bool,
}

impl AttnShape {
    fn c(&self) -> usize {
        self.h * self.hd
    }
}

/// Rows per block of the causal attention loops: row block `[r0, r1)` only needs key
/// columns `[0, r1)`, so about half of the masked products are never computed.
const ROW_BLOCK: usize = 64;

/// The row blocks `(r0, r1, cols)` of one (batch, head): `cols` key columns are used.
fn row_blocks(s: &AttnShape) -> impl Iterator<Item = (usize, usize, usize)> {
    let (t, causal) = (s.t, s.causal);
    let step = if causal { ROW_BLOCK } else { t.max(1) };
    (0..t).step_by(step).map(move |r0| {
        let r1 = (r0 + step).min(t);
        (r0, r1, if causal { r1 } else { t })
    })
}

/// Forward: `o = softmax(q kᵀ / √hd [+ mask]) v` per (batch, head) on `(B, T, C)` inputs
/// whose head `j` owns columns `j·hd..(j+1)·hd`. Writes `o (B, T, C)` and the
/// probabilities `p (B, H, T, T)` (zero where masked; with the causal mask, entries
/// right of each row block's diagonal block are left untouched) for the backward pass.
pub fn attention_fwd(s: AttnShape, q: &[f32], k: &[f32], v: &[f32], o: &mut [f32], p: &mut [f32]) {
    let (t, c, hd) = (s.t, s.c(), s.hd);
    let scale = 1.0 / (hd as f32).sqrt();
    // Each (b, h) writes its own block of p and its own columns of o.
    let o_ptr = SendPtr::of(o);
    p.par_chunks_mut(t * t).enumerate().for_each(|(bh, pb)| {
        let (b, h) = (bh / s.h, bh % s.h);
        let base = b * t * c + h * hd;
        for (r0, r1, cols) in row_blocks(&s) {
            let rows = r1 - r0;
            let qb = &q[base + r0 * c..];
            // scores[r0..r1, 0..cols] = q · kᵀ · scale
            gemm(
                rows,
                cols,
                hd,
                &mut pb[r0 * t..],
                (t, 1),
                false,
                qb,
                (c, 1),
                &k[base..],
                (1, c),
                scale,
            );
            for i in r0..r1 {
                let valid = if s.causal { i + 1 } else { t };
                softmax_row(&mut pb[i * t..i * t + cols], valid);
            }
            // o[r0..r1] = p[r0..r1, 0..cols] · v[0..cols]
            // Safety: each (b, h) task writes only its own block of o (rows of batch b,
            // columns of head h).
            unsafe {
                o_ptr.gemm_at(
                    base + r0 * c,
                    rows,
                    hd,
                    cols,
                    (c, 1),
                    false,
                    &pb[r0 * t..],
                    (t, 1),
                    &v[base..],
                    (c, 1),
                )
            };
        }
    });
}

/// Backward of [`attention_fwd`]: adds into `dq`, `dk`, `dv`.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(
    s: AttnShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p: &[f32],
    dout: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (t, c, hd) = (s.t, s.c(), s.hd);
    let scale = 1.0 / (hd as f32).sqrt();
    let (dq, dk, dv) = (SendPtr::of(dq), SendPtr::of(dk), SendPtr::of(dv));
    (0..s.b * s.h).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / s.h, bh % s.h);
        let base = b * t * c + h * hd;
        let pb = &p[bh * t * t..(bh + 1) * t * t];
        let mut ds = vec![0f32; t * t];
        for (r0, r1, cols) in row_blocks(&s) {
            let rows = r1 - r0;
            let (pr, dor) = (&pb[r0 * t..], &dout[base + r0 * c..]);
            // Safety (all gemm_at calls below): each (b, h) task touches only its own
            // column block of dq, dk and dv.
            // dv[0..cols] += p[r0..r1, 0..cols]ᵀ · dout[r0..r1]
            unsafe { dv.gemm_at(base, cols, hd, rows, (c, 1), true, pr, (1, t), dor, (c, 1)) };
            // dp[r0..r1, 0..cols] = dout[r0..r1] · v[0..cols]ᵀ
            let dsr = &mut ds[r0 * t..];
            gemm(
                rows,
                cols,
                hd,
                dsr,
                (t, 1),
                false,
                dor,
                (c, 1),
                &v[base..],
                (1, c),
                1.0,
            );
            // ds = p ⊙ (dp - Σ_u dp·p), times the scores' 1/√hd.
            for i in 0..rows {
                let valid = if s.causal { r0 + i + 1 } else { t };
                softmax_bwd_row(
                    &pr[i * t..i * t + cols],
                    &mut dsr[i * t..i * t + cols],
                    valid,
                    scale,
                );
            }
            let dsr = &ds[r0 * t..];
            // dq[r0..r1] += ds · k[0..cols] ; dk[0..cols] += dsᵀ · q[r0..r1]
            unsafe {
                dq.gemm_at(
                    base + r0 * c,
                    rows,
                    hd,
                    cols,
                    (c, 1),
                    true,
                    dsr,
                    (t, 1),
                    &k[base..],
                    (c, 1),
                )
            };
            unsafe {
                dk.gemm_at(
                    base,
                    cols,
                    hd,
                    rows,
                    (c, 1),
                    true,
                    dsr,
                    (1, t),
                    &q[base + r0 * c..],
                    (c, 1),
                )
            };
        }
    });
}

/// A raw pointer that may cross threads; users guarantee disjoint writes.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32, usize);
// Safety: only used to hand disjoint sub-blocks of one buffer to rayon workers.
unsafe impl Send for SendPtr {}
// Safety: as above; the pointer itself is never dereferenced concurrently on one element.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn of(buf: &mut [f32]) -> SendPtr {
        SendPtr(buf.as_mut_ptr(), buf.len())
    }

    /// [`gemm`] into the view at `offset` of the buffer this points to; the view is
    /// bounds-checked against the whole buffer.
    ///
    /// # Safety
    /// No other thread may touch this view during the call (callers give each rayon
    /// task its own (batch, head) column block).
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_at(
        &self,
        offset: usize,
        m: usize,
        n: usize,
        k: usize,
        dst_st: (usize, usize),
        accumulate: bool,
        lhs: &[f32],
        lhs_st: (usize, usize),
        rhs: &[f32],
        rhs_st: (usize, usize),
    ) {
        if m == 0 || n == 0 {
            return;
        }
        assert!(
            offset + span(m, n, dst_st.0, dst_st.1) <= self.1,
            "gemm: dst view out of bounds"
        );
        // Safety: in bounds (checked) and exclusive (caller's contract).
        unsafe {
            gemm_raw(
                m,
                n,
                k,
                self.0.add(offset),
                dst_st,
                accumulate,
                lhs,
                lhs_st,
                rhs,
                rhs_st,
                1.0,
                false,
            )
        }
    }
}

/// Fused self-attention on dfdx's tape: the q, k, v projections of the normed input
/// `a (B, T, C)` (weights `(C, C)`, `[in, out]`) and multi-head attention, returning the
/// concatenated head outputs `(B, T, C)` before the output projection.
pub fn self_attention<T: Tape<f32, Cpu>>(
    a: Act<f32, Cpu, T>,
    wq: &Param<f32, Cpu>,
    wk: &Param<f32, Cpu>,
    wv: &Param<f32, Cpu>,
    heads: usize,
    causal: bool,
) -> Act<f32, Cpu, T> {
    let shape = *a.shape();
    let (b, t, c) = shape;
    let rows = b * t;
    let s = AttnShape {
        b,
        t,
        h: heads,
        hd: c / heads,
        causal,
    };
    let (a, mut tape) = a.split_tape();
    let av = read(&a);
    let ws = [read(wq), read(wk), read(wv)];
    let proj = |w: &[f32]| {
        let mut y = vec![0f32; rows * c];
        gemm_par(rows, c, c, &mut y, (c, 1), false, &av, (c, 1), w, (c, 1));
        y
    };
    let (qv, kv, vv) = (proj(&ws[0]), proj(&ws[1]), proj(&ws[2]));
    let mut o = vec![0f32; rows * c];
    let mut p = vec![0f32; b * heads * t * t];
    attention_fwd(s, &qv, &kv, &vv, &mut o, &mut p);
    let out = a.device().tensor_from_vec(o, shape);
    if T::OWNS_TAPE {
        let (out_g, a_g) = (out.clone(), a.clone());
        let w_g = [wq.clone(), wk.clone(), wv.clone()];
        tape.add_backward_op(move |grads| {
            let dout = grads.get_or_alloc_mut(&out_g)?.to_vec();
            let n = rows * c;
            let (mut dq, mut dk, mut dv) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
            attention_bwd(s, &qv, &kv, &vv, &p, &dout, &mut dq, &mut dk, &mut dv);
            for ((d, w), wg) in [dq, dk, dv].iter().zip(&ws).zip(&w_g) {
                // dW += aᵀ · d ; da += d · Wᵀ
                gemm_par(
                    c,
                    c,
                    rows,
                    grads.get_or_alloc_mut(wg)?,
                    (c, 1),
                    true,
                    &av,
                    (1, c),
                    d,
                    (c, 1),
                );
                gemm_par(
                    rows,
                    c,
                    c,
                    grads.get_or_alloc_mut(&a_g)?,
                    (c, 1),
                    true,
                    d,
                    (c, 1),
                    w,
                    (1, c),
                );
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

// ---------------------------------------------------------------------------------------
// Softmax cross-entropy

/// `Σ a·b` with eight independent accumulators (so that it vectorises): igpt-core's
/// `dot_f32`, the same summation order.
pub use igpt_core::kernels::dot_f32 as dot8;

/// The largest value (`-inf` for an empty slice), eight lanes at a time.
#[inline(always)]
pub fn max8(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let c = x.chunks_exact(8);
    let rest = c
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for v in c {
        for j in 0..8 {
            acc[j] = if v[j] > acc[j] { v[j] } else { acc[j] };
        }
    }
    acc.iter().copied().fold(rest, f32::max)
}

/// Softmax of `row[..valid]` in place, zeros after it.
#[cfg_attr(
    feature = "avx512",
    multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl", "x86_64+avx2+fma"))
)]
#[cfg_attr(not(feature = "avx512"), multiversion(targets("x86_64+avx2+fma")))]
pub fn softmax_row(row: &mut [f32], valid: usize) {
    let max = max8(&row[..valid]);
    let inv = 1.0 / exp_shift_sum_inline(&mut row[..valid], max);
    for x in row[..valid].iter_mut() {
        *x *= inv;
    }
    row[valid..].fill(0.0);
}

/// Softmax backward of one row: `d = p ⊙ (d - Σ d·p) · scale` on `..valid`, zeros after.
#[cfg_attr(
    feature = "avx512",
    multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl", "x86_64+avx2+fma"))
)]
#[cfg_attr(not(feature = "avx512"), multiversion(targets("x86_64+avx2+fma")))]
pub fn softmax_bwd_row(p: &[f32], d: &mut [f32], valid: usize, scale: f32) {
    let dot = dot8(&p[..valid], &d[..valid]);
    for (d, p) in d[..valid].iter_mut().zip(&p[..valid]) {
        *d = p * (*d - dot) * scale;
    }
    d[valid..].fill(0.0);
}

/// Sum of a slice with eight independent accumulators (so that it vectorises).
#[inline(always)]
pub fn sum8_inline(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// [`sum8_inline`] compiled for the best vector unit present.
#[cfg_attr(
    feature = "avx512",
    multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl", "x86_64+avx2+fma"))
)]
#[cfg_attr(not(feature = "avx512"), multiversion(targets("x86_64+avx2+fma")))]
pub fn sum8(x: &[f32]) -> f32 {
    sum8_inline(x)
}

#[inline(always)]
fn exp_shift_sum_inline(row: &mut [f32], max: f32) -> f32 {
    for x in row.iter_mut() {
        *x = fast_exp(*x - max);
    }
    sum8_inline(row)
}

/// `row[i] = exp(row[i] - max)` in place; returns the sum. Both loops vectorise, and
/// run on the best vector unit present.
#[cfg_attr(
    feature = "avx512",
    multiversion(targets("x86_64+avx512f+avx512bw+avx512dq+avx512vl", "x86_64+avx2+fma"))
)]
#[cfg_attr(not(feature = "avx512"), multiversion(targets("x86_64+avx2+fma")))]
pub fn exp_shift_sum(row: &mut [f32], max: f32) -> f32 {
    exp_shift_sum_inline(row, max)
}

/// Forward of the weighted softmax cross-entropy over rows of width `v` of `logits`
/// (overwritten with `exp(logit - max)`): returns `Σ_i w[i] · (lse_i - logit_i[target])`
/// and stores each row's logsumexp in `lse`.
pub fn cross_entropy_fwd(
    logits: &mut [f32],
    v: usize,
    target: &[usize],
    w: &[f32],
    lse: &mut [f32],
) -> f64 {
    logits
        .par_chunks_mut(v)
        .zip(lse.par_iter_mut())
        .enumerate()
        .map(|(i, (row, l))| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let picked = row[target[i]];
            let sum = exp_shift_sum(row, max);
            *l = max + sum.ln();
            w[i] as f64 * (*l - picked) as f64
        })
        .sum()
}

/// Backward: turns the rows left by [`cross_entropy_fwd`] (`exp(logit - max)`) into
/// `dlogits[i] = dloss · w[i] · (softmax_i - onehot(target_i))`, in place.
pub fn cross_entropy_bwd(e: &mut [f32], v: usize, target: &[usize], w: &[f32], dloss: f32) {
    e.par_chunks_mut(v).enumerate().for_each(|(i, d)| {
        let scale = dloss * w[i];
        // softmax = exp(logit - max) / Σ exp(logit - max).
        let k = scale / sum8(d);
        for x in d.iter_mut() {
            *x *= k;
        }
        d[target[i]] -= scale;
    });
}

/// Fused next-token head and weighted softmax cross-entropy on dfdx's tape:
/// `-Σ w · log softmax(z · Wᵀ)[target]` for `z (B, T, C)` and the head `W (V, C)`, without
/// materialising the logits as a tensor.
pub fn head_cross_entropy<T: Tape<f32, Cpu>>(
    z: Act<f32, Cpu, T>,
    head: &Param<f32, Cpu>,
    target: &[usize],
    weight: &[f32],
) -> Tensor<(), f32, Cpu, T> {
    let (b, t, c) = *z.shape();
    let (v, hc) = *head.shape();
    assert_eq!(hc, c, "head width");
    let rows = b * t;
    assert_eq!((target.len(), weight.len()), (rows, rows));
    assert!(target.iter().all(|&x| x < v), "target out of range");
    let (z, mut tape) = z.split_tape();
    let (zv, wv) = (read(&z), read(head));
    // logits (rows × V) = z · Wᵀ
    let mut e = vec![0f32; rows * v];
    gemm_par(rows, v, c, &mut e, (v, 1), false, &zv, (c, 1), &wv, (1, c));
    let mut lse = vec![0f32; rows];
    let loss = cross_entropy_fwd(&mut e, v, target, weight, &mut lse) as f32;
    drop(lse);
    let out = z.device().tensor_from_vec(vec![loss], ());
    if T::OWNS_TAPE {
        let (out_g, z_g, w_g) = (out.clone(), z.clone(), head.clone());
        let (target, weight) = (target.to_vec(), weight.to_vec());
        tape.add_backward_op(move |grads| {
            let dloss = grads.get_or_alloc_mut(&out_g)?[0];
            let mut e = e;
            cross_entropy_bwd(&mut e, v, &target, &weight, dloss);
            // dz (rows×C) += dlogits (rows×V) · W (V×C); dW (V×C) += dlogitsᵀ · z
            gemm_par(
                rows,
                c,
                v,
                grads.get_or_alloc_mut(&z_g)?,
                (c, 1),
                true,
                &e,
                (v, 1),
                &wv,
                (c, 1),
            );
            gemm_par(
                v,
                c,
                rows,
                grads.get_or_alloc_mut(&w_g)?,
                (c, 1),
                true,
                &e,
                (1, v),
                &zv,
                (c, 1),
            );
            Ok(())
        });
    }
    out.put_tape(tape)
}

// ---------------------------------------------------------------------------------------
// AdamW

/// One AdamW step on slices: `m`, `v` updated, then
/// `p ← p·(1 - lr·wd) - lr · m̂ / (√v̂ + eps)` with bias corrections `bc1`, `bc2` and the
/// gradient scaled by `gscale` (clipping).
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    (beta1, beta2, eps): (f32, f32, f32),
    (lr, wd): (f32, f32),
    (bc1, bc2, gscale): (f32, f32, f32),
) {
    let (ib1, ib2) = (1.0 / bc1, 1.0 / bc2);
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g * gscale;
        *m = *m * beta1 + g * (1.0 - beta1);
        *v = *v * beta2 + g * g * (1.0 - beta2);
        let step = (*m * ib1) / ((*v * ib2).sqrt() + eps);
        *p = *p * (1.0 - lr * wd) - step * lr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_std() {
        let mut worst: f32 = 0.0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (fast_exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(fast_exp(-1000.0), fast_exp(-87.0));
        assert!(fast_exp(-87.0) < 2e-38);
        assert_eq!(fast_exp(0.0), 1.0);
    }

    #[test]
    fn gemm_on_strided_views() {
        // A (2x3) row-major times Bᵀ where B (2x3) is row-major: C = A·Bᵀ (2x2).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let mut c = [0f32; 4];
        gemm(2, 2, 3, &mut c, (2, 1), false, &a, (3, 1), &b, (1, 3), 1.0);
        assert_eq!(c, [4.0, 2.0, 10.0, 5.0]);
        gemm(2, 2, 3, &mut c, (2, 1), true, &a, (3, 1), &b, (1, 3), 0.5);
        assert_eq!(c, [6.0, 3.0, 15.0, 7.5]);
    }
}
