//! Training pieces: batches for the AR and BERT objectives, the loss, a hand-written
//! AdamW with decoupled weight decay and global-norm clipping, the learning-rate
//! schedule, and evaluation in bits per dimension.
//!
//! Everything here runs through dfdx tensor ops, so it works on any dfdx device.

use crate::io::checkpoint::Mat;
use crate::nn::{cst, Capture, Captures, Float, Gpt, Kernels, Objective, Param};
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
    let mut input = Vec::with_capacity(b * t);
    let mut target = Vec::with_capacity(b * t);
    for img in images {
        assert_eq!(img.len(), t, "images of one length");
        target.extend(img.iter().map(|&x| x as usize));
        match objective {
            Objective::Ar => {
                input.push(sos);
                input.extend(img[..t.saturating_sub(1)].iter().map(|&x| x as usize));
            }
            Objective::Bert => input.extend(img.iter().map(|&x| x as usize)),
        }
    }
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
    D::head_loss(z, &gpt.lm_head, &batch.target, &batch.weight, gpt.fused)
}

/// The value of a 0-d tensor as f64.
pub fn scalar<E: Float, D: Device<E>, T>(t: Tensor<(), E, D, T>) -> f64 {
    t.as_vec()
        .first()
        .and_then(|x| x.to_f64())
        .unwrap_or(f64::NAN)
}

/// Nats to bits.
pub fn bits(nats: f64) -> f64 {
    nats / std::f64::consts::LN_2
}

/// AdamW settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay (applied to block projections and the head only).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub clip: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        // The paper's: β (0.9, 0.95), no weight decay.
        AdamConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            clip: 1.0,
        }
    }
}

/// AdamW's moments, one pair per parameter in [`Gpt::params`] order.
pub struct AdamW<E: Dtype, D: Storage<E>> {
    /// Settings.
    pub cfg: AdamConfig,
    /// First moments.
    pub m: Vec<Param<E, D>>,
    /// Second moments.
    pub v: Vec<Param<E, D>>,
    /// Steps taken.
    pub step: u64,
}

impl<E: Float, D: Device<E>> AdamW<E, D> {
    /// Zero moments for `gpt`.
    pub fn new(gpt: &Gpt<E, D>, cfg: AdamConfig) -> Self {
        let dev = gpt.wte.device().clone();
        let zeros = |p: &Param<E, D>| dev.zeros_like(p.shape());
        let params = gpt.params();
        AdamW {
            cfg,
            m: params.iter().map(|(_, p)| zeros(p)).collect(),
            v: params.iter().map(|(_, p)| zeros(p)).collect(),
            step: 0,
        }
    }

    /// Moments from a checkpoint.
    pub fn from_mats(dev: &D, cfg: AdamConfig, m: &[Mat], v: &[Mat], step: u64) -> Self {
        let t = |x: &Mat| {
            dev.tensor_from_vec(
                x.data.iter().map(|&f| cst::<E>(f as f64)).collect(),
                (x.rows, x.cols),
            )
        };
        AdamW {
            cfg,
            m: m.iter().map(t).collect(),
            v: v.iter().map(t).collect(),
            step,
        }
    }

    /// The moments as checkpoint tensors.
    pub fn to_mats(&self) -> (Vec<Mat>, Vec<Mat>) {
        let f = |x: &Param<E, D>| Mat {
            rows: x.shape().0,
            cols: x.shape().1,
            data: x
                .as_vec()
                .into_iter()
                .map(|e| e.to_f32().unwrap_or(f32::NAN))
                .collect(),
        };
        (
            self.m.iter().map(f).collect(),
            self.v.iter().map(f).collect(),
        )
    }

    /// One AdamW step at learning rate `lr` with the gradients of `gpt`'s parameters:
    /// the device's fused update when `gpt.fused` (CPU f32), else [`AdamW::update_reference`].
    /// Returns the global gradient norm before clipping.
    pub fn update(&mut self, gpt: &mut Gpt<E, D>, grads: &mut Gradients<E, D>, lr: f64) -> f64
    where
        D: Kernels<E>,
    {
        D::adamw(self, gpt, grads, lr)
    }

    /// The bias-correction factors `1 - β^t` for the step about to be taken.
    pub fn bias_corrections(&self) -> (f64, f64) {
        let t = (self.step + 1) as i32;
        (1.0 - self.cfg.beta1.powi(t), 1.0 - self.cfg.beta2.powi(t))
    }

    /// The gradient scale that clips a global norm `norm` to `cfg.clip`.
    pub fn clip_scale(&self, norm: f64) -> f64 {
        if self.cfg.clip > 0.0 && norm > self.cfg.clip {
            self.cfg.clip / norm
        } else {
            1.0
        }
    }

    /// AdamW in dfdx tensor ops (any device): the reference twin of the fused update.
    pub fn update_reference(
        &mut self,
        gpt: &mut Gpt<E, D>,
        grads: &Gradients<E, D>,
        lr: f64,
    ) -> f64 {
        let names: Vec<String> = gpt.params().into_iter().map(|(n, _)| n).collect();
        let g: Vec<Param<E, D>> = gpt
            .params()
            .into_iter()
            .map(|(_, p)| grads.get(p))
            .collect();
        let norm = g
            .iter()
            .map(|x| scalar(x.clone().square().sum::<(), _>()))
            .sum::<f64>()
            .sqrt();
        let scale = self.clip_scale(norm);
        let (bc1, bc2) = self.bias_corrections();
        self.step += 1;
        let c = self.cfg;
        for (i, p) in gpt.params_mut().into_iter().enumerate() {
            let g = g[i].clone() * cst::<E>(scale);
            let m = self.m[i].clone() * cst::<E>(c.beta1) + g.clone() * cst::<E>(1.0 - c.beta1);
            let v = self.v[i].clone() * cst::<E>(c.beta2) + g.square() * cst::<E>(1.0 - c.beta2);
            let step = (m.clone() * cst::<E>(1.0 / bc1))
                / ((v.clone() * cst::<E>(1.0 / bc2)).sqrt() + cst::<E>(c.eps));
            let mut new = p.clone();
            if c.weight_decay > 0.0 && Gpt::<E, D>::decays(&names[i]) {
                new = new * cst::<E>(1.0 - lr * c.weight_decay);
            }
            *p = new - step * cst::<E>(lr);
            self.m[i] = m;
            self.v[i] = v;
        }
        norm
    }
}

/// Linear warmup from 0 over `warmup` steps, then cosine decay to 0 at `total`.
/// `step` counts from 0 (the learning rate of the step about to be taken).
pub fn lr_at(step: u64, base: f64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let p = ((step - warmup) as f64 / span).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
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
    let sos = gpt.config.sos();
    let mut total = 0.0;
    let mut weight = 0.0;
    for chunk in images.chunks(batch.max(1)) {
        let b = make_batch(chunk, sos, objective, rng);
        // Each batch's weights sum to 1; weigh batches by their counted positions.
        let positions = match objective {
            Objective::Ar => (b.b * b.t) as f64,
            Objective::Bert => b
                .keep
                .as_ref()
                .map_or(0.0, |k| k.iter().filter(|&&x| x == 0.0).count() as f64),
        };
        let l = scalar(loss::<E, D, NoneTape>(gpt, &b));
        total += l * positions;
        weight += positions;
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
    fn schedule() {
        assert_eq!(lr_at(0, 1.0, 10, 100), 0.1);
        assert_eq!(lr_at(9, 1.0, 10, 100), 1.0);
        assert!((lr_at(10, 1.0, 10, 100) - 1.0).abs() < 1e-12);
        assert!((lr_at(55, 1.0, 10, 100) - 0.5).abs() < 1e-12);
        assert!(lr_at(100, 1.0, 10, 100).abs() < 1e-12);
        assert_eq!(
            lr_at(5, 1.0, 0, 10),
            0.5 * (1.0 + (std::f64::consts::PI * 0.5).cos())
        );
    }
}
