//! The colour palette and the tokenizer: an image already at model resolution becomes a
//! raster-order sequence of palette indices.
//!
//! Nearest colour is decided in exact integer arithmetic: the centre `c` minimising
//! `sum_ch (p[ch] - c[ch])²` over the u8 channel values. **Ties go to the lowest index.**
//! This reproduces HuggingFace ImageGPT's image processor (which compares in the
//! normalised float space `p / 127.5 - 1`, a monotone rescaling of the same distance)
//! id for id on its fixture, where no ties occur.
//!
//! A palette also has a small file encoding of its own (see `FORMAT.md`):
//! [`Palette::to_bytes`] / [`Palette::from_bytes`].

use crate::config::MAX_VOCAB;
use crate::crc::crc32;
use crate::error::{Error, Result};

/// Largest channel count (RGB).
pub const MAX_CHANNELS: usize = 3;

/// Magic bytes that open a palette file.
pub const MAGIC: [u8; 8] = *b"IGPTPAL\0";
/// The palette file version this build writes and reads.
pub const VERSION: u16 = 1;
/// Bytes before the centres in a palette file.
pub const HEADER_LEN: usize = 16;

/// Up to 512 colour centres of 1 (grey) or 3 (RGB) u8 channels. Fixed capacity, no heap.
#[derive(Clone, PartialEq, Eq)]
pub struct Palette {
    channels: u8,
    len: u16,
    centres: [u8; MAX_VOCAB * MAX_CHANNELS],
}

impl core::fmt::Debug for Palette {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Palette")
            .field("channels", &self.channels)
            .field("len", &self.len)
            .field("centres", &self.centres())
            .finish()
    }
}

/// Squared Euclidean distance between two pixels of equal channel count.
#[inline]
pub fn sq_distance(a: &[u8], b: &[u8]) -> u32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as i32 - y as i32;
            (d * d) as u32
        })
        .sum()
}

impl Palette {
    /// A palette of `centres.len() / channels` colours; `centres` is row-major
    /// (colour `i`, channel `j` at `i * channels + j`). Needs 1 or 3 channels and
    /// 1..=512 colours.
    pub fn new(channels: usize, centres: &[u8]) -> Result<Palette> {
        if channels != 1 && channels != 3 {
            return Err(Error::BadChannels(channels));
        }
        let k = centres.len() / channels;
        if k == 0 || k > MAX_VOCAB {
            return Err(Error::BadVocab(k));
        }
        if k * channels != centres.len() {
            return Err(Error::LengthMismatch {
                what: "palette centres",
                expected: k * channels,
                got: centres.len(),
            });
        }
        let mut p = Palette {
            channels: channels as u8,
            len: k as u16,
            centres: [0; MAX_VOCAB * MAX_CHANNELS],
        };
        p.centres[..centres.len()].copy_from_slice(centres);
        Ok(p)
    }

    /// Number of colours k (1..=512).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Always false: a palette has at least one colour.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Channels per colour: 1 (grey) or 3 (RGB).
    pub fn channels(&self) -> usize {
        self.channels as usize
    }

    /// The SOS token id, k.
    pub fn sos(&self) -> u16 {
        self.len
    }

    /// All centres, row-major, `len() * channels()` bytes.
    pub fn centres(&self) -> &[u8] {
        &self.centres[..self.len() * self.channels()]
    }

    /// The colour of a token (`channels()` bytes); SOS and larger ids are errors.
    pub fn colour(&self, token: u16) -> Result<&[u8]> {
        let t = token as usize;
        if t >= self.len() {
            return Err(Error::BadToken(token));
        }
        let c = self.channels();
        Ok(&self.centres[t * c..(t + 1) * c])
    }

    /// Index of the nearest centre to `pixel` (`channels()` bytes); ties go to the lowest
    /// index.
    pub fn nearest(&self, pixel: &[u8]) -> Result<u16> {
        if pixel.len() != self.channels() {
            return Err(Error::LengthMismatch {
                what: "pixel channels",
                expected: self.channels(),
                got: pixel.len(),
            });
        }
        Ok(self.nearest_with_distance(pixel).0)
    }

    /// The nearest centre and its squared distance. `pixel.len()` must equal
    /// `channels()`; a shorter pixel is compared on its channels only.
    pub fn nearest_with_distance(&self, pixel: &[u8]) -> (u16, u32) {
        let mut best = (0u16, u32::MAX);
        for (i, c) in self.centres().chunks_exact(self.channels()).enumerate() {
            let d = sq_distance(pixel, c);
            // Strictly smaller: the first (lowest) index wins a tie.
            if d < best.1 {
                best = (i as u16, d);
            }
        }
        best
    }

    /// Tokenizes an image already at model resolution: `pixels` holds `out.len()`
    /// pixels of `channels()` interleaved bytes in raster order (row by row, left to
    /// right); `out[i]` becomes the palette index of pixel `i`. No SOS is added.
    pub fn tokenize(&self, pixels: &[u8], out: &mut [u16]) -> Result<()> {
        let c = self.channels();
        if pixels.len() != out.len().saturating_mul(c) {
            return Err(Error::LengthMismatch {
                what: "image pixels",
                expected: out.len().saturating_mul(c),
                got: pixels.len(),
            });
        }
        for (o, px) in out.iter_mut().zip(pixels.chunks_exact(c)) {
            *o = self.nearest_with_distance(px).0;
        }
        Ok(())
    }

    /// Turns tokens back into pixels (`out.len() == tokens.len() * channels()`).
    pub fn decode_tokens(&self, tokens: &[u16], out: &mut [u8]) -> Result<()> {
        let c = self.channels();
        if out.len() != tokens.len().saturating_mul(c) {
            return Err(Error::LengthMismatch {
                what: "decoded pixels",
                expected: tokens.len().saturating_mul(c),
                got: out.len(),
            });
        }
        for (&t, o) in tokens.iter().zip(out.chunks_exact_mut(c)) {
            o.copy_from_slice(self.colour(t)?);
        }
        Ok(())
    }

    /// The model input for an image's tokens: `out = [SOS, x0, .., x(n-2)]`, so that
    /// output position `i` predicts `x_i`. `out.len()` must equal `tokens.len()`.
    pub fn model_input(&self, tokens: &[u16], out: &mut [u16]) -> Result<()> {
        model_input(self.sos(), tokens, out)
    }

    /// Bytes of this palette's file encoding.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.centres().len() + 4
    }

    /// Writes the file encoding into `buf`, returning the bytes written.
    pub fn to_bytes(&self, buf: &mut [u8]) -> Result<usize> {
        let n = self.encoded_len();
        if buf.len() < n {
            return Err(Error::BufferTooSmall {
                needed: n,
                got: buf.len(),
            });
        }
        buf[..8].copy_from_slice(&MAGIC);
        buf[8..10].copy_from_slice(&VERSION.to_le_bytes());
        buf[10] = self.channels;
        buf[11] = 0;
        buf[12..14].copy_from_slice(&self.len.to_le_bytes());
        buf[14..16].copy_from_slice(&[0, 0]);
        let body = HEADER_LEN + self.centres().len();
        buf[HEADER_LEN..body].copy_from_slice(self.centres());
        let crc = crc32(&buf[..body]);
        buf[body..n].copy_from_slice(&crc.to_le_bytes());
        Ok(n)
    }

    /// Reads a palette file encoding; every field is checked (magic, version, channels,
    /// colour count, length, checksum, no trailing bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Palette> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::Truncated {
                needed: HEADER_LEN,
                got: bytes.len(),
            });
        }
        if bytes[..8] != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let channels = bytes[10] as usize;
        if channels != 1 && channels != 3 {
            return Err(Error::BadChannels(channels));
        }
        let k = u16::from_le_bytes([bytes[12], bytes[13]]) as usize;
        if k == 0 || k > MAX_VOCAB {
            return Err(Error::BadVocab(k));
        }
        let body = HEADER_LEN + k * channels;
        let total = body + 4;
        if bytes.len() < total {
            return Err(Error::Truncated {
                needed: total,
                got: bytes.len(),
            });
        }
        if bytes.len() > total {
            return Err(Error::TrailingBytes(bytes.len() - total));
        }
        let stored = u32::from_le_bytes([
            bytes[body],
            bytes[body + 1],
            bytes[body + 2],
            bytes[body + 3],
        ]);
        let computed = crc32(&bytes[..body]);
        if stored != computed {
            return Err(Error::ChecksumMismatch { stored, computed });
        }
        Palette::new(channels, &bytes[HEADER_LEN..body])
    }
}

/// The AR model input for an image's tokens: `out = [sos, x0, .., x(n-2)]`, so that
/// output position `i` predicts `x_i` (HF ImageGPT's convention; `sos` is the palette
/// size k). `out.len()` must equal `tokens.len()`.
pub fn model_input<T: Copy + From<u16>>(sos: u16, tokens: &[T], out: &mut [T]) -> Result<()> {
    if out.len() != tokens.len() {
        return Err(Error::LengthMismatch {
            what: "model input",
            expected: tokens.len(),
            got: out.len(),
        });
    }
    if let Some((first, rest)) = out.split_first_mut() {
        *first = T::from(sos);
        rest.copy_from_slice(&tokens[..tokens.len() - 1]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey4() -> Palette {
        Palette::new(1, &[0, 80, 160, 240]).unwrap()
    }

    #[test]
    fn nearest_exact_and_ties_lowest() {
        let p = grey4();
        assert_eq!(p.nearest(&[0]), Ok(0));
        assert_eq!(p.nearest(&[39]), Ok(0));
        // 40 is 40 from centre 0 and 40 from centre 1: the lower index wins.
        assert_eq!(p.nearest(&[40]), Ok(0));
        assert_eq!(p.nearest(&[41]), Ok(1));
        assert_eq!(p.nearest(&[255]), Ok(3));
        let rgb = Palette::new(3, &[10, 10, 10, 12, 10, 10]).unwrap();
        assert_eq!(rgb.nearest(&[11, 10, 10]), Ok(0));
        assert_eq!(
            rgb.nearest(&[11, 10]),
            Err(Error::LengthMismatch {
                what: "pixel channels",
                expected: 3,
                got: 2
            })
        );
    }

    #[test]
    fn duplicate_centres_pick_lowest() {
        let p = Palette::new(1, &[50, 50, 50]).unwrap();
        assert_eq!(p.nearest(&[50]), Ok(0));
    }

    #[test]
    fn construction_errors() {
        assert_eq!(Palette::new(2, &[0, 0]), Err(Error::BadChannels(2)));
        assert_eq!(Palette::new(1, &[]), Err(Error::BadVocab(0)));
        assert_eq!(Palette::new(1, &[0; 513]), Err(Error::BadVocab(513)));
        assert!(matches!(
            Palette::new(3, &[0; 4]),
            Err(Error::LengthMismatch { .. })
        ));
        assert!(Palette::new(3, &[7; 1536]).is_ok());
    }

    #[test]
    fn tokenize_decode_and_model_input() {
        let p = grey4();
        let mut t = [0u16; 4];
        p.tokenize(&[0, 100, 200, 255], &mut t).unwrap();
        assert_eq!(t, [0, 1, 2, 3]);
        let mut px = [0u8; 4];
        p.decode_tokens(&t, &mut px).unwrap();
        assert_eq!(px, [0, 80, 160, 240]);
        let mut input = [0u16; 4];
        p.model_input(&t, &mut input).unwrap();
        assert_eq!(input, [4, 0, 1, 2]);
        assert_eq!(p.decode_tokens(&[4], &mut [0]), Err(Error::BadToken(4)));
        assert!(p.tokenize(&[0, 1, 2], &mut t).is_err());
        assert!(p.model_input(&t, &mut [0u16; 3]).is_err());
        p.model_input(&[], &mut []).unwrap();
    }

    #[test]
    fn file_round_trip_and_every_corruption() {
        let p = Palette::new(3, &[1, 2, 3, 4, 5, 6, 200, 100, 0]).unwrap();
        let mut buf = [0u8; 64];
        let n = p.to_bytes(&mut buf).unwrap();
        assert_eq!(n, 16 + 9 + 4);
        let bytes = &buf[..n];
        assert_eq!(Palette::from_bytes(bytes), Ok(p.clone()));
        // Every truncation is an error, never a panic.
        for cut in 0..n {
            assert!(Palette::from_bytes(&bytes[..cut]).is_err(), "cut {cut}");
        }
        // Every single-bit flip is detected.
        for i in 0..n {
            for bit in 0..8 {
                let mut b = [0u8; 64];
                b[..n].copy_from_slice(bytes);
                b[i] ^= 1 << bit;
                assert!(Palette::from_bytes(&b[..n]).is_err(), "byte {i} bit {bit}");
            }
        }
        assert_eq!(
            Palette::from_bytes(&buf[..n + 1]),
            Err(Error::TrailingBytes(1))
        );
        assert!(matches!(
            p.to_bytes(&mut [0u8; 10]),
            Err(Error::BufferTooSmall { .. })
        ));
        let mut bad = [0u8; 64];
        bad[..n].copy_from_slice(bytes);
        bad[0] = b'X';
        assert_eq!(Palette::from_bytes(&bad[..n]), Err(Error::BadMagic));
    }
}
