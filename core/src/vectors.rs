//! Firmware test vectors (`igpt export-vectors`): test images' tokens, their labels and
//! the host's int8 prediction for each, so a device can check that it computes what the
//! host computed. The reader and the writer live here, once, for the host and the
//! firmware (FORMAT.md, "Test vectors").
//!
//! Layout, little-endian: magic `IGPTVEC1`, u32 count, u32 n (tokens per image), then per
//! image n u16 tokens, u16 label, u16 host class, u32 host probability (f32 bits), then a
//! CRC-32 of everything before it.
//!
//! Both sides borrow caller buffers; nothing allocates or panics.

use crate::error::{Error, Result};

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"IGPTVEC1";
const HEADER: usize = 16;

/// Bytes of one image's record for `n` tokens.
pub const fn record_len(n: usize) -> usize {
    2 * n + 8
}

/// Bytes of a file of `count` images of `n` tokens.
pub const fn file_len(count: usize, n: usize) -> usize {
    HEADER + count * record_len(n) + 4
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

/// A parsed vectors file: a view of its bytes, checked (magic, sizes, CRC).
#[derive(Debug, Clone, Copy)]
pub struct Vectors<'a> {
    bytes: &'a [u8],
    count: usize,
    n: usize,
}

/// One image of a vectors file.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    bytes: &'a [u8],
    n: usize,
}

impl<'a> Vectors<'a> {
    /// Checks and borrows `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Vectors<'a>> {
        if bytes.len() < HEADER + 4 {
            return Err(Error::Truncated {
                needed: HEADER + 4,
                got: bytes.len(),
            });
        }
        if bytes[..8] != MAGIC {
            return Err(Error::BadMagic);
        }
        let body = bytes.len() - 4;
        let stored = u32_at(bytes, body);
        let computed = crate::crc32(&bytes[..body]);
        if stored != computed {
            return Err(Error::ChecksumMismatch { stored, computed });
        }
        let count = u32_at(bytes, 8) as usize;
        let n = u32_at(bytes, 12) as usize;
        let want = count
            .checked_mul(record_len(n))
            .and_then(|r| r.checked_add(HEADER + 4));
        match want {
            Some(w) if w == bytes.len() => Ok(Vectors { bytes, count, n }),
            _ => Err(Error::Malformed(
                "vectors file size disagrees with its count",
            )),
        }
    }

    /// Images in the file.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the file holds no image.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Tokens per image.
    pub fn seq_len(&self) -> usize {
        self.n
    }

    /// Image `i`.
    pub fn record(&self, i: usize) -> Option<Record<'a>> {
        if i >= self.count {
            return None;
        }
        let at = HEADER + i * record_len(self.n);
        Some(Record {
            bytes: self.bytes.get(at..at + record_len(self.n))?,
            n: self.n,
        })
    }
}

impl Record<'_> {
    /// Copies the image's tokens into `out` (exactly `n` long).
    pub fn tokens(&self, out: &mut [u16]) -> Result<()> {
        if out.len() != self.n {
            return Err(Error::LengthMismatch {
                what: "vector tokens",
                expected: self.n,
                got: out.len(),
            });
        }
        for (t, o) in out.iter_mut().enumerate() {
            *o = u16_at(self.bytes, 2 * t);
        }
        Ok(())
    }

    /// The image's label.
    pub fn label(&self) -> u16 {
        u16_at(self.bytes, 2 * self.n)
    }

    /// The host's predicted class.
    pub fn class(&self) -> u16 {
        u16_at(self.bytes, 2 * self.n + 2)
    }

    /// The host's probability of that class.
    pub fn prob(&self) -> f32 {
        f32::from_bits(u32_at(self.bytes, 2 * self.n + 4))
    }
}

/// Writes a vectors file into a caller buffer of [`file_len`] bytes: [`Writer::new`],
/// one [`Writer::push`] per image, then [`Writer::finish`].
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    n: usize,
    count: usize,
    written: usize,
}

impl<'a> Writer<'a> {
    /// Starts a file of `count` images of `n` tokens in `buf`.
    pub fn new(buf: &'a mut [u8], count: usize, n: usize) -> Result<Writer<'a>> {
        let needed = file_len(count, n);
        if buf.len() < needed {
            return Err(Error::BufferTooSmall {
                needed,
                got: buf.len(),
            });
        }
        let (Ok(c), Ok(nn)) = (u32::try_from(count), u32::try_from(n)) else {
            return Err(Error::Malformed("too many vectors"));
        };
        buf[..8].copy_from_slice(&MAGIC);
        buf[8..12].copy_from_slice(&c.to_le_bytes());
        buf[12..16].copy_from_slice(&nn.to_le_bytes());
        Ok(Writer {
            buf,
            n,
            count,
            written: 0,
        })
    }

    /// Appends one image.
    pub fn push(&mut self, tokens: &[u16], label: u16, class: u16, prob: f32) -> Result<()> {
        if tokens.len() != self.n {
            return Err(Error::LengthMismatch {
                what: "vector tokens",
                expected: self.n,
                got: tokens.len(),
            });
        }
        if self.written >= self.count {
            return Err(Error::Malformed("more vectors than the header's count"));
        }
        let at = HEADER + self.written * record_len(self.n);
        let rec = &mut self.buf[at..at + record_len(self.n)];
        for (t, o) in tokens.iter().zip(rec.chunks_exact_mut(2)) {
            o.copy_from_slice(&t.to_le_bytes());
        }
        let tail = &mut rec[2 * self.n..];
        tail[..2].copy_from_slice(&label.to_le_bytes());
        tail[2..4].copy_from_slice(&class.to_le_bytes());
        tail[4..8].copy_from_slice(&prob.to_bits().to_le_bytes());
        self.written += 1;
        Ok(())
    }

    /// Writes the CRC; returns the file's length.
    pub fn finish(self) -> Result<usize> {
        if self.written != self.count {
            return Err(Error::Malformed("fewer vectors than the header's count"));
        }
        let body = file_len(self.count, self.n) - 4;
        let crc = crate::crc32(&self.buf[..body]);
        self.buf[body..body + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(body + 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_and_every_corruption_is_refused() {
        let mut buf = [0u8; file_len(2, 3)];
        let mut w = Writer::new(&mut buf, 2, 3).unwrap();
        w.push(&[1, 2, 3], 7, 8, 0.5).unwrap();
        assert!(w.push(&[1, 2], 0, 0, 0.0).is_err());
        w.push(&[4, 5, 6], 9, 1, 0.25).unwrap();
        assert!(w.push(&[4, 5, 6], 9, 1, 0.25).is_err());
        let len = w.finish().unwrap();
        assert_eq!(len, buf.len());
        let v = Vectors::parse(&buf).unwrap();
        assert_eq!((v.len(), v.seq_len()), (2, 3));
        let r = v.record(1).unwrap();
        let mut t = [0u16; 3];
        r.tokens(&mut t).unwrap();
        assert_eq!((t, r.label(), r.class(), r.prob()), ([4, 5, 6], 9, 1, 0.25));
        assert!(v.record(2).is_none());
        for cut in 0..buf.len() {
            assert!(Vectors::parse(&buf[..cut]).is_err(), "{cut}");
        }
        for i in 0..buf.len() {
            let mut b = buf;
            b[i] ^= 0x10;
            assert!(Vectors::parse(&b).is_err(), "{i}");
        }
    }
}
