//! Working memory of the int8 forward pass, owned by the caller and sized by `const fn`s
//! of the config, so firmware can put it in a `static`.

use crate::config::Config;
use crate::error::{Error, Result};

/// Rows of the MLP processed together (bounds the MLP's hidden buffer to
/// `MLP_ROWS · 4d` instead of `n · 4d`).
pub const MLP_ROWS: usize = 16;

/// f32 elements of a [`Scratch`] for a config: residual stream, norm/attention output,
/// queries, keys and values (`5·n·d`), attention's work (see [`attn_work_len`]) and row
/// scales (`n`), the MLP's hidden rows and their group scales (`MLP_ROWS·(4d + ⌈4d/32⌉)`),
/// and the probe's features (`d`).
pub const fn scratch_f32_len(c: &Config) -> usize {
    let nd = c.seq_len().saturating_mul(c.width);
    let m = c.mlp_width();
    nd.saturating_mul(5)
        .saturating_add(attn_work_len(c))
        .saturating_add(c.seq_len())
        .saturating_add(MLP_ROWS.saturating_mul(m.saturating_add(crate::kernels::groups(m))))
        .saturating_add(c.width)
}

/// f32 elements of attention's work buffer: one query's scores (`n`) and one head's keys
/// transposed (`n·hd`), so the scores of 16 positions are one contiguous loop.
pub const fn attn_work_len(c: &Config) -> usize {
    let hd = match c.width.checked_div(c.heads) {
        Some(hd) => hd,
        None => 0,
    };
    c.seq_len().saturating_mul(hd.saturating_add(1))
}

/// i8 elements of a [`Scratch`]: quantized activations (`n·d`) and MLP hidden rows
/// (`MLP_ROWS·4d`).
pub const fn scratch_i8_len(c: &Config) -> usize {
    c.seq_len()
        .saturating_mul(c.width)
        .saturating_add(MLP_ROWS.saturating_mul(c.mlp_width()))
}

/// f32 elements of a [`KvCache`]: keys and values of every layer and position, `2·L·n·d`.
pub const fn kv_f32_len(c: &Config) -> usize {
    c.seq_len()
        .saturating_mul(c.width)
        .saturating_mul(c.layers)
        .saturating_mul(2)
}

/// Caller-provided working memory of a forward pass.
#[derive(Debug)]
pub struct Scratch<'s> {
    pub(crate) f: &'s mut [f32],
    pub(crate) q: &'s mut [i8],
}

impl<'s> Scratch<'s> {
    /// Wraps buffers of at least [`scratch_f32_len`] and [`scratch_i8_len`] elements for
    /// `config` (larger is fine: one scratch can serve smaller models).
    pub fn new(config: &Config, f: &'s mut [f32], q: &'s mut [i8]) -> Result<Scratch<'s>> {
        let s = Scratch { f, q };
        s.check(config)?;
        Ok(s)
    }

    pub(crate) fn check(&self, config: &Config) -> Result<()> {
        let (nf, nq) = (scratch_f32_len(config), scratch_i8_len(config));
        if self.f.len() < nf {
            return Err(Error::BufferTooSmall {
                needed: nf,
                got: self.f.len(),
            });
        }
        if self.q.len() < nq {
            return Err(Error::BufferTooSmall {
                needed: nq,
                got: self.q.len(),
            });
        }
        Ok(())
    }
}

/// Keys and values of the positions seen so far, for KV-cached sampling.
#[derive(Debug)]
pub struct KvCache<'s> {
    pub(crate) k: &'s mut [f32],
    pub(crate) v: &'s mut [f32],
    pub(crate) len: usize,
}

impl<'s> KvCache<'s> {
    /// Wraps `buf` of at least [`kv_f32_len`] elements, empty.
    pub fn new(config: &Config, buf: &'s mut [f32]) -> Result<KvCache<'s>> {
        let need = kv_f32_len(config);
        if buf.len() < need {
            return Err(Error::BufferTooSmall {
                needed: need,
                got: buf.len(),
            });
        }
        let (k, v) = buf.split_at_mut(need / 2);
        Ok(KvCache { k, v, len: 0 })
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first step.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position (start a new sequence).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}
