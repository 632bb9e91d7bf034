//! Batches for the AR and BERT objectives, the loss, and evaluation in bits per
//! dimension.
//!
//! Everything here runs through dfdx tensor ops, so it works on any dfdx device.

use super::distributed::Shard;
use crate::nn::{cst, Capture, Captures, Float, Gpt, Kernels, Objective};
use dfdx::prelude::*;
use rand::Rng;

/// BERT's masking probability.
pub const BERT_MASK_P: f64 = 0.15;

/// One batch, ready for [`loss`]: `b` sequences of `t` positions.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Sequences.
    pub b: usize,
    /// Positions per sequence.
    pub t: usize,
    /// Model input ids, `b·t`.
    pub input: Vec<usize>,
    /// Target colour ids, `b·t`.
    pub target: Vec<usize>,
    /// BERT: 1 keeps a token's embedding, 0 zeroes it; `None` for AR.
    pub keep: Option<Vec<f32>>,
    /// Loss weight of each position, summing to 1 over the batch.
    pub weight: Vec<f32>,
}

/// Builds a batch from images' tokens (each `t` long, colours `< sos`).
///
/// - AR: input `[SOS, x0 .. x(t-2)]`, target `x`, every position weighted `1/(b·t)`.
/// - BERT: input `x` with each position masked with probability 0.15 (at least one per
///   sequence), the masked positions' token embeddings zeroed, the loss averaged over the
///   masked positions of the batch. Masks are drawn from `rng`.
pub fn make_batch<R: Rng>(
    images: &[&[u16]],
    sos: usize,
    objective: Objective,
    rng: &mut R,
) -> Batch {
    let b = images.len();
    let t = images.first().map_or(0, |x| x.len());
    let mut target = Vec::with_capacity(b * t);
    for img in images {
        assert_eq!(img.len(), t, "images of one length");
        target.extend(img.iter().map(|&x| x as usize));
    }
    let input = crate::data::tokenize::model_ids(images, sos, objective == Objective::Ar);
    match objective {
        Objective::Ar => Batch {
            b,
            t,
            input,
            target,
            keep: None,
            weight: vec![1.0 / (b * t) as f32; b * t],
        },
        Objective::Bert => {
            let mut masked = vec![false; b * t];
            for s in 0..b {
                let row = &mut masked[s * t..(s + 1) * t];
                for m in row.iter_mut() {
                    *m = rng.gen_bool(BERT_MASK_P);
                }
                if t > 0 && !row.iter().any(|&m| m) {
                    row[rng.gen_range(0..t)] = true;
                }
            }
            let count = masked.iter().filter(|&&m| m).count().max(1) as f32;
            Batch {
                b,
                t,
                input,
                target,
                keep: Some(masked.iter().map(|&m| if m { 0.0 } else { 1.0 }).collect()),
                weight: masked
                    .iter()
                    .map(|&m| if m { 1.0 / count } else { 0.0 })
                    .collect(),
            }
        }
    }
}

impl Batch {
    /// Sequences `rows` of this batch (a rank's shard), with their weights unchanged: the
    /// shards' losses (and gradients) then sum to the whole batch's.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Batch {
        let t = self.t;
        let span = rows.start * t..rows.end * t;
        Batch {
            b: rows.len(),
            t,
            input: self.input[span.clone()].to_vec(),
            target: self.target[span.clone()].to_vec(),
            keep: self.keep.as_ref().map(|k| k[span.clone()].to_vec()),
            weight: self.weight[span].to_vec(),
        }
    }
}

/// The batch's loss in nats: `-Σ weight · log softmax(logits)[target]`.
pub fn loss<E: Float, D: Kernels<E>, T: Tape<E, D>>(
    gpt: &Gpt<E, D>,
    batch: &Batch,
) -> Tensor<(), E, D, T> {
    let keep: Option<Vec<E>> = batch
        .keep
        .as_ref()
        .map(|k| k.iter().map(|&x| cst::<E>(x as f64)).collect());
    let z = gpt.forward::<T>(
        &batch.input,
        batch.b,
        batch.keep.is_none(),
        keep.as_deref(),
        Capture::default(),
        &mut Captures::default(),
    );
    D::head_loss(
        z,
        &gpt.params.lm_head,
        &batch.target,
        &batch.weight,
        gpt.fused,
    )
}

/// The value of a 0-d tensor as f64.
pub use crate::nn::value as scalar;

/// Nats to bits.
pub fn bits(nats: f64) -> f64 {
    nats / std::f64::consts::LN_2
}

/// Mean loss in nats per position over `images`, in batches of `batch`, without
/// gradients. BERT masks come from `rng`.
pub fn evaluate<E: Float, D: Kernels<E>, R: Rng>(
    gpt: &Gpt<E, D>,
    images: &[&[u16]],
    batch: usize,
    objective: Objective,
    rng: &mut R,
) -> f64 {
    mean_of_parts(&evaluate_parts(
        gpt,
        images,
        batch,
        objective,
        rng,
        Shard::WHOLE,
    ))
}

/// [`evaluate`] split over ranks: per chunk of `batch` images, `[loss·positions,
/// positions]`, computed for the chunks `shard` owns and zero for the others (every
/// chunk's BERT masks are still drawn, so the masks are those of one process). Summed
/// over the ranks, each chunk's pair is the owner's exactly (`x + 0 = x`), and
/// [`mean_of_parts`] then gives every rank the single-process mean.
pub fn evaluate_parts<E: Float, D: Kernels<E>, R: Rng>(
    gpt: &Gpt<E, D>,
    images: &[&[u16]],
    batch: usize,
    objective: Objective,
    rng: &mut R,
    shard: Shard,
) -> Vec<f64> {
    let sos = gpt.config.sos();
    let mut parts = Vec::new();
    for (i, chunk) in images.chunks(batch.max(1)).enumerate() {
        let b = make_batch(chunk, sos, objective, rng);
        if !shard.owns(i) {
            parts.extend([0.0, 0.0]);
            continue;
        }
        // Each batch's weights sum to 1; weigh batches by their counted positions.
        let positions = match objective {
            Objective::Ar => (b.b * b.t) as f64,
            Objective::Bert => b
                .keep
                .as_ref()
                .map_or(0.0, |k| k.iter().filter(|&&x| x == 0.0).count() as f64),
        };
        let l = scalar(loss::<E, D, NoneTape>(gpt, &b));
        parts.extend([l * positions, positions]);
    }
    parts
}

/// The mean loss per position from [`evaluate_parts`] (summed in chunk order).
pub fn mean_of_parts(parts: &[f64]) -> f64 {
    let mut total = 0.0;
    let mut weight = 0.0;
    for p in parts.chunks_exact(2) {
        total += p[0];
        weight += p[1];
    }
    total / weight.max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn ar_batch_shifts_by_sos() {
        let a = [1u16, 2, 3];
        let b = [4u16, 5, 6];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let batch = make_batch(&[&a, &b], 16, Objective::Ar, &mut rng);
        assert_eq!(batch.input, vec![16, 1, 2, 16, 4, 5]);
        assert_eq!(batch.target, vec![1, 2, 3, 4, 5, 6]);
        assert!(batch.keep.is_none());
        assert!((batch.weight.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn bert_batch_masks_about_15_percent() {
        let img = vec![3u16; 1000];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let batch = make_batch(&[&img, &img], 16, Objective::Bert, &mut rng);
        assert_eq!(batch.input, batch.target);
        let keep = batch.keep.unwrap();
        let masked = keep.iter().filter(|&&k| k == 0.0).count();
        assert!((200..400).contains(&masked), "{masked}");
        for (k, w) in keep.iter().zip(&batch.weight) {
            assert_eq!(*w > 0.0, *k == 0.0);
        }
        // A one-pixel image still gets one masked position.
        let batch = make_batch(&[&[1u16][..]], 16, Objective::Bert, &mut rng);
        assert_eq!(batch.keep, Some(vec![0.0]));
    }

    #[test]
    fn shards_of_a_batch_keep_the_global_weights() {
        let imgs: Vec<Vec<u16>> = (0..5).map(|i| vec![i as u16; 40]).collect();
        let refs: Vec<&[u16]> = imgs.iter().map(|v| v.as_slice()).collect();
        for objective in [Objective::Ar, Objective::Bert] {
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            let whole = make_batch(&refs, 16, objective, &mut rng);
            let mut weight = 0.0f64;
            let mut input = Vec::new();
            for rank in 0..2 {
                let part = whole.rows(Shard { rank, size: 2 }.range(5));
                assert_eq!(part.b, [3, 2][rank]);
                assert_eq!(part.input.len(), part.b * part.t);
                weight += part.weight.iter().map(|&w| w as f64).sum::<f64>();
                input.extend(part.input);
            }
            assert_eq!(input, whole.input, "{objective:?}");
            assert!((weight - 1.0).abs() < 1e-6, "{objective:?}: {weight}");
        }
    }
}
