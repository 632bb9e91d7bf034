//! The int8 model file: what `igpt export` writes and [`crate::Model::parse`] reads.
//!
//! A file is the [postcard] encoding of one [`Header`] followed by 4 bytes: the CRC-32
//! (little-endian) of everything before them. The header carries the shape, the palette,
//! the optional linear-probe head and one borrowed byte blob holding every quantized
//! tensor in the fixed order of [`Layout`]. `FORMAT.md` gives the bytes field by field.
//!
//! Reading never copies a weight: the header's slices borrow the file, and the tensors are
//! carved out of the blob by offsets computed from the shape. Everything is checked (magic,
//! version, checksum, every length against the shape) before a single weight is used.
//!
//! The host writer ([`write()`]) uses these same definitions, so writer and reader cannot
//! drift apart.

use crate::config::{Config, MAX_VOCAB};
use crate::crc::crc32;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Magic bytes that open an int8 model file.
pub const MAGIC: [u8; 8] = *b"IGPTQ8\0\0";
/// The model file version this build writes and reads.
pub const VERSION: u16 = 1;
/// Most classes a probe head may have.
pub const MAX_CLASSES: usize = 256;

/// The model's shape as stored (postcard varints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Palette size k.
    pub vocab: u16,
    /// Image side.
    pub side: u16,
    /// Width d.
    pub width: u32,
    /// Heads.
    pub heads: u16,
    /// Blocks of the trained model.
    pub layers: u16,
}

impl Shape {
    /// The shape of a config (fields that do not fit give an error).
    pub fn from_config(c: &Config) -> Result<Shape> {
        let small =
            |v: usize, what: &'static str| u16::try_from(v).map_err(|_| Error::Malformed(what));
        Ok(Shape {
            vocab: small(c.vocab, "vocab does not fit 16 bits")?,
            side: small(c.side, "side does not fit 16 bits")?,
            width: u32::try_from(c.width)
                .map_err(|_| Error::Malformed("width does not fit 32 bits"))?,
            heads: small(c.heads, "heads do not fit 16 bits")?,
            layers: small(c.layers, "layers do not fit 16 bits")?,
        })
    }

    /// The validated config.
    pub fn config(&self) -> Result<Config> {
        Config::new(
            self.vocab as usize,
            self.side as usize,
            self.width as usize,
            self.heads as usize,
            self.layers as usize,
        )
    }
}

/// The palette the model was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaletteRecord<'a> {
    /// 1 (grey) or 3 (RGB).
    pub channels: u8,
    /// `k · channels` bytes, colour-major.
    pub centres: &'a [u8],
}

/// A linear probe on the mean-pooled features of one layer: `p = softmax(W·(f − μ)/σ + b)`.
/// Every float array is little-endian f32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord<'a> {
    /// The feature layer: `l < L` is the mean of block l's first norm output, `L` the mean
    /// of the final norm output.
    pub layer: u16,
    /// Number of classes c.
    pub classes: u16,
    /// `d` feature means μ.
    pub mean: &'a [u8],
    /// `d` feature standard deviations σ (positive).
    pub std: &'a [u8],
    /// `(c, d)` weights W, row-major.
    pub weight: &'a [u8],
    /// `c` biases b.
    pub bias: &'a [u8],
    /// Class names, one per line (`c` lines), or empty.
    pub labels: &'a str,
}

/// Everything in a model file before its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header<'a> {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`VERSION`].
    pub version: u16,
    /// The trained model's shape.
    pub shape: Shape,
    /// Blocks stored in this file: `shape.layers` for a full model, or the probe layer for
    /// a file cut with `--upto-probe-layer` (then the final norm and head are absent).
    pub stored_layers: u16,
    /// True for an AR (causal) model, false for BERT.
    pub causal: bool,
    /// The palette.
    #[serde(borrow)]
    pub palette: PaletteRecord<'a>,
    /// The linear-probe head, if exported with one.
    #[serde(borrow)]
    pub probe: Option<ProbeRecord<'a>>,
    /// Every quantized tensor, in [`Layout`] order.
    pub tensors: &'a [u8],
}

/// Where each tensor lives in the blob, computed from the shape alone.
///
/// An int8 matrix of `r` output rows and `c` inputs (stored `[out][in]`, each output row
/// with its own scale) takes `4r` bytes of f32 scales followed by `r·c` int8 values. A
/// norm gain takes `4d` bytes of f32. The blob is, in order:
///
/// - `wte`: matrix `(k+1, d)` (row `k` is SOS); `wpe`: matrix `(n, d)`;
/// - per stored block: `ln_1` gain, `q`, `k`, `v`, `c_proj` matrices `(d, d)`, `ln_2`
///   gain, `c_fc` `(4d, d)`, `mlp_proj` `(d, 4d)`;
/// - a full model: `ln_f` gain, `lm_head` `(k, d)`; a cut one: block `S`'s `ln_1` gain
///   (the probe layer's norm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Width d.
    pub d: usize,
    /// Bytes of one block.
    pub block: usize,
    /// Offset of `wpe`.
    pub wpe: usize,
    /// Offset of block 0.
    pub blocks: usize,
    /// Offset of what follows the stored blocks.
    pub tail: usize,
    /// Total blob bytes.
    pub total: usize,
}

/// Bytes of an int8 matrix of `rows` outputs and `cols` inputs.
pub const fn qmat_bytes(rows: usize, cols: usize) -> usize {
    rows.saturating_mul(4)
        .saturating_add(rows.saturating_mul(cols))
}

impl Layout {
    /// The layout of a model of shape `c` storing `stored` blocks (`full`: with the final
    /// norm and head).
    pub const fn new(c: &Config, stored: usize, full: bool) -> Layout {
        let d = c.width;
        let gain = d.saturating_mul(4);
        let block = gain
            .saturating_mul(2)
            .saturating_add(qmat_bytes(d, d).saturating_mul(4))
            .saturating_add(qmat_bytes(c.mlp_width(), d))
            .saturating_add(qmat_bytes(d, c.mlp_width()));
        let wpe = qmat_bytes(c.embed_rows(), d);
        let blocks = wpe.saturating_add(qmat_bytes(c.seq_len(), d));
        let tail = blocks.saturating_add(block.saturating_mul(stored));
        let total = if full {
            tail.saturating_add(gain)
                .saturating_add(qmat_bytes(c.vocab, d))
        } else {
            tail.saturating_add(gain)
        };
        Layout {
            d,
            block,
            wpe,
            blocks,
            tail,
            total,
        }
    }
}

/// Checks a header against itself: shape, palette, probe and blob lengths. Returns the
/// validated config.
pub fn check(h: &Header<'_>) -> Result<Config> {
    if h.magic != MAGIC {
        return Err(Error::NotAModel);
    }
    if h.version != VERSION {
        return Err(Error::ModelVersion {
            found: h.version,
            supported: VERSION,
        });
    }
    let c = h.shape.config()?;
    let stored = h.stored_layers as usize;
    if stored > c.layers {
        return Err(Error::Malformed("more stored blocks than layers"));
    }
    let ch = h.palette.channels as usize;
    if ch != 1 && ch != 3 {
        return Err(Error::BadChannels(ch));
    }
    if c.vocab > MAX_VOCAB || h.palette.centres.len() != c.vocab.saturating_mul(ch) {
        return Err(Error::Malformed("palette size differs from the vocabulary"));
    }
    let full = stored == c.layers;
    if let Some(p) = &h.probe {
        let (l, k) = (p.layer as usize, p.classes as usize);
        if l > stored || (!full && l != stored) {
            return Err(Error::Malformed("probe layer is not in the file"));
        }
        if k == 0 || k > MAX_CLASSES {
            return Err(Error::Malformed("probe class count out of range (1..=256)"));
        }
        let d4 = c.width.saturating_mul(4);
        if p.mean.len() != d4 || p.std.len() != d4 {
            return Err(Error::Malformed(
                "probe standardisation length differs from width",
            ));
        }
        if p.weight.len() != d4.saturating_mul(k) || p.bias.len() != k.saturating_mul(4) {
            return Err(Error::Malformed(
                "probe weight length differs from classes x width",
            ));
        }
        if !p.labels.is_empty() && p.labels.split('\n').count() != k {
            return Err(Error::Malformed("probe label count differs from classes"));
        }
    } else if !full {
        return Err(Error::Malformed(
            "a file cut at the probe layer has no probe",
        ));
    }
    let layout = Layout::new(&c, stored, full);
    if h.tensors.len() != layout.total {
        return Err(Error::LengthMismatch {
            what: "tensor blob",
            expected: layout.total,
            got: h.tensors.len(),
        });
    }
    Ok(c)
}

/// Reads and checks a model file: magic, version, checksum, the postcard header, every
/// length against the shape, and no trailing bytes.
pub fn read(bytes: &[u8]) -> Result<(Header<'_>, Config)> {
    if bytes.len() < MAGIC.len() + 1 + 4 {
        if bytes.len() >= MAGIC.len() && bytes[..MAGIC.len()] != MAGIC {
            return Err(Error::NotAModel);
        }
        return Err(Error::Truncated {
            needed: MAGIC.len() + 5,
            got: bytes.len(),
        });
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::NotAModel);
    }
    // The version is the first field after the magic: read it alone, so that a file of a
    // newer layout gets a version error rather than a checksum or decode error.
    let (version, _) = postcard::take_from_bytes::<u16>(&bytes[MAGIC.len()..])
        .map_err(|_| Error::Malformed("version field"))?;
    if version != VERSION {
        return Err(Error::ModelVersion {
            found: version,
            supported: VERSION,
        });
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32(body);
    if stored != computed {
        return Err(Error::ChecksumMismatch { stored, computed });
    }
    let (h, rest) = postcard::take_from_bytes::<Header<'_>>(body)
        .map_err(|_| Error::Malformed("header does not decode"))?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes(rest.len()));
    }
    let c = check(&h)?;
    Ok((h, c))
}

/// Writes a model file (header + CRC) into `buf`, returning its length. The header is
/// checked first, as a reader would.
pub fn write(h: &Header<'_>, buf: &mut [u8]) -> Result<usize> {
    check(h)?;
    let got = buf.len();
    let n = postcard::to_slice(h, buf)
        .map_err(|_| Error::BufferTooSmall {
            needed: max_len(h),
            got,
        })?
        .len();
    let crc = crc32(&buf[..n]);
    let end = n + 4;
    if buf.len() < end {
        return Err(Error::BufferTooSmall {
            needed: end,
            got: buf.len(),
        });
    }
    buf[n..end].copy_from_slice(&crc.to_le_bytes());
    Ok(end)
}

/// An upper bound of a file's length for a header: the blob, the probe arrays and the
/// palette plus a generous allowance for the varints and fixed fields.
pub fn max_len(h: &Header<'_>) -> usize {
    let probe = h.probe.map_or(0, |p| {
        p.mean.len() + p.std.len() + p.weight.len() + p.bias.len() + p.labels.len()
    });
    h.tensors.len() + probe + h.palette.centres.len() + 128
}
