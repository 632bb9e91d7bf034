//! Running igpt-core's int8 model on the host: `classify`, `eval` and `bench infer`.

use crate::int8::export::{dequantized, probe_head};
pub use crate::int8::kernels::{classify, logits, Buffers};
use crate::int8::kernels::{KernelSet, Packed};
use crate::io::checkpoint::Checkpoint;
use crate::nn::{Capture, Captures, Gpt};
use anyhow::{Context, Result};
use dfdx::prelude::{Cpu, NoneTape};
use igpt_core::{Model, Prediction};
use rayon::prelude::*;
use std::path::Path;

/// Firmware test vectors (igpt-core's `vectors` format) of the first `count` test images
/// of `data`: tokens, labels and this host's int8 prediction (with the vector kernels;
/// the firmware runs the portable path and checks the two agree bit for bit). Returns
/// the file's bytes, the number of correct predictions and the number of images.
pub fn test_vectors(
    model: &Model<'_>,
    model_path: &Path,
    data: &Path,
    count: usize,
) -> Result<(Vec<u8>, usize, usize)> {
    let c = *model.config();
    let set = crate::data::tokenize::split(
        data,
        crate::data::Split::Test,
        model.palette(),
        c.side,
        count,
    )?;
    let mut buf = Buffers::new(&c);
    let packed = Packed::new(model)?;
    let mut ops = packed.ops();
    let mut out = vec![0u8; igpt_core::vectors::file_len(set.len(), c.seq_len())];
    let mut w = igpt_core::vectors::Writer::new(&mut out, set.len(), c.seq_len())?;
    let mut correct = 0;
    for (t, &label) in set.tokens.iter().zip(&set.labels) {
        let mut s = buf.scratch(&c)?;
        let p = classify(model, &mut ops, t, &mut s)?;
        correct += (p.class == label as usize) as usize;
        ensure_finite_probs(&p, model_path)?;
        let prob = p.probs.get(p.class).copied().unwrap_or(0.0);
        w.push(t, label, p.class as u16, prob)?;
    }
    w.finish()?;
    Ok((out, correct, set.len()))
}

/// Refuses a prediction whose probabilities are not all finite (a probe head or weights
/// of absurd size), naming the model file.
pub fn ensure_finite_probs(p: &Prediction, model_path: &Path) -> Result<()> {
    anyhow::ensure!(
        p.probs.iter().all(|x| x.is_finite()),
        "{}: the model gives non-finite class probabilities (its probe head or weights hold values too large for the arithmetic)",
        model_path.display()
    );
    Ok(())
}

/// Refuses a checkpoint that is not the source of a model file: each stored tensor of the
/// file, dequantized, must lie within 2% of the checkpoint's tensor's largest magnitude
/// (int8 rounding moves a weight by at most 0.4% of its row's largest).
pub fn ensure_exported_from(model: &Model<'_>, ck: &Checkpoint) -> Result<()> {
    anyhow::ensure!(
        ck.config == *model.config(),
        "the checkpoint's shape ({:?}) differs from the model file's ({:?})",
        ck.config,
        model.config()
    );
    let twin = Checkpoint::from_model(&dequantized(model)?, None);
    let stored = model.stored_layers();
    for (name, q) in twin.params.iter() {
        let compared = match name {
            crate::nn::ParamName::Wte | crate::nn::ParamName::Wpe => true,
            crate::nn::ParamName::Block(l, _) => l < stored,
            _ => false,
        };
        let Some((_, w)) = ck.params.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        if !compared || w.data.len() != q.data.len() {
            continue;
        }
        let top = w.data.iter().fold(0f32, |m, x| m.max(x.abs()));
        let off = w
            .data
            .iter()
            .zip(&q.data)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        anyhow::ensure!(
            off <= 0.02 * top + 1e-6,
            "the checkpoint is not the model file's source: {name} differs by {off:.3e} (its largest weight is {top:.3e}); pass the checkpoint it was exported from",
        );
    }
    Ok(())
}

/// Classifies every image with the core (in parallel, one scratch per task).
pub fn classify_all(model: &Model<'_>, images: &[Vec<u16>]) -> Result<Vec<Prediction>> {
    let c = *model.config();
    let packed = Packed::new(model)?;
    images
        .par_iter()
        .map_init(
            || (Buffers::new(&c), packed.ops()),
            |(b, ops), img| -> Result<Prediction> {
                let mut s = b.scratch(&c)?;
                Ok(classify(model, ops, img, &mut s)?)
            },
        )
        .collect()
}

/// Probe features of one layer in f32 (dfdx forward, batched).
pub fn f32_features(
    gpt: &Gpt<f32, Cpu>,
    images: &[Vec<u16>],
    layer: usize,
    causal: bool,
    show: bool,
) -> Vec<Vec<f32>> {
    let mut f = crate::eval::probe::features(gpt, images, 64, causal, show);
    std::mem::take(&mut f[layer])
}

/// Next-token cross-entropy of AR int8 logits on images, in bits per pixel.
pub fn int8_bits_per_dim(model: &Model<'_>, images: &[Vec<u16>]) -> Result<f64> {
    let c = *model.config();
    let (n, k) = (c.seq_len(), c.vocab);
    let packed = Packed::new(model)?;
    let nats: Vec<f64> = images
        .par_iter()
        .map_init(
            || (Buffers::new(&c), vec![0f32; n * k], packed.ops()),
            |(b, lg, ops), img| -> Result<f64> {
                let mut s = b.scratch(&c)?;
                logits(model, ops, img, &mut s, lg)?;
                Ok(lg
                    .chunks_exact(k)
                    .zip(img)
                    .map(|(row, &t)| {
                        let m = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
                        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
                        lse - row[t as usize] as f64
                    })
                    .sum::<f64>())
            },
        )
        .collect::<Result<_>>()?;
    Ok(nats.iter().sum::<f64>() / (images.len() * n).max(1) as f64 / std::f64::consts::LN_2)
}

/// What `igpt eval` measured.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// Test images.
    pub images: usize,
    /// int8 accuracy.
    pub int8_accuracy: f64,
    /// f32 accuracy (with the checkpoint).
    pub f32_accuracy: Option<f64>,
    /// Fraction of images where int8 and f32 predict the same class.
    pub agreement: Option<f64>,
    /// Bits per dim of int8 / f32 on the NLL images (AR models with a head).
    pub bits: Option<(f64, Option<f64>)>,
    /// False when an int8 prediction had a non-finite probability.
    pub int8_finite: bool,
    /// With the checkpoint: false when an f32 class score was not finite.
    pub f32_finite: Option<bool>,
    /// The data's class names (to check against the model's).
    pub classes: Vec<String>,
}

/// int8 accuracy on the test split; with the f32 checkpoint (and the probe head exported
/// into the file, as JSON), the f32 accuracy, agreement and NLL of both.
pub fn eval(
    model: &Model<'_>,
    data: &Path,
    checkpoint: Option<&Checkpoint>,
    limit: usize,
    nll_images: usize,
    show: bool,
) -> Result<EvalReport> {
    let c = *model.config();
    let (layer, _) = model.probe().context("the model file has no probe head")?;
    let ds = crate::data::tokenize::split(
        data,
        crate::data::Split::Test,
        model.palette(),
        c.side,
        limit,
    )?;
    let images = &ds.tokens;
    let t0 = std::time::Instant::now();
    let preds = classify_all(model, images)?;
    if show {
        crate::progress::message(format!(
            "int8: {} images in {:.1} s",
            images.len(),
            t0.elapsed().as_secs_f64()
        ));
    }
    let acc = |p: &[usize]| {
        p.iter()
            .zip(&ds.labels)
            .filter(|(a, b)| **a == **b as usize)
            .count() as f64
            / p.len().max(1) as f64
    };
    let p8: Vec<usize> = preds.iter().map(|p| p.class).collect();
    let mut report = EvalReport {
        images: images.len(),
        int8_accuracy: acc(&p8),
        f32_accuracy: None,
        agreement: None,
        bits: None,
        int8_finite: preds.iter().all(|p| p.probs.iter().all(|x| x.is_finite())),
        f32_finite: None,
        classes: ds.classes.clone(),
    };
    let nll_set = &images[..nll_images.min(images.len())];
    let bits8 = if model.has_head() && model.causal() && !nll_set.is_empty() {
        Some(int8_bits_per_dim(model, nll_set)?)
    } else {
        None
    };
    if let Some(ck) = checkpoint {
        let head = &probe_head(model).context("the model file has no probe head")?;
        anyhow::ensure!(
            ck.config == c,
            "the checkpoint's shape differs from the model file's"
        );
        let gpt: Gpt<f32, Cpu> = ck.model(&Cpu::default())?;
        let causal = ck.objective() == crate::nn::Objective::Ar;
        let feats = f32_features(&gpt, images, layer, causal, show);
        let mut finite = true;
        let p32: Vec<usize> = feats
            .iter()
            .map(|f| {
                let s = head.scores(f);
                finite &= s.iter().all(|x| x.is_finite());
                (0..s.len()).fold(0, |b, i| if s[i] > s[b] { i } else { b })
            })
            .collect();
        report.f32_finite = Some(finite);
        report.f32_accuracy = Some(acc(&p32));
        report.agreement = Some(
            p8.iter().zip(&p32).filter(|(a, b)| a == b).count() as f64 / p8.len().max(1) as f64,
        );
        if bits8.is_some() {
            let refs: Vec<&[u16]> = nll_set.iter().map(|v| v.as_slice()).collect();
            let nats = crate::train::evaluate(
                &gpt,
                &refs,
                32,
                crate::nn::Objective::Ar,
                &mut rand::rngs::mock::StepRng::new(0, 0),
            );
            report.bits = Some((bits8.unwrap_or(0.0), Some(nats / std::f64::consts::LN_2)));
        }
    } else if let Some(b) = bits8 {
        report.bits = Some((b, None));
    }
    Ok(report)
}

/// What `bench infer` measured, in images/s.
#[derive(Debug, Clone, Copy)]
pub struct InferBench {
    /// The core's int8 probe forward with the host's vector kernels (set [`Self::kernels`]),
    /// one image at a time.
    pub int8: f64,
    /// The same forward with the core's portable kernels (what the vector kernels buy).
    pub int8_portable: f64,
    /// The f32 dfdx forward of the same weights, in batches.
    pub f32_batched: f64,
    /// The f32 dfdx forward one image at a time.
    pub f32_single: f64,
    /// The kernel set of the `int8` figure (`IGPT_KERNELS`, or the best this CPU has).
    pub kernels: KernelSet,
    /// `int8` in images per second of this process's CPU time (best round), where the
    /// platform tells: on a machine shared with other jobs, time spent waiting for a core
    /// does not count.
    pub int8_cpu: Option<f64>,
    /// `f32_batched` in images per second of CPU time (best round).
    pub f32_batched_cpu: Option<f64>,
}

impl InferBench {
    /// int8 over the faster of the two f32 figures.
    pub fn speedup(&self) -> f64 {
        self.int8 / self.f32_batched.max(self.f32_single)
    }

    /// int8 over batched f32, both in images per CPU-second.
    pub fn cpu_speedup(&self) -> Option<f64> {
        Some(self.int8_cpu? / self.f32_batched_cpu?)
    }
}

/// Seconds of CPU time used by this process, all threads (Linux; `None` elsewhere).
fn cpu_seconds() -> Option<f64> {
    #[cfg(target_os = "linux")]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through a valid, exclusive pointer.
        if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } == 0 {
            return Some(t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9);
        }
    }
    None
}

/// Wall and CPU clocks started together.
struct Clock(std::time::Instant, Option<f64>);

impl Clock {
    fn start() -> Clock {
        Clock(std::time::Instant::now(), cpu_seconds())
    }

    /// `n` per second of wall time, and per second of CPU time.
    fn rates(&self, n: usize) -> (f64, Option<f64>) {
        let wall = n as f64 / self.0.elapsed().as_secs_f64();
        let cpu = match (self.1, cpu_seconds()) {
            (Some(a), Some(b)) if b > a => Some(n as f64 / (b - a)),
            _ => None,
        };
        (wall, cpu)
    }
}

/// The larger of two optional rates.
fn best(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// `bench infer`: the probe forward of `images` by the core's int8 path (one image at a
/// time) and by the f32 dfdx forward of the same model (the file's weights dequantized;
/// both stop at the probe layer), on the current thread pool. The int8 and batched f32
/// passes alternate for `rounds` rounds and each keeps its best round, so a burst of load
/// from other processes does not decide the ratio; each is also timed by CPU time.
pub fn bench(
    model: &Model<'_>,
    images: &[Vec<u16>],
    batch: usize,
    rounds: usize,
) -> Result<InferBench> {
    let c = *model.config();
    let (layer, _) = model.probe().context("the model file has no probe head")?;
    let mut b = Buffers::new(&c);
    let mut s = b.scratch(&c)?;
    let packed = Packed::new(model)?;
    let portable = Packed::with_kernels(model, KernelSet::Portable)?;
    let mut sink = 0usize;
    let mut int8_pass = |p: &Packed| -> Result<(f64, Option<f64>)> {
        let mut ops = p.ops();
        let t0 = Clock::start();
        for img in images {
            sink += classify(model, &mut ops, img, &mut s)?.class;
        }
        Ok(t0.rates(images.len()))
    };
    // f32: the stored blocks only, so both stop at the probe layer.
    let mut gpt = dequantized(model)?;
    if layer < gpt.params.blocks.len() {
        gpt.params.ln_f = gpt.params.blocks[layer].ln_1.clone();
        gpt.params.blocks.truncate(layer);
        gpt.config.layers = layer;
    }
    let f32_pass = |batch: usize| {
        let t0 = Clock::start();
        for chunk in images.chunks(batch.max(1)) {
            let ids = crate::data::tokenize::model_ids(chunk, c.sos(), model.causal());
            let mut caps = Captures::default();
            let cap = Capture {
                hidden: false,
                probe: true,
            };
            let _ =
                gpt.forward::<NoneTape>(&ids, chunk.len(), model.causal(), None, cap, &mut caps);
            std::hint::black_box(&caps);
        }
        t0.rates(images.len())
    };
    // Warm-up passes, not timed.
    int8_pass(&packed)?;
    f32_pass(batch);
    let (mut int8, mut f32_batched) = ((0f64, None), (0f64, None));
    for _ in 0..rounds.max(1) {
        let (w, c) = int8_pass(&packed)?;
        int8 = (int8.0.max(w), best(int8.1, c));
        let (w, c) = f32_pass(batch);
        f32_batched = (f32_batched.0.max(w), best(f32_batched.1, c));
    }
    let int8_portable = int8_pass(&portable)?.0;
    let f32_single = f32_pass(1).0;
    std::hint::black_box(sink);
    Ok(InferBench {
        int8: int8.0,
        int8_portable,
        f32_batched: f32_batched.0,
        f32_single,
        kernels: packed.kernels(),
        int8_cpu: int8.1,
        f32_batched_cpu: f32_batched.1,
    })
}
