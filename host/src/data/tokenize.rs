//! The one tokenization path: an image file or a dataset split, brought to the model's
//! resolution (centre crop + area filter) and channels, then mapped to palette tokens;
//! and the model's input ids for a batch of token sequences.

use super::{load, Split};
use anyhow::{Context, Result};
use igpt_core::Palette;
use rayon::prelude::*;
use std::path::Path;

/// A tokenized dataset split.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    /// `side²` tokens per image.
    pub tokens: Vec<Vec<u16>>,
    /// The images' pixels at the model's resolution and the palette's channels.
    pub pixels: Vec<Vec<u8>>,
    /// One label per image.
    pub labels: Vec<u16>,
    /// Class names (the label is the index).
    pub classes: Vec<String>,
}

impl Tokenized {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The images at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Tokenized {
        Tokenized {
            tokens: idx.iter().map(|&i| self.tokens[i].clone()).collect(),
            pixels: idx.iter().map(|&i| self.pixels[i].clone()).collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
        }
    }
}

/// Reads an image file and tokenizes it at `side` with `palette`.
pub fn image(path: &Path, palette: &Palette, side: usize) -> Result<Vec<u16>> {
    Ok(image_sized(path, palette, Some(side))?.2)
}

/// Reads an image file and tokenizes it with `palette`: centre-cropped and area-resized to
/// `side` x `side`, or at its own size without `side` (at most a model's sequence length
/// of pixels). Returns `(width, height, tokens)`.
pub fn image_sized(
    path: &Path,
    palette: &Palette,
    side: Option<usize>,
) -> Result<(usize, usize, Vec<u16>)> {
    let img = super::read_image(path)?;
    let (w, h, rgb) = match side {
        Some(s) => (
            s,
            s,
            super::square_resize(&img.rgb, img.width, img.height, 3, s),
        ),
        None => (img.width, img.height, img.rgb),
    };
    let n = w * h;
    anyhow::ensure!(
        n <= igpt_core::config::MAX_SEQ_LEN,
        "{}: {w}x{h} is {n} pixels, more than a model reads ({}); pass --side",
        path.display(),
        igpt_core::config::MAX_SEQ_LEN
    );
    let px = super::convert_channels(&rgb, 3, palette.channels())?;
    let mut t = vec![0u16; n];
    palette
        .tokenize(&px, &mut t)
        .with_context(|| format!("{}: cannot tokenize", path.display()))?;
    Ok((w, h, t))
}

/// Loads a dataset split at `side` (the first `limit` images; 0: all) and tokenizes it
/// with `palette`, in parallel.
pub fn split(
    path: &Path,
    split: Split,
    palette: &Palette,
    side: usize,
    limit: usize,
) -> Result<Tokenized> {
    let ds = load(path, split, Some(side))?;
    let ds = if limit > 0 { ds.truncate(limit) } else { ds };
    let ds = ds.with_channels(palette.channels())?;
    let n = side * side;
    let tokens = (0..ds.len())
        .into_par_iter()
        .map(|i| {
            let mut t = vec![0u16; n];
            palette.tokenize(ds.image(i), &mut t).map(|_| t)
        })
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: cannot tokenize", path.display()))?;
    let pixels = (0..ds.len()).map(|i| ds.image(i).to_vec()).collect();
    Ok(Tokenized {
        tokens,
        pixels,
        labels: ds.labels.clone(),
        classes: ds.classes.clone(),
    })
}

/// The model's input ids for token sequences of one length: for an AR (`causal`) model
/// `[SOS, x0 .. x(n-2)]` per image (igpt-core's `model_input`), for BERT the image
/// itself. `sos` is the palette size k.
pub fn model_ids<T: AsRef<[u16]>>(images: &[T], sos: usize, causal: bool) -> Vec<usize> {
    let n = images.first().map_or(0, |i| i.as_ref().len());
    let mut ids = Vec::with_capacity(images.len() * n);
    let mut x = vec![0usize; n];
    let mut out = vec![0usize; n];
    for img in images {
        let img = img.as_ref();
        x.clear();
        x.extend(img.iter().map(|&t| t as usize));
        if causal {
            out.resize(x.len(), 0);
            // Lengths are equal by construction; sos is at most 512.
            if igpt_core::palette::model_input(sos as u16, &x, &mut out).is_ok() {
                ids.extend_from_slice(&out);
            }
        } else {
            ids.extend_from_slice(&x);
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_shift_by_sos_for_ar_only() {
        let imgs = [vec![1u16, 2, 3], vec![4, 5, 6]];
        assert_eq!(model_ids(&imgs, 16, true), vec![16, 1, 2, 16, 4, 5]);
        assert_eq!(model_ids(&imgs, 16, false), vec![1, 2, 3, 4, 5, 6]);
        assert!(model_ids::<Vec<u16>>(&[], 16, true).is_empty());
    }
}
