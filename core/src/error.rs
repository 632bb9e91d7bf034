//! The one error type of `igpt-core`.

use core::fmt;

/// Everything that can go wrong in `igpt-core`. No input makes the core panic: each
/// problem is one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The palette size k is 0 or above [`crate::config::MAX_VOCAB`] (512).
    BadVocab(usize),
    /// The image side is 0 or its square exceeds [`crate::config::MAX_SEQ_LEN`].
    BadSide(usize),
    /// The model width is 0 or above [`crate::config::MAX_WIDTH`].
    BadWidth(usize),
    /// The number of heads is 0 or above the width.
    BadHeads(usize),
    /// The width is not divisible by the number of heads.
    WidthNotDivisible {
        /// Model width d.
        width: usize,
        /// Number of heads.
        heads: usize,
    },
    /// The number of layers is 0 or above [`crate::config::MAX_LAYERS`].
    BadLayers(usize),
    /// A palette has a channel count other than 1 (grey) or 3 (RGB).
    BadChannels(usize),
    /// A buffer or slice has the wrong length.
    LengthMismatch {
        /// What the buffer holds.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A token id is not a palette colour (it is `>= k`).
    BadToken(u16),
    /// An output buffer is too small.
    BufferTooSmall {
        /// Bytes (or elements) needed.
        needed: usize,
        /// Bytes (or elements) available.
        got: usize,
    },
    /// Encoded data ends before it should.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// Encoded data does not start with the expected magic bytes.
    BadMagic,
    /// Encoded data has a format version this build does not read.
    UnsupportedVersion(u16),
    /// The checksum stored in encoded data does not match its contents.
    ChecksumMismatch {
        /// The CRC-32 stored in the data.
        stored: u32,
        /// The CRC-32 computed over the data.
        computed: u32,
    },
    /// Encoded data has bytes after its end.
    TrailingBytes(usize),
    /// A preset name is not known.
    UnknownPreset,
    /// Bytes that should be an int8 model file do not start with its magic.
    NotAModel,
    /// An int8 model file of a format version this build does not read.
    ModelVersion {
        /// The version in the file.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// An int8 model file whose fields contradict each other or its config.
    Malformed(&'static str),
    /// A model file's shape differs from the one the caller was built for.
    ConfigMismatch {
        /// The field that differs.
        what: &'static str,
        /// The caller's value.
        expected: usize,
        /// The file's value.
        got: usize,
    },
    /// The model file has no linear-probe head.
    NoProbe,
    /// The model file stops at the probe layer: it has no next-token head.
    NoHead,
    /// A layer index beyond the model's (or the file's) layers.
    BadLayer {
        /// The layer asked for.
        layer: usize,
        /// The largest valid layer.
        max: usize,
    },
    /// KV-cached sampling needs a causal (AR) model.
    NotCausal,
    /// A float the math needs finite (a scale, a gain, a probe value) is NaN or infinite,
    /// or a standard deviation is not positive: the file's checksum is valid, its
    /// contents are not.
    NonFinite(&'static str),
}

/// `core::result::Result` with [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::BadVocab(k) => write!(f, "palette size {k} is out of range (1..=512)"),
            Error::BadSide(s) => write!(
                f,
                "image side {s} is out of range (1..={})",
                crate::config::MAX_SIDE
            ),
            Error::BadWidth(d) => write!(
                f,
                "model width {d} is out of range (1..={})",
                crate::config::MAX_WIDTH
            ),
            Error::BadHeads(h) => write!(f, "number of heads {h} must be in 1..=width"),
            Error::WidthNotDivisible { width, heads } => {
                write!(f, "width {width} is not divisible by {heads} heads")
            }
            Error::BadLayers(l) => write!(
                f,
                "number of layers {l} is out of range (1..={})",
                crate::config::MAX_LAYERS
            ),
            Error::BadChannels(c) => {
                write!(f, "{c} colour channels: a palette has 1 (grey) or 3 (RGB)")
            }
            Error::LengthMismatch {
                what,
                expected,
                got,
            } => write!(f, "{what}: expected length {expected}, got {got}"),
            Error::BadToken(t) => write!(f, "token {t} is not a palette colour"),
            Error::BufferTooSmall { needed, got } => {
                write!(f, "buffer too small: need {needed}, have {got}")
            }
            Error::Truncated { needed, got } => {
                write!(f, "data is truncated: need {needed} bytes, have {got}")
            }
            Error::BadMagic => write!(f, "wrong magic bytes (not a file of this kind)"),
            Error::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            Error::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:08x}, computed {computed:08x}): the data is corrupt"
            ),
            Error::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the end of the data"),
            Error::UnknownPreset => write!(f, "unknown preset (known: S, M, L, cpu, fw, test)"),
            Error::NotAModel => write!(
                f,
                "not an igpt int8 model file (wrong magic); write one with `igpt export`"
            ),
            Error::ModelVersion { found, supported } => write!(
                f,
                "model file format version {found}, this build reads version {supported}: \
                 export the model again with this version of `igpt export`"
            ),
            Error::Malformed(what) => write!(f, "malformed model file: {what}"),
            Error::ConfigMismatch {
                what,
                expected,
                got,
            } => write!(
                f,
                "model file has {what} {got}, this program was built for {expected}: \
                 export a model of this shape or rebuild with the file's config"
            ),
            Error::NoProbe => write!(
                f,
                "model file has no probe head: export it with `igpt export --probe probe-head.json`"
            ),
            Error::NoHead => write!(
                f,
                "model file stops at the probe layer (--upto-probe-layer): no next-token head"
            ),
            Error::BadLayer { layer, max } => {
                write!(f, "layer {layer} is out of range (0..={max})")
            }
            Error::NotCausal => write!(
                f,
                "the model is bidirectional (BERT): next-token sampling needs an AR model"
            ),
            Error::NonFinite(what) => write!(
                f,
                "model file holds a non-finite or invalid number in {what} (its checksum is valid: it was written that way)"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
