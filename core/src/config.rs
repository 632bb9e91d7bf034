//! Model shapes: [`Config`], the paper's presets and this project's small ones, and the
//! parameter, compute and size accounting that `igpt info` prints.
//!
//! Dimension letters used across the project: `k` palette size (vocabulary without SOS),
//! `n` sequence length (= side²), `d` model width, `h` heads, `hd = d / h` head width,
//! `L` layers, `4d` MLP width.

use crate::error::{Error, Result};

/// Largest palette: 512 colours (the paper's "9-bit" RGB palette).
pub const MAX_VOCAB: usize = 512;
/// Largest image side (the paper's largest input is 64x64).
pub const MAX_SIDE: usize = 64;
/// Largest sequence length, `MAX_SIDE²`.
pub const MAX_SEQ_LEN: usize = MAX_SIDE * MAX_SIDE;
/// Largest model width (iGPT-XL is 3072 wide); bounds every size computed from a shape.
pub const MAX_WIDTH: usize = 16384;
/// Largest number of layers (iGPT-XL has 60).
pub const MAX_LAYERS: usize = 1024;

/// The shape of an iGPT model. Build one with [`Config::new`] (validated) or
/// [`Config::preset`]; a hand-built value should go through [`Config::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Config {
    /// Palette size k: token ids `0..k` are colours, `k` is SOS. `1..=512`.
    pub vocab: usize,
    /// Image side in pixels; the sequence length is `side²`.
    pub side: usize,
    /// Model width d.
    pub width: usize,
    /// Number of attention heads; divides `width`.
    pub heads: usize,
    /// Number of transformer blocks.
    pub layers: usize,
}

/// Named model shapes.
///
/// | preset | layers | width | heads | side | k | use |
/// |---|---|---|---|---|---|---|
/// | `S` | 24 | 512 | 8 | 32 | 512 | paper's iGPT-S |
/// | `M` | 36 | 1024 | 8 | 32 | 512 | paper's iGPT-M |
/// | `L` | 48 | 1536 | 16 | 32 | 512 | paper's iGPT-L |
/// | `cpu` | 8 | 256 | 8 | 28 | 16 | Fashion-MNIST at full resolution on a CPU host |
/// | `fw` | 4 | 128 | 4 | 14 | 16 | firmware-sized: fits a Cortex-M4's 4 MiB flash in int8 |
/// | `test` | 2 | 32 | 4 | 8 | 16 | unit tests and gradient checks |
///
/// `cpu` is the shape of training benchmark (b) (6.5M parameters, 6.2 GMAC per 28x28
/// image with the head); `fw` is the shape of the PyTorch anchor of the probe results
/// (0.82M parameters, 14x14, 16 grey levels), 0.17 GMAC per image: under 2 s per image
/// under QEMU at ~100 M int8 MAC/s (`igpt info` prints these figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// iGPT-S: 24 layers, width 512, 8 heads, 32x32, 512 colours.
    S,
    /// iGPT-M: 36 layers, width 1024, 8 heads, 32x32, 512 colours.
    M,
    /// iGPT-L: 48 layers, width 1536, 16 heads, 32x32, 512 colours.
    L,
    /// CPU training on 28x28 grey images: 8 layers, width 256, 8 heads, 16 grey levels.
    Cpu,
    /// Firmware: 4 layers, width 128, 4 heads, 14x14, 16 grey levels.
    Fw,
    /// Tests: 2 layers, width 32, 4 heads, 8x8, 16 colours.
    Test,
}

impl Preset {
    /// Every preset, in the order of the table above.
    pub const ALL: [Preset; 6] = [
        Preset::S,
        Preset::M,
        Preset::L,
        Preset::Cpu,
        Preset::Fw,
        Preset::Test,
    ];

    /// The preset's name as the CLI spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Preset::S => "S",
            Preset::M => "M",
            Preset::L => "L",
            Preset::Cpu => "cpu",
            Preset::Fw => "fw",
            Preset::Test => "test",
        }
    }

    /// Parses a preset name, ignoring ASCII case (`"s"`, `"S"`, `"Fw"`).
    pub fn from_name(name: &str) -> Result<Preset> {
        Preset::ALL
            .iter()
            .copied()
            .find(|p| p.name().eq_ignore_ascii_case(name))
            .ok_or(Error::UnknownPreset)
    }
}

impl Config {
    /// A validated config.
    pub fn new(
        vocab: usize,
        side: usize,
        width: usize,
        heads: usize,
        layers: usize,
    ) -> Result<Config> {
        let c = Config {
            vocab,
            side,
            width,
            heads,
            layers,
        };
        c.validate()?;
        Ok(c)
    }

    /// The shape of a preset (always valid).
    pub const fn preset(p: Preset) -> Config {
        let (layers, width, heads, side, vocab) = match p {
            Preset::S => (24, 512, 8, 32, 512),
            Preset::M => (36, 1024, 8, 32, 512),
            Preset::L => (48, 1536, 16, 32, 512),
            Preset::Cpu => (8, 256, 8, 28, 16),
            Preset::Fw => (4, 128, 4, 14, 16),
            Preset::Test => (2, 32, 4, 8, 16),
        };
        Config {
            vocab,
            side,
            width,
            heads,
            layers,
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<()> {
        if self.vocab == 0 || self.vocab > MAX_VOCAB {
            return Err(Error::BadVocab(self.vocab));
        }
        if self.side == 0 || self.side > MAX_SIDE {
            return Err(Error::BadSide(self.side));
        }
        if self.width == 0 || self.width > MAX_WIDTH {
            return Err(Error::BadWidth(self.width));
        }
        if self.heads == 0 || self.heads > self.width {
            return Err(Error::BadHeads(self.heads));
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(Error::WidthNotDivisible {
                width: self.width,
                heads: self.heads,
            });
        }
        if self.layers == 0 || self.layers > MAX_LAYERS {
            return Err(Error::BadLayers(self.layers));
        }
        Ok(())
    }

    /// Sequence length n = side².
    pub const fn seq_len(&self) -> usize {
        self.side.saturating_mul(self.side)
    }

    /// The SOS token id (= k).
    pub const fn sos(&self) -> usize {
        self.vocab
    }

    /// Rows of the token embedding: k colours plus SOS.
    pub const fn embed_rows(&self) -> usize {
        self.vocab.saturating_add(1)
    }

    /// Head width hd = d / h (0 for an invalid config with no heads).
    pub const fn head_dim(&self) -> usize {
        match self.width.checked_div(self.heads) {
            Some(hd) => hd,
            None => 0,
        }
    }

    /// MLP width, 4·d.
    pub const fn mlp_width(&self) -> usize {
        self.width.saturating_mul(4)
    }

    /// Parameters of one transformer block: two norm gains (2d), q, k, v and the
    /// attention output projection (4d²), MLP up and down (8d²). No biases.
    pub const fn block_params(&self) -> u64 {
        let d = self.width as u64;
        (12u64.saturating_mul(d).saturating_mul(d)).saturating_add(d.saturating_mul(2))
    }

    /// All parameters: token embedding (k+1)·d, position embedding n·d, the blocks, the
    /// final norm gain d, and the untied next-token head k·d.
    pub const fn param_count(&self) -> u64 {
        let d = self.width as u64;
        let wte = (self.embed_rows() as u64).saturating_mul(d);
        let wpe = (self.seq_len() as u64).saturating_mul(d);
        let blocks = self.block_params().saturating_mul(self.layers as u64);
        let head = (self.vocab as u64).saturating_mul(d);
        wte.saturating_add(wpe)
            .saturating_add(blocks)
            .saturating_add(d)
            .saturating_add(head)
    }

    /// Multiply-accumulates of one block over a whole image: the six projections,
    /// 12·d²·n, plus causal attention, n(n+1)/2 query-key pairs each costing d for the
    /// score and d for the weighted sum. Norms, softmax and quick_gelu are not counted.
    pub const fn block_macs(&self) -> u64 {
        let d = self.width as u64;
        let n = self.seq_len() as u64;
        let proj = 12u64.saturating_mul(d).saturating_mul(d).saturating_mul(n);
        let attn = n.saturating_mul(n.saturating_add(1)).saturating_mul(d);
        proj.saturating_add(attn)
    }

    /// Multiply-accumulates of a full forward pass over one image, with the next-token
    /// head (n·d·k).
    pub const fn macs_per_image(&self) -> u64 {
        let head = (self.seq_len() as u64)
            .saturating_mul(self.width as u64)
            .saturating_mul(self.vocab as u64);
        self.block_macs()
            .saturating_mul(self.layers as u64)
            .saturating_add(head)
    }

    /// Multiply-accumulates of a linear-probe classification on the features of layer
    /// `layer` (the input of block `layer`, so `layer` blocks run) with `classes` classes.
    pub const fn probe_macs(&self, layer: usize, classes: usize) -> u64 {
        let l = if layer < self.layers {
            layer
        } else {
            self.layers
        };
        self.block_macs()
            .saturating_mul(l as u64)
            .saturating_add((self.width as u64).saturating_mul(classes as u64))
    }

    /// Bytes of the parameters in f32.
    pub const fn f32_bytes(&self) -> u64 {
        self.param_count().saturating_mul(4)
    }

    /// Estimated bytes of the parameters in int8, one f32 scale per output row of every
    /// matrix (embeddings and head included) and f32 norm gains; the file header and
    /// probe head are not counted.
    pub const fn int8_bytes(&self) -> u64 {
        let d = self.width as u64;
        // Each block: 12d² int8 weights; output rows q,k,v,proj (4d) + fc (4d) + mlp proj
        // (d) = 9d scales; 2d gains; all scales and gains f32.
        let block =
            (12u64.saturating_mul(d).saturating_mul(d)).saturating_add(d.saturating_mul(44));
        let rows = (self.embed_rows() as u64)
            .saturating_add(self.seq_len() as u64)
            .saturating_add(self.vocab as u64);
        // wte, wpe, head: one int8 row of d and one f32 scale per row; ln_f gain.
        let tables = rows.saturating_mul(d.saturating_add(4));
        block
            .saturating_mul(self.layers as u64)
            .saturating_add(tables)
            .saturating_add(d.saturating_mul(4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_named() {
        for p in Preset::ALL {
            Config::preset(p).validate().unwrap();
            assert_eq!(Preset::from_name(p.name()), Ok(p));
        }
        assert_eq!(Preset::from_name("fW"), Ok(Preset::Fw));
        assert_eq!(Preset::from_name("XL"), Err(Error::UnknownPreset));
    }

    #[test]
    fn validation_errors() {
        assert_eq!(Config::new(0, 8, 32, 4, 2), Err(Error::BadVocab(0)));
        assert_eq!(Config::new(513, 8, 32, 4, 2), Err(Error::BadVocab(513)));
        assert_eq!(Config::new(16, 0, 32, 4, 2), Err(Error::BadSide(0)));
        assert_eq!(Config::new(16, 65, 32, 4, 2), Err(Error::BadSide(65)));
        assert_eq!(Config::new(16, 8, 0, 4, 2), Err(Error::BadWidth(0)));
        assert_eq!(Config::new(16, 8, 32, 0, 2), Err(Error::BadHeads(0)));
        assert_eq!(
            Config::new(16, 8, 30, 4, 2),
            Err(Error::WidthNotDivisible {
                width: 30,
                heads: 4
            })
        );
        assert_eq!(Config::new(16, 8, 32, 4, 0), Err(Error::BadLayers(0)));
        assert!(Config::new(512, 64, 32, 4, 1).is_ok());
    }

    #[test]
    fn accounting_matches_hand_counts() {
        // The `test` preset: k 16, n 64, d 32, 2 layers.
        let c = Config::preset(Preset::Test);
        let block = 12 * 32 * 32 + 2 * 32;
        assert_eq!(c.block_params(), block);
        assert_eq!(
            c.param_count(),
            17 * 32 + 64 * 32 + 2 * block + 32 + 16 * 32
        );
        assert_eq!(c.block_macs(), 12 * 32 * 32 * 64 + 64 * 65 * 32);
        assert_eq!(c.macs_per_image(), 2 * c.block_macs() + 64 * 32 * 16);
        assert_eq!(c.probe_macs(1, 10), c.block_macs() + 320);
        assert_eq!(c.f32_bytes(), 4 * c.param_count());
        // iGPT-S has ~76M parameters with this (untied, bias-free) layout.
        let s = Config::preset(Preset::S).param_count();
        assert!((75_000_000..78_000_000).contains(&s), "{s}");
        // The int8 estimate is a bit over a quarter of f32.
        for p in Preset::ALL {
            let c = Config::preset(p);
            let r = c.int8_bytes() as f64 / c.f32_bytes() as f64;
            assert!((0.25..0.30).contains(&r), "{p:?} {r}");
        }
    }

    #[test]
    fn saturating_on_absurd_shapes() {
        let c = Config {
            vocab: usize::MAX,
            side: usize::MAX,
            width: usize::MAX,
            heads: 0,
            layers: usize::MAX,
        };
        assert!(c.validate().is_err());
        assert_eq!(c.head_dim(), 0);
        let _ = (
            c.param_count(),
            c.macs_per_image(),
            c.int8_bytes(),
            c.probe_macs(3, 3),
        );
    }
}
