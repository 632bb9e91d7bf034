//! Symmetric int8 quantization, shared by the host's exporter (weights) and the core's
//! forward pass (activations).
//!
//! A row `x` becomes `q = round(x / s)` clamped to `[-127, 127]` with `s = max|x| / 127`.
//! A row of zeros gets `s = 0` and `q = 0` (no division by zero). Dequantized: `q · s`,
//! so the error of each value is at most `s / 2`.

use crate::error::{Error, Result};

/// The largest quantized magnitude.
pub const QMAX: f32 = 127.0;

/// Quantizes one row into `q` (same length), returning its scale. Non-finite input gives
/// scale NaN for the caller to detect; the core's forward never produces one from finite
/// weights.
#[inline(always)]
pub fn quantize_row(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = crate::kernels::max_abs_f32(x);
    let (scale, inv) = if amax > 0.0 {
        (amax / QMAX, QMAX / amax)
    } else {
        (0.0, 0.0)
    };
    for (o, &v) in q.iter_mut().zip(x) {
        *o = round_q(v * inv);
    }
    scale
}

/// `v` rounded half away from zero and clamped to `[-127, 127]` (NaN gives 0). Branch-free
/// so that loops over it vectorise.
#[inline(always)]
pub fn round_q(v: f32) -> i8 {
    let m = ((v.abs() + 0.5) as i32).min(127);
    (if v < 0.0 { -m } else { m }) as i8
}

/// Quantizes `rows` rows of `x` (row-major, `cols` each) into `q`, scales into `s`.
#[inline(always)]
pub fn quantize_rows(x: &[f32], cols: usize, q: &mut [i8], s: &mut [f32]) {
    if cols == 0 {
        return;
    }
    for ((xr, qr), sr) in x
        .chunks_exact(cols)
        .zip(q.chunks_exact_mut(cols))
        .zip(s.iter_mut())
    {
        *sr = quantize_row(xr, qr);
    }
}

/// Quantizes rows of `x` (`cols` each) with one scale per group of
/// [`crate::kernels::GROUP`] inputs: `s` gets `groups(cols)` scales per row.
#[inline(always)]
pub fn quantize_groups(x: &[f32], cols: usize, q: &mut [i8], s: &mut [f32]) {
    let g = crate::kernels::groups(cols);
    if cols == 0 || g == 0 {
        return;
    }
    for ((xr, qr), sr) in x
        .chunks_exact(cols)
        .zip(q.chunks_exact_mut(cols))
        .zip(s.chunks_exact_mut(g))
    {
        for ((xg, qg), sg) in xr
            .chunks(crate::kernels::GROUP)
            .zip(qr.chunks_mut(crate::kernels::GROUP))
            .zip(sr.iter_mut())
        {
            *sg = quantize_row(xg, qg);
        }
    }
}

/// Writes an int8 matrix of `rows` output rows of `cols` inputs (`w` row-major
/// `[out][in]`) in the file layout: `rows` f32 scales (LE), then `rows · cols` int8.
/// Returns the largest absolute error `|w − q·s|`. Non-finite weights are refused.
pub fn write_qmat(w: &[f32], rows: usize, cols: usize, out: &mut [u8]) -> Result<f32> {
    let need = crate::format::qmat_bytes(rows, cols);
    if w.len() != rows.saturating_mul(cols) {
        return Err(Error::LengthMismatch {
            what: "matrix",
            expected: rows.saturating_mul(cols),
            got: w.len(),
        });
    }
    if out.len() != need {
        return Err(Error::LengthMismatch {
            what: "matrix bytes",
            expected: need,
            got: out.len(),
        });
    }
    if w.iter().any(|v| !v.is_finite()) {
        return Err(Error::Malformed("non-finite weight"));
    }
    let (scales, data) = out.split_at_mut(rows.saturating_mul(4));
    let mut worst = 0f32;
    let mut q = [0i8; 256];
    for ((wr, sb), db) in w
        .chunks_exact(cols.max(1))
        .zip(scales.chunks_exact_mut(4))
        .zip(data.chunks_exact_mut(cols.max(1)))
    {
        let amax = wr.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let (scale, inv) = if amax > 0.0 {
            (amax / QMAX, QMAX / amax)
        } else {
            (0.0, 0.0)
        };
        sb.copy_from_slice(&scale.to_le_bytes());
        // In pieces of 256 so no buffer is needed.
        for (wc, dc) in wr.chunks(q.len()).zip(db.chunks_mut(q.len())) {
            for ((o, &v), d) in q.iter_mut().zip(wc).zip(dc.iter_mut()) {
                *o = round_q(v * inv);
                *d = *o as u8;
                worst = worst.max((v - *o as f32 * scale).abs());
            }
        }
    }
    Ok(worst)
}

/// Writes f32 values as little-endian bytes (`out.len() == 4 · v.len()`).
pub fn write_f32s(v: &[f32], out: &mut [u8]) -> Result<()> {
    if out.len() != v.len().saturating_mul(4) {
        return Err(Error::LengthMismatch {
            what: "f32 bytes",
            expected: v.len().saturating_mul(4),
            got: out.len(),
        });
    }
    for (b, x) in out.chunks_exact_mut(4).zip(v) {
        b.copy_from_slice(&x.to_le_bytes());
    }
    Ok(())
}

/// Reads the `i`-th little-endian f32 of `bytes` (0 when out of range; lengths are checked
/// when a file is read, so that never happens for a parsed model).
#[inline(always)]
pub fn f32_at(bytes: &[u8], i: usize) -> f32 {
    match bytes.get(i * 4..i * 4 + 4) {
        Some(&[a, b, c, d]) => f32::from_le_bytes([a, b, c, d]),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_quantization_exact_values() {
        let x = [0.0, 1.0, -2.0, 0.5, 2.0];
        let mut q = [0i8; 5];
        let s = quantize_row(&x, &mut q);
        assert_eq!(s, 2.0 / 127.0);
        assert_eq!(q, [0, 64, -127, 32, 127]); // 63.5 rounds away from zero
        assert_eq!(
            [round_q(0.5), round_q(-0.5), round_q(1.49), round_q(300.0)],
            [1, -1, 1, 127]
        );
        assert_eq!([round_q(-300.0), round_q(f32::NAN)], [-127, 0]);
        let mut z = [5i8; 3];
        assert_eq!(quantize_row(&[0.0; 3], &mut z), 0.0);
        assert_eq!(z, [0; 3]);
    }

    #[test]
    fn matrix_error_is_at_most_half_a_step() {
        let w: Vec<f32> = (0..600)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let (rows, cols) = (2, 300);
        let mut out = vec![0u8; crate::format::qmat_bytes(rows, cols)];
        let worst = write_qmat(&w, rows, cols, &mut out).unwrap();
        for r in 0..rows {
            let s = f32_at(&out, r);
            let amax = w[r * cols..][..cols]
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(s, amax / 127.0);
            for c in 0..cols {
                let q = out[rows * 4 + r * cols + c] as i8;
                assert!((w[r * cols + c] - q as f32 * s).abs() <= s / 2.0 + 1e-6);
            }
        }
        assert!(worst > 0.0 && worst <= 50.0 / 7.0 / 127.0 / 2.0 + 1e-6);
        let bad = [f32::NAN; 4];
        let mut o = vec![0u8; crate::format::qmat_bytes(1, 4)];
        assert!(write_qmat(&bad, 1, 4, &mut o).is_err());
    }
}
