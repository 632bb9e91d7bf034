//! The library's front door: two types that hide the modules behind them.
//!
//! - [`Classifier`]: an int8 model file (`igpt export --probe`, e.g. the shipped
//!   `models/fm-ar-6x192.igpt`) classifying image files with igpt-core's forward pass and
//!   this CPU's vector kernels, exactly as `igpt classify` does.
//! - [`Pretrained`]: an f32 checkpoint (`igpt pretrain`, `import-hf`, the shipped
//!   `models/fm-ar-6x192.safetensors`): tokenize images, per-layer probe features,
//!   samples and completions, pictures of tokens.
//!
//! Images of any size are centre-cropped to a square and area-resized to the model's
//! side, then mapped to the palette's nearest colours (the one tokenization path,
//! [`crate::data::tokenize`]). Everything returns `anyhow::Result`; bad files are errors
//! naming the file, never panics.

use crate::int8::kernels::{Buffers, Packed};
use crate::io::checkpoint::Checkpoint;
use crate::nn::{Gpt, Objective};
use anyhow::{anyhow, ensure, Context, Result};
use dfdx::prelude::Cpu;
use igpt_core::{Config, Model, Palette};
use std::path::{Path, PathBuf};

/// One image's class: the most probable class, its name and every class probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// Index of the most probable class.
    pub class: usize,
    /// Its name from the model file (empty when the file has none).
    pub label: String,
    /// Probability of every class (softmax of the probe's scores), in class order.
    pub probs: Vec<f32>,
}

impl Classification {
    /// The probability of the predicted class.
    pub fn probability(&self) -> f32 {
        self.probs.get(self.class).copied().unwrap_or(0.0)
    }
}

/// An int8 model file with a linear-probe head, ready to classify images.
///
/// ```
/// # fn main() -> anyhow::Result<()> {
/// # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/fm-ar-6x192.igpt");
/// # let image = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/photos/coffee.png");
/// let mut classifier = igpt::Classifier::open(model)?;
/// let c = classifier.classify_path(image)?;
/// println!("{}: {} (p = {:.3})", image, c.label, c.probability());
/// assert!(c.class < classifier.labels().len());
/// # Ok(())
/// # }
/// ```
pub struct Classifier {
    bytes: Vec<u8>,
    path: PathBuf,
    config: Config,
    packed: Packed,
    buffers: Buffers,
}

impl Classifier {
    /// Reads and checks a model file (format, checksum, a probe head) and prepares the
    /// vector kernels this CPU offers (`IGPT_KERNELS` overrides, as for the CLI).
    pub fn open(path: impl AsRef<Path>) -> Result<Classifier> {
        let path = path.as_ref();
        let bytes = crate::int8::export::read_model(path)?;
        let model = Model::parse(&bytes).with_context(|| format!("{}", path.display()))?;
        ensure!(
            model.probe().is_some(),
            "{}: the model file has no probe head; export it with `igpt export --probe probe-head.json`",
            path.display()
        );
        let config = *model.config();
        let packed = Packed::new(&model)?;
        Ok(Classifier {
            path: path.to_path_buf(),
            config,
            packed,
            buffers: Buffers::new(&config),
            bytes,
        })
    }

    fn model(&self) -> Result<Model<'_>> {
        Model::parse(&self.bytes).with_context(|| format!("{}", self.path.display()))
    }

    /// The model's shape.
    pub fn config(&self) -> Config {
        self.config
    }

    /// The class names, in class order (empty strings where the file has none).
    pub fn labels(&self) -> Vec<String> {
        let Ok(model) = self.model() else {
            return Vec::new();
        };
        let classes = model.probe().map_or(0, |(_, n)| n);
        (0..classes)
            .map(|c| model.class_name(c).to_string())
            .collect()
    }

    /// The palette images are tokenized with.
    pub fn palette(&self) -> Result<Palette> {
        Ok(self.model()?.palette().clone())
    }

    /// Classifies an image file (PNG, JPEG, BMP, GIF, TIFF, WebP, PNM; any size).
    pub fn classify_path(&mut self, image: impl AsRef<Path>) -> Result<Classification> {
        let mut out = self.classify_paths(&[image])?;
        out.pop()
            .ok_or_else(|| anyhow!("{}: no result", self.path.display()))
    }

    /// Classifies image files, in order; the first unreadable one is the error. Checks
    /// the model file once for all of them (a call checks its CRC-32 again, since the
    /// core borrows the bytes), so many images go faster through one call.
    pub fn classify_paths<P: AsRef<Path>>(&mut self, images: &[P]) -> Result<Vec<Classification>> {
        let model =
            Model::parse(&self.bytes).with_context(|| format!("{}", self.path.display()))?;
        let mut ops = self.packed.ops();
        images
            .iter()
            .map(|image| {
                let tokens = crate::data::tokenize::image(
                    image.as_ref(),
                    model.palette(),
                    self.config.side,
                )?;
                let mut scratch = self.buffers.scratch(&self.config)?;
                classify_with(&model, &mut ops, &tokens, &mut scratch, &self.path)
            })
            .collect()
    }

    /// Classifies an image already tokenized with this model's palette (`side²` tokens).
    pub fn classify_tokens(&mut self, tokens: &[u16]) -> Result<Classification> {
        let model =
            Model::parse(&self.bytes).with_context(|| format!("{}", self.path.display()))?;
        let mut ops = self.packed.ops();
        let mut scratch = self.buffers.scratch(&self.config)?;
        classify_with(&model, &mut ops, tokens, &mut scratch, &self.path)
    }
}

/// One image through the core's int8 forward with the packed kernels.
fn classify_with(
    model: &Model<'_>,
    ops: &mut crate::int8::kernels::FastOps<'_>,
    tokens: &[u16],
    scratch: &mut igpt_core::state::Scratch<'_>,
    path: &Path,
) -> Result<Classification> {
    let p = crate::int8::run::classify(model, ops, tokens, scratch)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Classification {
        class: p.class,
        label: model.class_name(p.class).to_string(),
        probs: p.probs.to_vec(),
    })
}

/// An f32 checkpoint on the CPU: tokenization, probe features, sampling.
///
/// ```
/// # fn main() -> anyhow::Result<()> {
/// # let checkpoint = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/fm-ar-6x192.safetensors");
/// # let image = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/photos/coffee.png");
/// let model = igpt::Pretrained::open(checkpoint)?;
/// // One feature vector (width d) per layer 0..=L, as `igpt probe` reads them.
/// let features = model.features_path(image)?;
/// assert_eq!(features.len(), model.config().layers + 1);
/// assert_eq!(features[0].len(), model.config().width);
/// # Ok(())
/// # }
/// ```
pub struct Pretrained {
    checkpoint: Checkpoint,
    path: PathBuf,
    gpt: Gpt<f32, Cpu>,
}

impl Pretrained {
    /// Reads and checks a checkpoint (any kind: pretrained, fine-tuned, imported).
    pub fn open(path: impl AsRef<Path>) -> Result<Pretrained> {
        let path = path.as_ref();
        let checkpoint = Checkpoint::load(path)?;
        Self::from_checkpoint(checkpoint, path)
    }

    /// A checkpoint already in memory; `path` names it in errors.
    pub fn from_checkpoint(checkpoint: Checkpoint, path: impl AsRef<Path>) -> Result<Pretrained> {
        use dfdx::prelude::*;
        let path = path.as_ref().to_path_buf();
        let gpt = checkpoint
            .model(&Cpu::seed_from_u64(0))
            .with_context(|| format!("{}", path.display()))?;
        Ok(Pretrained {
            checkpoint,
            path,
            gpt,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> Config {
        self.checkpoint.config
    }

    /// Everything the file holds (weights, palette, run arguments).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The palette, or an error naming the file when it has none.
    pub fn palette(&self) -> Result<Palette> {
        self.checkpoint.palette_or_err(&self.path)
    }

    /// True for an autoregressive (next-pixel) model; false for BERT.
    pub fn is_autoregressive(&self) -> bool {
        self.checkpoint.objective() == Objective::Ar
    }

    /// An image file's `side²` tokens (raster order).
    pub fn tokenize_path(&self, image: impl AsRef<Path>) -> Result<Vec<u16>> {
        crate::data::tokenize::image(image.as_ref(), &self.palette()?, self.config().side)
    }

    /// Probe features of an image file: for every layer l in `0..=L` the mean over
    /// positions of block l's first norm output (layer L: of the final norm), `d` each.
    pub fn features_path(&self, image: impl AsRef<Path>) -> Result<Vec<Vec<f32>>> {
        let tokens = self.tokenize_path(image)?;
        let per_layer = self.features(&[tokens])?;
        Ok(per_layer.into_iter().map(|mut l| l.remove(0)).collect())
    }

    /// Probe features of tokenized images, `[layer][image]` (`d` each), in batches of 64.
    pub fn features(&self, images: &[Vec<u16>]) -> Result<Vec<Vec<Vec<f32>>>> {
        self.check_tokens(images)?;
        Ok(crate::eval::probe::features(
            &self.gpt,
            images,
            64,
            self.is_autoregressive(),
            false,
        ))
    }

    /// Next-pixel logits of a tokenized image (AR models): `side²` rows of `k` values,
    /// row `i` predicting pixel `i` from the pixels before it (the model reads `[SOS,
    /// x0 .. x(n-2)]`), as HF's `ImageGPTForCausalImageModeling` computes them.
    pub fn logits(&self, image: &[u16]) -> Result<Vec<f32>> {
        use dfdx::prelude::NoneTape;
        ensure!(
            self.is_autoregressive(),
            "{}: a BERT model has no next-pixel logits",
            self.path.display()
        );
        self.check_tokens(std::slice::from_ref(&image.to_vec()))?;
        let ids = crate::data::tokenize::model_ids(&[image], self.config().sos(), true);
        let z = self.gpt.forward::<NoneTape>(
            &ids,
            1,
            true,
            None,
            crate::nn::Capture::default(),
            &mut crate::nn::Captures::default(),
        );
        Ok(self.gpt.logits(z).as_vec())
    }

    fn check_tokens(&self, images: &[Vec<u16>]) -> Result<()> {
        let c = self.config();
        for (i, img) in images.iter().enumerate() {
            ensure!(
                img.len() == c.seq_len(),
                "image {i}: {} tokens, the model reads {}",
                img.len(),
                c.seq_len()
            );
            ensure!(
                img.iter().all(|&t| (t as usize) < c.vocab),
                "image {i}: a token outside the palette's {} colours",
                c.vocab
            );
        }
        Ok(())
    }

    /// `n` unconditional samples (KV-cached, CPU) at `temperature` (0: greedy), with a
    /// seeded RNG: the same seed gives the same images.
    pub fn sample(&self, n: usize, temperature: f32, seed: u64) -> Result<Vec<Vec<u16>>> {
        self.complete(&vec![Vec::new(); n], temperature, seed)
    }

    /// Completes each prefix (an image's first pixels, as tokens) to a whole image.
    pub fn complete(
        &self,
        prefixes: &[Vec<u16>],
        temperature: f32,
        seed: u64,
    ) -> Result<Vec<Vec<u16>>> {
        use rand::SeedableRng;
        ensure!(
            self.is_autoregressive(),
            "{}: a BERT model does not sample pixel by pixel",
            self.path.display()
        );
        ensure!(
            temperature.is_finite() && temperature >= 0.0,
            "temperature {temperature} is not a finite non-negative number"
        );
        let vocab = self.config().vocab;
        ensure!(
            prefixes.iter().flatten().all(|&t| (t as usize) < vocab),
            "a prefix holds a token outside the palette's {vocab} colours"
        );
        let w = crate::nn::kv::Weights::new(self.config(), &self.checkpoint.params);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        crate::eval::sample::generate(&w, prefixes, temperature, None, &mut rng)
    }

    /// Writes tokens as a `side` x `side` PNG in the palette's colours.
    pub fn save_png(&self, tokens: &[u16], path: impl AsRef<Path>) -> Result<()> {
        let pal = self.palette()?;
        let side = self.config().side;
        ensure!(
            tokens.len() == side * side,
            "{} tokens, a {side}x{side} image has {}",
            tokens.len(),
            side * side
        );
        let mut px = vec![0u8; tokens.len() * pal.channels()];
        pal.decode_tokens(tokens, &mut px)?;
        crate::io::write_png(path.as_ref(), side, side, pal.channels(), &px)
    }
}
