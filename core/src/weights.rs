//! Borrowed views of the quantized tensors inside a model file's blob: nothing is copied.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::{qmat_bytes, Layout};
use crate::quant::f32_at;

/// An int8 matrix of `rows` outputs by `cols` inputs, stored `[out][in]`, with one f32
/// scale per output row: `W[r][c] ≈ data[r][c] · scale[r]`.
#[derive(Debug, Clone, Copy)]
pub struct QMat<'a> {
    /// Output rows.
    pub rows: usize,
    /// Inputs per row.
    pub cols: usize,
    /// `rows` f32 LE scales.
    pub scales: &'a [u8],
    /// `rows · cols` int8 values (as bytes).
    pub data: &'a [u8],
}

impl<'a> QMat<'a> {
    /// The view of `qmat_bytes(rows, cols)` bytes.
    pub fn from_bytes(bytes: &'a [u8], rows: usize, cols: usize) -> Result<QMat<'a>> {
        if bytes.len() != qmat_bytes(rows, cols) {
            return Err(Error::LengthMismatch {
                what: "int8 matrix",
                expected: qmat_bytes(rows, cols),
                got: bytes.len(),
            });
        }
        let (scales, data) = bytes.split_at(rows * 4);
        Ok(QMat {
            rows,
            cols,
            scales,
            data,
        })
    }

    /// Scale of output row `r`.
    #[inline(always)]
    pub fn scale(&self, r: usize) -> f32 {
        f32_at(self.scales, r)
    }

    /// Row `r` dequantized into `out` (`cols` values).
    #[inline(always)]
    pub fn dequant_row(&self, r: usize, out: &mut [f32]) {
        let s = self.scale(r);
        let row = self
            .data
            .get(r * self.cols..(r + 1) * self.cols)
            .unwrap_or(&[]);
        for (o, &q) in out.iter_mut().zip(row) {
            *o = (q as i8) as f32 * s;
        }
    }
}

/// One block's tensors.
#[derive(Debug, Clone, Copy)]
pub struct BlockWeights<'a> {
    /// Pre-attention norm gain (`d` f32 LE).
    pub ln_1: &'a [u8],
    /// Query projection `(d, d)`.
    pub q: QMat<'a>,
    /// Key projection `(d, d)`.
    pub k: QMat<'a>,
    /// Value projection `(d, d)`.
    pub v: QMat<'a>,
    /// Attention output projection `(d, d)`.
    pub c_proj: QMat<'a>,
    /// Pre-MLP norm gain.
    pub ln_2: &'a [u8],
    /// MLP up-projection `(4d, d)`.
    pub c_fc: QMat<'a>,
    /// MLP down-projection `(d, 4d)`.
    pub mlp_proj: QMat<'a>,
}

/// Carves tensors off the front of a byte slice.
struct Carver<'a> {
    rest: &'a [u8],
}

impl<'a> Carver<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(Error::Truncated {
                needed: n,
                got: self.rest.len(),
            });
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }

    fn mat(&mut self, rows: usize, cols: usize) -> Result<QMat<'a>> {
        QMat::from_bytes(self.take(qmat_bytes(rows, cols))?, rows, cols)
    }
}

/// The blob of a checked model file, with its layout.
#[derive(Debug, Clone, Copy)]
pub struct Weights<'a> {
    blob: &'a [u8],
    layout: Layout,
    config: Config,
    stored: usize,
    full: bool,
}

impl<'a> Weights<'a> {
    /// Views over `blob` (its length must equal the layout's total).
    pub fn new(blob: &'a [u8], config: Config, stored: usize, full: bool) -> Result<Weights<'a>> {
        let layout = Layout::new(&config, stored, full);
        if blob.len() != layout.total {
            return Err(Error::LengthMismatch {
                what: "tensor blob",
                expected: layout.total,
                got: blob.len(),
            });
        }
        Ok(Weights {
            blob,
            layout,
            config,
            stored,
            full,
        })
    }

    fn at(&self, offset: usize) -> Carver<'a> {
        Carver {
            rest: self.blob.get(offset..).unwrap_or(&[]),
        }
    }

    /// Token embedding `(k+1, d)`.
    pub fn wte(&self) -> Result<QMat<'a>> {
        self.at(0).mat(self.config.embed_rows(), self.config.width)
    }

    /// Position embedding `(n, d)`.
    pub fn wpe(&self) -> Result<QMat<'a>> {
        self.at(self.layout.wpe)
            .mat(self.config.seq_len(), self.config.width)
    }

    /// Block `l` (`l` < stored blocks).
    pub fn block(&self, l: usize) -> Result<BlockWeights<'a>> {
        if l >= self.stored {
            return Err(Error::BadLayer {
                layer: l,
                max: self.stored.saturating_sub(1),
            });
        }
        let (d, m) = (self.config.width, self.config.mlp_width());
        let mut c = self.at(self.layout.blocks + l * self.layout.block);
        Ok(BlockWeights {
            ln_1: c.take(d * 4)?,
            q: c.mat(d, d)?,
            k: c.mat(d, d)?,
            v: c.mat(d, d)?,
            c_proj: c.mat(d, d)?,
            ln_2: c.take(d * 4)?,
            c_fc: c.mat(m, d)?,
            mlp_proj: c.mat(d, m)?,
        })
    }

    /// The norm whose mean-pooled output is layer `l`'s probe feature: block l's `ln_1`
    /// for `l < L`, `ln_f` for `l = L`.
    pub fn feature_norm(&self, l: usize) -> Result<&'a [u8]> {
        let d = self.config.width;
        if l < self.stored {
            Ok(self.block(l)?.ln_1)
        } else if l == self.stored {
            // Full model: ln_f; cut file: the probe layer's ln_1. Both sit at the tail.
            self.at(self.layout.tail).take(d * 4)
        } else {
            Err(Error::BadLayer {
                layer: l,
                max: self.stored,
            })
        }
    }

    /// Final norm gain and next-token head `(k, d)` of a full model.
    pub fn head(&self) -> Result<(&'a [u8], QMat<'a>)> {
        if !self.full {
            return Err(Error::NoHead);
        }
        let mut c = self.at(self.layout.tail);
        let g = c.take(self.config.width * 4)?;
        Ok((g, c.mat(self.config.vocab, self.config.width)?))
    }
}
