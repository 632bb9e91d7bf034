//! igpt-core's forward with a [`FastOps`], compiled for the instruction set of its kernels.

use crate::{FastOps, KernelSet, Packed};
use anyhow::Result;
use igpt_core::{scratch_f32_len, scratch_i8_len, Config, Model, Prediction, Scratch};

/// Caller-side buffers for one forward pass of a config.
pub struct Buffers {
    f: Vec<f32>,
    q: Vec<i8>,
}

impl Buffers {
    /// Buffers sized by core's `const fn`s.
    pub fn new(c: &Config) -> Buffers {
        Buffers {
            f: vec![0.0; scratch_f32_len(c)],
            q: vec![0; scratch_i8_len(c)],
        }
    }

    /// The core's view.
    pub fn scratch(&mut self, c: &Config) -> Result<Scratch<'_>> {
        Ok(Scratch::new(c, &mut self.f, &mut self.q)?)
    }
}

/// What the rest of the forward (igpt-core's code around the `Ops` calls, and the
/// portable fallbacks) is compiled for: the instruction set of the kernels, so a forced
/// `IGPT_KERNELS=avx2` runs as on an AVX2 machine; the portable set takes the best this
/// CPU has, as a CPU without vector kernels would.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Generic,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Target {
    fn of(k: KernelSet) -> Target {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx512 = has!("avx512f")
                && has!("avx512bw")
                && has!("avx512dq")
                && has!("avx512vl")
                && has!("avx512vnni");
            let avx2 = has!("avx2") && has!("fma");
            match k {
                KernelSet::Avx512 | KernelSet::Portable if avx512 => return Target::Avx512,
                KernelSet::Avx2 | KernelSet::AvxVnni | KernelSet::Portable if avx2 => {
                    return Target::Avx2
                }
                _ => {}
            }
        }
        let _ = k;
        Target::Generic
    }
}

/// The forward `$call` (a method of `Model` taking `ops` first) compiled three ways.
macro_rules! dispatched {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, $call:ident) => {
        $(#[$doc])*
        pub fn $name(model: &Model<'_>, ops: &mut FastOps<'_>, $($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                // Safety: callers check the CPU has the features (`Target::of`).
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
                unsafe fn avx512(model: &Model<'_>, ops: &mut FastOps<'_>, $($arg: $ty),*) -> $ret {
                    model.$call(ops, $($arg),*)
                }
                // Safety: as above.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2(model: &Model<'_>, ops: &mut FastOps<'_>, $($arg: $ty),*) -> $ret {
                    model.$call(ops, $($arg),*)
                }
                match Target::of(ops.kernels()) {
                    // SAFETY: `Target::of` returned it only where the CPU has these
                    // features.
                    Target::Avx512 => return unsafe { avx512(model, ops, $($arg),*) },
                    // SAFETY: as above.
                    Target::Avx2 => return unsafe { avx2(model, ops, $($arg),*) },
                    Target::Generic => {}
                }
            }
            model.$call(ops, $($arg),*)
        }
    };
}

dispatched!(
    /// `model.classify_with(ops)`: the heavy operations run by the vector kernels of
    /// [this crate](crate) (the set `ops` was packed for), the rest of the forward
    /// compiled for that set's instruction set (igpt-core's forward is
    /// `#[inline(always)]`, so all of it is recompiled here). Results equal the portable
    /// path's bit for bit.
    classify(image: &[u16], s: &mut Scratch<'_>) -> igpt_core::Result<Prediction>,
    classify_with
);

dispatched!(
    /// `model.logits_with(ops)`, dispatched like [`classify`].
    logits(image: &[u16], s: &mut Scratch<'_>, out: &mut [f32]) -> igpt_core::Result<()>,
    logits_with
);

/// Runs `model` on `image` through the dispatched forward with `packed`'s kernels and
/// through igpt-core's portable code, and checks they agree bit for bit: the next-token
/// logits and every KV-cached step (when the file has the next-token head), and the
/// classification with its probabilities (when it has a probe head). Returns the number
/// of outputs compared; the error names the first that differs.
pub fn check_against_portable(model: &Model<'_>, packed: &Packed, image: &[u16]) -> Result<usize> {
    let c = *model.config();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let set = packed.kernels();
    let (mut plain_buf, mut fast_buf) = (Buffers::new(&c), Buffers::new(&c));
    let (mut ps, mut fs) = (plain_buf.scratch(&c)?, fast_buf.scratch(&c)?);
    let mut ops = packed.ops();
    let mut compared = 0;
    if model.has_head() {
        let mut plain = vec![0f32; c.seq_len() * c.vocab];
        let mut fast = plain.clone();
        model.logits(image, &mut ps, &mut plain)?;
        logits(model, &mut ops, image, &mut fs, &mut fast)?;
        anyhow::ensure!(
            bits(&fast) == bits(&plain),
            "{set}: next-token logits differ"
        );
        let mut kv = vec![0f32; igpt_core::kv_f32_len(&c)];
        let mut cache = igpt_core::KvCache::new(&c, &mut kv)?;
        let mut step = vec![0f32; c.vocab];
        for (t, want) in plain.chunks_exact(c.vocab).enumerate() {
            let id = if t == 0 { c.sos() as u16 } else { image[t - 1] };
            model.step_with(&mut ops, id, &mut cache, &mut fs, &mut step)?;
            anyhow::ensure!(
                bits(&step) == bits(want),
                "{set}: KV-cached step {t} differs"
            );
        }
        compared += 2 * c.seq_len();
    }
    if model.probe().is_some() {
        let want = model.classify(image, &mut ps)?;
        let got = classify(model, &mut ops, image, &mut fs)?;
        anyhow::ensure!(
            got.class == want.class && bits(&got.probs) == bits(&want.probs),
            "{set}: classification differs"
        );
        compared += 1;
    }
    Ok(compared)
}
