//! The model's parameters as one typed struct, [`GptParams<T>`], generic over what is
//! held per tensor: dfdx tensors in the model, [`Mat`]s in a checkpoint, AdamW moments,
//! shapes. Everything that depends on *which* tensor a value is (its HF name, shape,
//! initialisation, weight decay, whether it is a projection stored `[in, out]`) follows
//! from its [`ParamName`], so adding a tensor is one field here and one arm in each
//! `match` below, and the compiler finds every other place.
//!
//! Canonical order (the safetensors and CRC order): `wte, wpe`, per block `ln_1, q, k,
//! v, c_proj, ln_2, c_fc, mlp_proj`, then `ln_f, lm_head`, then the optional class head
//! `score`.
//!
//! Shapes: C = d width, V = k palette colours, N = side² positions, K classes.

use igpt_core::Config;
use std::fmt;

/// A host-side tensor: shape `(rows, cols)`, f32 values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Mat {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `rows * cols` values.
    pub data: Vec<f32>,
}

impl Mat {
    /// A matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Mat {
        Mat {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// The transpose (`[in, out]` to `[out, in]` and back).
    pub fn transposed(&self) -> Mat {
        let mut data = vec![0f32; self.data.len()];
        for r in 0..self.rows {
            for c in 0..self.cols {
                data[c * self.rows + r] = self.data[r * self.cols + c];
            }
        }
        Mat {
            rows: self.cols,
            cols: self.rows,
            data,
        }
    }
}

/// One tensor of a transformer block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockTensor {
    /// `(1, C)` gain of the pre-attention norm.
    Ln1,
    /// `(C, C)` query projection.
    Q,
    /// `(C, C)` key projection.
    K,
    /// `(C, C)` value projection.
    V,
    /// `(C, C)` attention output projection.
    CProj,
    /// `(1, C)` gain of the pre-MLP norm.
    Ln2,
    /// `(C, 4C)` MLP up-projection.
    CFc,
    /// `(4C, C)` MLP down-projection.
    MlpProj,
}

impl BlockTensor {
    /// The block's tensors in canonical order.
    pub const ALL: [BlockTensor; 8] = [
        BlockTensor::Ln1,
        BlockTensor::Q,
        BlockTensor::K,
        BlockTensor::V,
        BlockTensor::CProj,
        BlockTensor::Ln2,
        BlockTensor::CFc,
        BlockTensor::MlpProj,
    ];

    fn suffix(self) -> &'static str {
        match self {
            BlockTensor::Ln1 => "ln_1.weight",
            BlockTensor::Q => "attn.q.weight",
            BlockTensor::K => "attn.k.weight",
            BlockTensor::V => "attn.v.weight",
            BlockTensor::CProj => "attn.c_proj.weight",
            BlockTensor::Ln2 => "ln_2.weight",
            BlockTensor::CFc => "mlp.c_fc.weight",
            BlockTensor::MlpProj => "mlp.c_proj.weight",
        }
    }
}

/// Which parameter a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamName {
    /// `(V + 1, C)` token embedding; row V is SOS.
    Wte,
    /// `(N, C)` position embedding.
    Wpe,
    /// A tensor of block `l`.
    Block(usize, BlockTensor),
    /// `(1, C)` gain of the final norm.
    LnF,
    /// `(V, C)` next-token head, stored `[out, in]`.
    LmHead,
    /// `(K, C)` class head of a fine-tuned model, stored `[out, in]`.
    Score,
}

impl fmt::Display for ParamName {
    /// The HF ImageGPT state-dict name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamName::Wte => f.write_str("transformer.wte.weight"),
            ParamName::Wpe => f.write_str("transformer.wpe.weight"),
            ParamName::Block(l, t) => write!(f, "transformer.h.{l}.{}", t.suffix()),
            ParamName::LnF => f.write_str("transformer.ln_f.weight"),
            ParamName::LmHead => f.write_str("lm_head.weight"),
            ParamName::Score => f.write_str("score.weight"),
        }
    }
}

impl ParamName {
    /// Its `(rows, cols)` for a config (`classes` for the class head).
    pub fn shape(self, c: &Config, classes: usize) -> (usize, usize) {
        let d = c.width;
        match self {
            ParamName::Wte => (c.embed_rows(), d),
            ParamName::Wpe => (c.seq_len(), d),
            ParamName::Block(_, t) => match t {
                BlockTensor::Ln1 | BlockTensor::Ln2 => (1, d),
                BlockTensor::Q | BlockTensor::K | BlockTensor::V | BlockTensor::CProj => (d, d),
                BlockTensor::CFc => (d, c.mlp_width()),
                BlockTensor::MlpProj => (c.mlp_width(), d),
            },
            ParamName::LnF => (1, d),
            ParamName::LmHead => (c.vocab, d),
            ParamName::Score => (classes, d),
        }
    }

    /// True for a norm gain (stored 1-D in safetensors, as in HF's state dict).
    pub fn is_gain(self) -> bool {
        matches!(
            self,
            ParamName::LnF | ParamName::Block(_, BlockTensor::Ln1 | BlockTensor::Ln2)
        )
    }

    /// True for a block projection, stored `[in, out]` (`y = x·W`, like HF's Conv1D);
    /// the heads are `[out, in]`.
    pub fn is_projection(self) -> bool {
        matches!(self, ParamName::Block(..)) && !self.is_gain()
    }

    /// True where decoupled weight decay applies: block projections and the heads (not
    /// norm gains, not embeddings).
    pub fn decays(self) -> bool {
        !(self.is_gain() || matches!(self, ParamName::Wte | ParamName::Wpe))
    }

    /// The paper's initialisation: `None` for a constant (gains one, heads zero), else
    /// the standard deviation of a zero-mean normal: q/k/v N(0, 1/d), attention output
    /// N(0, 1/(d·L)), MLP N(0, 0.02²), positions N(0, 0.01²), tokens N(0, 0.02²).
    pub fn init(self, c: &Config) -> Init {
        let d = c.width as f64;
        match self {
            ParamName::Wte => Init::Normal(0.02),
            ParamName::Wpe => Init::Normal(0.01),
            ParamName::Block(_, t) => match t {
                BlockTensor::Ln1 | BlockTensor::Ln2 => Init::Const(1.0),
                BlockTensor::Q | BlockTensor::K | BlockTensor::V => Init::Normal(1.0 / d.sqrt()),
                BlockTensor::CProj => Init::Normal(1.0 / (d * c.layers as f64).sqrt()),
                BlockTensor::CFc | BlockTensor::MlpProj => Init::Normal(0.02),
            },
            ParamName::LnF => Init::Const(1.0),
            ParamName::LmHead | ParamName::Score => Init::Const(0.0),
        }
    }
}

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every value this constant.
    Const(f64),
    /// Zero-mean normal with this standard deviation.
    Normal(f64),
}

/// One transformer block's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockParams<T> {
    /// `(1, C)` gain of the pre-attention norm.
    pub ln_1: T,
    /// `(C, C)` query projection (HF `c_attn` columns `0..C`), `[in, out]`.
    pub q: T,
    /// `(C, C)` key projection (HF `c_attn` columns `C..2C`), `[in, out]`.
    pub k: T,
    /// `(C, C)` value projection (HF `c_attn` columns `2C..3C`), `[in, out]`.
    pub v: T,
    /// `(C, C)` attention output projection, `[in, out]`.
    pub c_proj: T,
    /// `(1, C)` gain of the pre-MLP norm.
    pub ln_2: T,
    /// `(C, 4C)` MLP up-projection, `[in, out]`.
    pub c_fc: T,
    /// `(4C, C)` MLP down-projection, `[in, out]`.
    pub mlp_proj: T,
}

impl<T> BlockParams<T> {
    /// A block whose tensors are `f(tensor)`, in canonical order.
    pub fn build(mut f: impl FnMut(BlockTensor) -> T) -> Self {
        match Self::try_build(|t| Ok::<T, std::convert::Infallible>(f(t))) {
            Ok(b) => b,
            Err(never) => match never {},
        }
    }

    /// [`BlockParams::build`] with a fallible `f`; the first error stops it.
    pub fn try_build<E>(mut f: impl FnMut(BlockTensor) -> Result<T, E>) -> Result<Self, E> {
        Ok(BlockParams {
            ln_1: f(BlockTensor::Ln1)?,
            q: f(BlockTensor::Q)?,
            k: f(BlockTensor::K)?,
            v: f(BlockTensor::V)?,
            c_proj: f(BlockTensor::CProj)?,
            ln_2: f(BlockTensor::Ln2)?,
            c_fc: f(BlockTensor::CFc)?,
            mlp_proj: f(BlockTensor::MlpProj)?,
        })
    }

    /// The tensor `t`.
    pub fn get(&self, t: BlockTensor) -> &T {
        match t {
            BlockTensor::Ln1 => &self.ln_1,
            BlockTensor::Q => &self.q,
            BlockTensor::K => &self.k,
            BlockTensor::V => &self.v,
            BlockTensor::CProj => &self.c_proj,
            BlockTensor::Ln2 => &self.ln_2,
            BlockTensor::CFc => &self.c_fc,
            BlockTensor::MlpProj => &self.mlp_proj,
        }
    }

    fn all_mut(&mut self) -> [(BlockTensor, &mut T); 8] {
        [
            (BlockTensor::Ln1, &mut self.ln_1),
            (BlockTensor::Q, &mut self.q),
            (BlockTensor::K, &mut self.k),
            (BlockTensor::V, &mut self.v),
            (BlockTensor::CProj, &mut self.c_proj),
            (BlockTensor::Ln2, &mut self.ln_2),
            (BlockTensor::CFc, &mut self.c_fc),
            (BlockTensor::MlpProj, &mut self.mlp_proj),
        ]
    }
}

/// Every parameter of the model, one `T` each.
#[derive(Debug, Clone, PartialEq)]
pub struct GptParams<T> {
    /// `(V + 1, C)` token embedding; row V is SOS.
    pub wte: T,
    /// `(N, C)` position embedding.
    pub wpe: T,
    /// The blocks.
    pub blocks: Vec<BlockParams<T>>,
    /// `(1, C)` gain of the final norm.
    pub ln_f: T,
    /// `(V, C)` next-token head, `[out, in]` (`y = z·Wᵀ`).
    pub lm_head: T,
    /// `(K, C)` class head (fine-tuning), `[out, in]`; `None` for a generative model.
    pub score: Option<T>,
}

impl<T> GptParams<T> {
    /// Parameters for `layers` blocks (and a class head when `score`) built by `f`, in
    /// canonical order.
    pub fn build(layers: usize, score: bool, mut f: impl FnMut(ParamName) -> T) -> Self {
        match Self::try_build(layers, score, |n| Ok::<T, std::convert::Infallible>(f(n))) {
            Ok(p) => p,
            Err(never) => match never {},
        }
    }

    /// [`GptParams::build`] with a fallible `f`; the first error stops it.
    pub fn try_build<E>(
        layers: usize,
        score: bool,
        mut f: impl FnMut(ParamName) -> Result<T, E>,
    ) -> Result<Self, E> {
        let wte = f(ParamName::Wte)?;
        let wpe = f(ParamName::Wpe)?;
        let mut blocks = Vec::with_capacity(layers);
        for l in 0..layers {
            blocks.push(BlockParams::try_build(|t| f(ParamName::Block(l, t)))?);
        }
        let ln_f = f(ParamName::LnF)?;
        let lm_head = f(ParamName::LmHead)?;
        let score = if score {
            Some(f(ParamName::Score)?)
        } else {
            None
        };
        Ok(GptParams {
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
            score,
        })
    }

    /// The names of this struct's parameters in canonical order.
    pub fn names(&self) -> Vec<ParamName> {
        self.iter().map(|(n, _)| n).collect()
    }

    /// Every parameter with its name, in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (ParamName, &T)> {
        let head = [(ParamName::Wte, &self.wte), (ParamName::Wpe, &self.wpe)];
        let blocks = self.blocks.iter().enumerate().flat_map(|(l, b)| {
            BlockTensor::ALL
                .into_iter()
                .map(move |t| (ParamName::Block(l, t), b.get(t)))
        });
        let tail = [
            (ParamName::LnF, &self.ln_f),
            (ParamName::LmHead, &self.lm_head),
        ];
        head.into_iter()
            .chain(blocks)
            .chain(tail)
            .chain(self.score.iter().map(|s| (ParamName::Score, s)))
    }

    /// Every parameter with its name, mutably, in canonical order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ParamName, &mut T)> {
        let head = [
            (ParamName::Wte, &mut self.wte),
            (ParamName::Wpe, &mut self.wpe),
        ];
        let blocks = self.blocks.iter_mut().enumerate().flat_map(|(l, b)| {
            b.all_mut()
                .into_iter()
                .map(move |(t, v)| (ParamName::Block(l, t), v))
        });
        let tail = [
            (ParamName::LnF, &mut self.ln_f),
            (ParamName::LmHead, &mut self.lm_head),
        ];
        head.into_iter()
            .chain(blocks)
            .chain(tail)
            .chain(self.score.iter_mut().map(|s| (ParamName::Score, s)))
    }

    /// The same structure with `f(name, value)` in every place.
    pub fn map<U>(&self, mut f: impl FnMut(ParamName, &T) -> U) -> GptParams<U> {
        GptParams {
            wte: f(ParamName::Wte, &self.wte),
            wpe: f(ParamName::Wpe, &self.wpe),
            blocks: self
                .blocks
                .iter()
                .enumerate()
                .map(|(l, b)| BlockParams::build(|t| f(ParamName::Block(l, t), b.get(t))))
                .collect(),
            ln_f: f(ParamName::LnF, &self.ln_f),
            lm_head: f(ParamName::LmHead, &self.lm_head),
            score: self.score.as_ref().map(|s| f(ParamName::Score, s)),
        }
    }

    /// [`GptParams::map`] with a fallible `f`; the first error stops it.
    pub fn try_map<U, E>(
        &self,
        mut f: impl FnMut(ParamName, &T) -> Result<U, E>,
    ) -> Result<GptParams<U>, E> {
        GptParams::try_build(self.blocks.len(), self.score.is_some(), |name| {
            // Every name build asks for exists in a struct of the same structure.
            match self.get(name) {
                Some(v) => f(name, v),
                None => unreachable!("same structure"),
            }
        })
    }

    /// The parameter `name`, if this struct has it.
    pub fn get(&self, name: ParamName) -> Option<&T> {
        match name {
            ParamName::Wte => Some(&self.wte),
            ParamName::Wpe => Some(&self.wpe),
            ParamName::Block(l, t) => self.blocks.get(l).map(|b| b.get(t)),
            ParamName::LnF => Some(&self.ln_f),
            ParamName::LmHead => Some(&self.lm_head),
            ParamName::Score => self.score.as_ref(),
        }
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        4 + 8 * self.blocks.len() + self.score.is_some() as usize
    }

    /// Never true (a model always has its embeddings, final norm and head).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl GptParams<(usize, usize)> {
    /// The shape of every parameter of a config (with a class head of `classes` when
    /// given).
    pub fn shapes(c: &Config, classes: Option<usize>) -> Self {
        GptParams::build(c.layers, classes.is_some(), |n| {
            n.shape(c, classes.unwrap_or(0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_shapes_and_order() {
        let c = Config::new(16, 4, 32, 4, 2).unwrap();
        let s = GptParams::shapes(&c, Some(10));
        let names: Vec<String> = s.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names.len(), 4 + 16 + 1);
        assert_eq!(names[0], "transformer.wte.weight");
        assert_eq!(names[2], "transformer.h.0.ln_1.weight");
        assert_eq!(names[9], "transformer.h.0.mlp.c_proj.weight");
        assert_eq!(names[18], "transformer.ln_f.weight");
        assert_eq!(names[20], "score.weight");
        assert_eq!(s.wte, (17, 32));
        assert_eq!(s.blocks[1].c_fc, (32, 128));
        assert_eq!(s.score, Some((10, 32)));
        assert_eq!(s.len(), names.len());
        let total: usize = s
            .iter()
            .filter(|(n, _)| *n != ParamName::Score)
            .map(|(_, (r, c))| r * c)
            .sum();
        assert_eq!(total as u64, c.param_count());
        // get() agrees with iter().
        for (n, v) in s.iter() {
            assert_eq!(s.get(n), Some(v));
        }
    }

    #[test]
    fn roles() {
        assert!(!ParamName::Wte.decays() && !ParamName::LnF.decays());
        assert!(ParamName::Block(0, BlockTensor::Q).decays() && ParamName::LmHead.decays());
        assert!(ParamName::Block(3, BlockTensor::Ln2).is_gain());
        assert!(ParamName::Block(3, BlockTensor::CFc).is_projection());
        assert!(!ParamName::Score.is_projection());
    }

    #[test]
    fn try_build_stops_at_the_first_error() {
        let r: Result<GptParams<u8>, String> = GptParams::try_build(2, false, |n| {
            if n == ParamName::Block(1, BlockTensor::V) {
                Err(n.to_string())
            } else {
                Ok(0)
            }
        });
        assert_eq!(r.unwrap_err(), "transformer.h.1.attn.v.weight");
        let mut m = GptParams::build(1, true, |_| 1u32);
        for (_, v) in m.iter_mut() {
            *v += 1;
        }
        assert!(m.iter().all(|(_, v)| *v == 2));
    }
}
