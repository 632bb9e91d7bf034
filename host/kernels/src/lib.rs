//! igpt-core's int8 forward pass on the host: vector kernels plugged in through
//! [`igpt_core::kernels::Ops`], three x86-64 sets and two aarch64 sets beside igpt-core's
//! portable code, and the forward dispatched to the instruction set of the chosen kernels
//! ([`classify`], [`logits`]). This crate depends on igpt-core alone (no dfdx), so its
//! tests build and run quickly for another target: CI runs them for aarch64 under
//! `qemu-aarch64` (`.ci/run`).
//!
//! | [`KernelSet`] | CPU flags | int8 products | the rest |
//! |---|---|---|---|
//! | `avx512` | avx512f, avx512bw, avx512vnni | `vpdpbusd` zmm on `w + 128` | 16 lanes (`avx512.rs`) |
//! | `avxvnni` | avx2, avxvnni | `vpdpbusd` ymm on `w + 128` | 8 lanes (`avx2.rs`) |
//! | `avx2` | avx2 | `vpmaddwd` on i16 copies of `w` and `x` | 8 lanes (`avx2.rs`) |
//! | `neondot` | asimd, asimddp (aarch64) | `sdot` on `w` | igpt-core's functions (`neon.rs`) |
//! | `neon` | asimd (every aarch64 CPU) | `smull` + `sadalp` on `w` | igpt-core's functions (`neon.rs`) |
//! | `portable` | - | igpt-core's functions | igpt-core's functions |
//!
//! Every kernel computes exactly what igpt-core's portable function computes, in the same
//! order, so results are equal bit for bit (the tests check it per kernel on awkward
//! shapes and on whole models; the firmware examples check the portable path against the
//! same predictions). The core sums in 16 lanes then a halving tree; the 8-lane kernels
//! keep two registers per 16 lanes (lanes 0-7 and 8-15), whose sum is the tree's first
//! step. For shapes a kernel does not take (outputs not a multiple of 16, inputs not a
//! multiple of 4, rows not a multiple of 16 (AVX-512) or 8 (AVX2) values, head widths the
//! attention kernel does not take) the portable function runs. The NEON sets replace only
//! the int8 products (the forward's bulk); the rest is igpt-core's code, which LLVM
//! vectorises for NEON on its own.
//!
//! The set is chosen once per process: the environment variable `IGPT_KERNELS`
//! (`portable`, `avx2`, `avxvnni`, `avx512`, `neon` or `neondot`) forces one, and asking
//! for one this CPU lacks is an error; unset, the best this CPU has runs
//! ([`KernelSet::from_env`]). Code picks one with [`Packed::with_kernels`].
//!
//! Packed layout of an `(O, C)` matrix: blocks of 16 outputs, in each block groups of 64
//! bytes (16 outputs × 4 consecutive inputs as bytes, or × 2 as i16), so one 64-byte load
//! (or two 32-byte loads, or four 16-byte loads) feeds 16 outputs. The VNNI sets store
//! bytes `w + 128` (unsigned, as `vpdpbusd` wants; `128 · Σ x` is subtracted afterwards,
//! exact in i32); the NEON sets store `w` itself (`sdot` and `smull` are signed × signed);
//! the AVX2 set stores `w` as i16 (`avx2.rs` shows why its products are exact).

use igpt_core::kernels::{self as ck, AttnArgs, Mat, Ops};
use igpt_core::weights::QMat;
use igpt_core::Model;
use std::fmt;
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod dispatch;
#[cfg(target_arch = "aarch64")]
mod neon;

pub use dispatch::{check_against_portable, classify, logits, Buffers};

/// A set of kernels behind [`FastOps`]. Ordered from slowest to fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelSet {
    /// igpt-core's portable functions (compiled by LLVM for the best vector extension the
    /// CPU has, as the rest of the forward is).
    Portable,
    /// AVX2: 8-lane kernels, int8 products with `vpmaddwd` on i16 copies.
    Avx2,
    /// AVX2 with AVX-VNNI: the AVX2 kernels, int8 products with 256-bit `vpdpbusd`.
    AvxVnni,
    /// AVX-512 F/BW/VNNI: 16-lane kernels, int8 products with 512-bit `vpdpbusd`.
    Avx512,
    /// aarch64 NEON (every aarch64 CPU): int8 products with `smull` + `sadalp`.
    Neon,
    /// aarch64 NEON with the dot-product extension: int8 products with `sdot`.
    NeonDot,
}

/// The environment variable that forces a [`KernelSet`].
pub const KERNELS_ENV: &str = "IGPT_KERNELS";

/// Why a [`KernelSet`] cannot run: one line, naming the variable when it came from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError(String);

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelError {}

impl KernelSet {
    /// Every set, slowest first.
    pub const ALL: [KernelSet; 6] = [
        KernelSet::Portable,
        KernelSet::Avx2,
        KernelSet::AvxVnni,
        KernelSet::Avx512,
        KernelSet::Neon,
        KernelSet::NeonDot,
    ];

    /// The name `IGPT_KERNELS` takes.
    pub fn name(self) -> &'static str {
        match self {
            KernelSet::Portable => "portable",
            KernelSet::Avx2 => "avx2",
            KernelSet::AvxVnni => "avxvnni",
            KernelSet::Avx512 => "avx512",
            KernelSet::Neon => "neon",
            KernelSet::NeonDot => "neondot",
        }
    }

    /// The architecture whose CPUs run the set (`None`: every one).
    pub fn arch(self) -> Option<&'static str> {
        match self {
            KernelSet::Portable => None,
            KernelSet::Avx2 | KernelSet::AvxVnni | KernelSet::Avx512 => Some("x86_64"),
            KernelSet::Neon | KernelSet::NeonDot => Some("aarch64"),
        }
    }

    /// True when the set has its own attention, norm and quantization kernels (else
    /// those run igpt-core's portable functions and only the int8 products are its own).
    pub fn has_vector_rest(self) -> bool {
        matches!(
            self,
            KernelSet::Avx2 | KernelSet::AvxVnni | KernelSet::Avx512
        )
    }

    /// What runs, in words (for `bench infer`).
    pub fn describe(self) -> &'static str {
        match self {
            KernelSet::Portable => "igpt-core's portable kernels",
            KernelSet::Avx2 => "host AVX2 kernels (vpmaddwd int8 products on i16 copies)",
            KernelSet::AvxVnni => {
                "host AVX-VNNI kernels (256-bit vpdpbusd int8 products, AVX2 rest)"
            }
            KernelSet::Avx512 => "host AVX-512 VNNI kernels (512-bit vpdpbusd)",
            KernelSet::Neon => "host NEON kernels (smull + sadalp int8 products, portable rest)",
            KernelSet::NeonDot => {
                "host NEON dot-product kernels (sdot int8 products, portable rest)"
            }
        }
    }

    /// The CPU flags the set needs (`/proc/cpuinfo` spelling).
    pub fn needs(self) -> &'static str {
        match self {
            KernelSet::Portable => "nothing",
            KernelSet::Avx2 => "avx2",
            KernelSet::AvxVnni => "avx2 and avx_vnni",
            KernelSet::Avx512 => "avx512f, avx512bw and avx512_vnni",
            KernelSet::Neon => "asimd (aarch64)",
            KernelSet::NeonDot => "asimd and asimddp (aarch64)",
        }
    }

    /// The CPU flags the set needs (`/proc/cpuinfo` spelling), each with whether this
    /// CPU has it (checked at run time). Empty for the portable set and for a set of
    /// another architecture.
    fn flags(self) -> Vec<(&'static str, bool)> {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                KernelSet::Avx2 => vec![("avx2", has!("avx2"))],
                KernelSet::AvxVnni => vec![("avx2", has!("avx2")), ("avx_vnni", has!("avxvnni"))],
                KernelSet::Avx512 => vec![
                    ("avx512f", has!("avx512f")),
                    ("avx512bw", has!("avx512bw")),
                    ("avx512_vnni", has!("avx512vnni")),
                ],
                _ => Vec::new(),
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            use std::arch::is_aarch64_feature_detected as has;
            match self {
                KernelSet::Neon => vec![("asimd", has!("neon"))],
                KernelSet::NeonDot => vec![("asimd", has!("neon")), ("asimddp", has!("dotprod"))],
                _ => Vec::new(),
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            let _ = self;
            Vec::new()
        }
    }

    /// True when this build's architecture is the set's.
    fn this_arch(self) -> bool {
        self.arch().is_none_or(|a| a == std::env::consts::ARCH)
    }

    /// True when this CPU runs the set (checked at run time).
    pub fn supported(self) -> bool {
        match self {
            KernelSet::Portable => true,
            _ => self.this_arch() && self.flags().iter().all(|&(_, has)| has),
        }
    }

    /// The sets this CPU runs, slowest first.
    pub fn available() -> Vec<KernelSet> {
        Self::ALL.into_iter().filter(|k| k.supported()).collect()
    }

    /// The fastest set this CPU runs.
    pub fn best() -> KernelSet {
        Self::available().pop().unwrap_or(KernelSet::Portable)
    }

    /// The names of the sets this CPU runs, for error lines.
    fn runs() -> String {
        let names: Vec<_> = Self::available().iter().map(|k| k.name()).collect();
        names.join(", ")
    }

    /// The set named `name` (as `IGPT_KERNELS` spells it, any case), if this CPU runs it.
    pub fn parse(name: &str) -> Result<KernelSet, KernelError> {
        let n = name.trim().to_ascii_lowercase();
        let Some(set) = Self::ALL.into_iter().find(|k| k.name() == n) else {
            return Err(KernelError(format!(
                "unknown kernel set {name:?}: expected portable, avx2, avxvnni, avx512, neon or neondot (this CPU runs: {})",
                Self::runs()
            )));
        };
        set.lacks().map_or(Ok(set), |e| Err(KernelError(e)))
    }

    /// What this CPU lacks for the set, in words (`None` when it runs it).
    fn lacks(self) -> Option<String> {
        if self.supported() {
            None
        } else if self.this_arch() {
            let missing: Vec<_> = self
                .flags()
                .into_iter()
                .filter(|&(_, has)| !has)
                .map(|(f, _)| f)
                .collect();
            Some(format!(
                "this CPU lacks {} (it runs: {})",
                missing.join(", "),
                Self::runs()
            ))
        } else {
            Some(format!(
                "{} is an {} kernel set and this {} build lacks it (it runs: {})",
                self.name(),
                self.arch().unwrap_or("?"),
                std::env::consts::ARCH,
                Self::runs()
            ))
        }
    }

    /// `Ok` when this CPU runs the set, else the error line saying what it lacks.
    pub fn check(self) -> Result<(), KernelError> {
        match self.lacks() {
            None => Ok(()),
            Some(e) => Err(KernelError(format!("kernel set {}: {e}", self.name()))),
        }
    }

    /// The set `IGPT_KERNELS` asks for (`value`; `None` or empty: [`KernelSet::best`]).
    pub fn choose(value: Option<&str>) -> Result<KernelSet, KernelError> {
        match value.map(str::trim) {
            None | Some("") => Ok(Self::best()),
            Some(v) => Self::parse(v).map_err(|e| KernelError(format!("{KERNELS_ENV}={v}: {e}"))),
        }
    }

    /// The set of this process: `IGPT_KERNELS`, read once ([`KernelSet::choose`]).
    pub fn from_env() -> Result<KernelSet, KernelError> {
        static CHOICE: OnceLock<Result<KernelSet, KernelError>> = OnceLock::new();
        CHOICE
            .get_or_init(|| {
                let v = std::env::var_os(KERNELS_ENV);
                match v.as_ref().map(|v| v.to_str()) {
                    None => Self::choose(None),
                    Some(Some(s)) => Self::choose(Some(s)),
                    Some(None) => Err(KernelError(format!("{KERNELS_ENV} is not UTF-8"))),
                }
            })
            .clone()
    }
}

impl fmt::Display for KernelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One int8 matrix repacked for a kernel set (see the module documentation).
#[derive(Debug, Clone)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct PackedMat {
    rows: usize,
    cols: usize,
    /// VNNI sets: `(rows/16, cols/4, 16, 4)` bytes of `w + 128`; NEON sets: the same
    /// layout of `w` (else empty).
    data: Vec<u8>,
    /// AVX2: `(rows/16, cols/2, 16, 2)` i16 of `w` (else empty).
    wide: Vec<i16>,
    /// One scale per output row.
    scales: Vec<f32>,
}

impl PackedMat {
    /// Repacks `w` for `set`, or `None` for a shape the kernels do not take and for the
    /// portable set.
    pub fn new(w: &QMat<'_>, set: KernelSet) -> Option<PackedMat> {
        let (o, c) = (w.rows, w.cols);
        if o == 0 || c == 0 || !o.is_multiple_of(16) || !c.is_multiple_of(4) {
            return None;
        }
        let (mut data, mut wide) = (Vec::new(), Vec::new());
        match set {
            KernelSet::Portable => return None,
            KernelSet::Avx2 => {
                wide = vec![0i16; o * c];
                for (r, row) in w.data.chunks_exact(c).enumerate().take(o) {
                    let (b, lane) = (r / 16, r % 16);
                    for (kp, two) in row.chunks_exact(2).enumerate() {
                        let at = b * 16 * c + kp * 32 + lane * 2;
                        for (dst, &v) in wide[at..at + 2].iter_mut().zip(two) {
                            *dst = v as i8 as i16;
                        }
                    }
                }
            }
            KernelSet::AvxVnni | KernelSet::Avx512 | KernelSet::Neon | KernelSet::NeonDot => {
                // `w + 128` for vpdpbusd (unsigned × signed), `w` for sdot / smull.
                let flip = if set.arch() == Some("x86_64") {
                    0x80
                } else {
                    0
                };
                data = vec![0u8; o * c];
                for (r, row) in w.data.chunks_exact(c).enumerate().take(o) {
                    let (b, lane) = (r / 16, r % 16);
                    for (kq, four) in row.chunks_exact(4).enumerate() {
                        let at = b * 16 * c + kq * 64 + lane * 4;
                        for (dst, &v) in data[at..at + 4].iter_mut().zip(four) {
                            *dst = v ^ flip;
                        }
                    }
                }
            }
        }
        let scales = (0..o).map(|r| w.scale(r)).collect();
        Some(PackedMat {
            rows: o,
            cols: c,
            data,
            wide,
            scales,
        })
    }
}

/// A model's matrices repacked for one [`KernelSet`], made once per model and shared by
/// every thread.
#[derive(Debug, Clone)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct Packed {
    /// `[layer][Mat::index]` for the six block matrices.
    blocks: Vec<[Option<PackedMat>; 6]>,
    head: Option<PackedMat>,
    kernels: KernelSet,
}

impl Packed {
    /// Repacks every stored matrix of `model` for this process's kernel set
    /// ([`KernelSet::from_env`]: `IGPT_KERNELS`, or the best this CPU has).
    pub fn new(model: &Model<'_>) -> anyhow::Result<Packed> {
        Self::with_kernels(model, KernelSet::from_env()?)
    }

    /// Repacks `model` for `set`; an error when this CPU lacks it.
    pub fn with_kernels(model: &Model<'_>, set: KernelSet) -> anyhow::Result<Packed> {
        set.check()?;
        let mut blocks = Vec::new();
        let mut head = None;
        if set != KernelSet::Portable {
            let w = model.weights();
            for l in 0..model.stored_layers() {
                let b = w.block(l)?;
                blocks.push(
                    [&b.q, &b.k, &b.v, &b.c_proj, &b.c_fc, &b.mlp_proj]
                        .map(|m| PackedMat::new(m, set)),
                );
            }
            if model.has_head() {
                head = PackedMat::new(&w.head()?.1, set);
            }
        }
        Ok(Packed {
            blocks,
            head,
            kernels: set,
        })
    }

    /// The kernel set these operations run.
    pub fn kernels(&self) -> KernelSet {
        self.kernels
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn get(&self, layer: usize, which: Mat) -> Option<&PackedMat> {
        if which == Mat::Head {
            return self.head.as_ref();
        }
        self.blocks.get(layer)?.get(which.index())?.as_ref()
    }

    /// The per-thread operations over these packed weights; run them only on the model
    /// they were packed from (they are looked up by layer and matrix).
    pub fn ops(&self) -> FastOps<'_> {
        FastOps {
            packed: self,
            work: Work::default(),
            kt: Vec::new(),
            probs: Vec::new(),
        }
    }
}

/// [`Ops`] with the vector kernels of one [`KernelSet`]; one per thread (it owns small
/// work buffers). Its methods are `#[inline(always)]` so that, inside a caller compiled
/// for AVX-512 / AVX2 (`igpt::int8::run::classify`), the portable fallbacks are compiled
/// for it too.
#[derive(Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct FastOps<'p> {
    packed: &'p Packed,
    /// The products' per-call buffers.
    work: Work,
    /// Keys transposed: `(d, span rounded up to 16)`.
    kt: Vec<f32>,
    /// Scores, then probabilities, of a tile of query rows.
    probs: Vec<f32>,
}

#[cfg(test)]
thread_local! {
    /// Calls on this thread that ran a vector kernel (the tests check the fast paths ran).
    static HITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts a vector kernel's call (tests only).
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn hit() {
    #[cfg(test)]
    HITS.with(|h| h.set(h.get() + 1));
}

/// Per-call buffers of the int8 products.
#[derive(Debug, Default)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Work {
    /// `128 · Σ x` per activation row (or row and group), for the VNNI products.
    sums: Vec<i32>,
    /// The activation rows as i16, for the AVX2 products.
    x16: Vec<i16>,
}

/// Checks that a product's buffers have the lengths of `T` rows of `pm`; returns `T`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn rows_of(
    pm: &PackedMat,
    out: &[f32],
    xq: &[i8],
    xs: &[f32],
    scales_per_row: usize,
) -> Option<usize> {
    let t = out.len() / pm.rows;
    (out.len() == t * pm.rows && xq.len() >= t * pm.cols && xs.len() >= t * scales_per_row)
        .then_some(t)
}

impl FastOps<'_> {
    /// The kernel set these operations run.
    pub fn kernels(&self) -> KernelSet {
        self.packed.kernels
    }

    /// The vector product by matrix `which` of block `layer` (`matmul_qg`'s when
    /// `grouped`, else `matmul_q`'s), when that matrix was packed and the buffers fit it;
    /// false when the portable code must run instead.
    #[inline(always)]
    fn product(
        &mut self,
        (layer, which, grouped): (usize, Mat, bool),
        out: &mut [f32],
        xq: &[i8],
        xs: &[f32],
        w: &QMat<'_>,
        add: bool,
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if let Some(pm) = self.packed.get(layer, which) {
            let per_row = if grouped { ck::groups(pm.cols) } else { 1 };
            if pm.rows == w.rows && pm.cols == w.cols {
                if let Some(t) = rows_of(pm, out, xq, xs, per_row) {
                    let work = &mut self.work;
                    // SAFETY: a matrix is packed only for a set this CPU runs
                    // (`Packed::with_kernels` checked it), in that set's encoding; the
                    // lengths were checked just above.
                    unsafe {
                        match self.packed.kernels {
                            KernelSet::Avx512 => {
                                avx512::matmul(out, xq, xs, pm, add, t, grouped, &mut work.sums)
                            }
                            KernelSet::AvxVnni => {
                                avx2::vnni::matmul(out, xq, xs, pm, add, t, grouped, work)
                            }
                            KernelSet::Avx2 => {
                                avx2::wide::matmul(out, xq, xs, pm, add, t, grouped, work)
                            }
                            _ => return false,
                        }
                    }
                    hit();
                    return true;
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(pm) = self.packed.get(layer, which) {
            let per_row = if grouped { ck::groups(pm.cols) } else { 1 };
            if pm.rows == w.rows && pm.cols == w.cols {
                if let Some(t) = rows_of(pm, out, xq, xs, per_row) {
                    // SAFETY: as above (packed only for a set this CPU runs, lengths
                    // checked just above).
                    unsafe {
                        match self.packed.kernels {
                            KernelSet::NeonDot => {
                                neon::matmul_sdot(out, xq, xs, pm, add, t, grouped)
                            }
                            KernelSet::Neon => neon::matmul_smull(out, xq, xs, pm, add, t, grouped),
                            _ => return false,
                        }
                    }
                    hit();
                    return true;
                }
            }
        }
        let _ = (layer, which, grouped, out, xq, xs, w, add);
        false
    }

    /// The number of rows of `cols` values (a multiple of `unit`) in `len` values, when
    /// they divide exactly.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn rows(len: usize, cols: usize, unit: usize) -> Option<usize> {
        (cols > 0 && cols.is_multiple_of(unit) && len.is_multiple_of(cols)).then(|| len / cols)
    }

    /// Lanes of the set's f32 vectors (0 for the portable set).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn lanes(&self) -> usize {
        match self.packed.kernels {
            KernelSet::Portable => 0,
            KernelSet::Avx2 | KernelSet::AvxVnni => 8,
            KernelSet::Avx512 => 16,
            KernelSet::Neon | KernelSet::NeonDot => 0,
        }
    }
}

impl Ops for FastOps<'_> {
    #[inline(always)]
    fn norm_quant(
        &mut self,
        x: &[f32],
        cols: usize,
        gain: &[u8],
        tmp: &mut [f32],
        q: &mut [i8],
        s: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.lanes() > 0
            && Self::rows(x.len(), cols, self.lanes()).is_some_and(|t| {
                gain.len() == cols * 4 && tmp.len() >= x.len() && q.len() >= x.len() && s.len() >= t
            })
        {
            // SAFETY: the set runs on this CPU (checked at packing); lengths checked just
            // above, rows a multiple of the set's lanes.
            unsafe {
                if self.packed.kernels == KernelSet::Avx512 {
                    avx512::norm_quant(x, cols, gain, tmp, q, s);
                } else {
                    avx2::norm_quant(x, cols, gain, tmp, q, s);
                }
            }
            hit();
            return;
        }
        ck::Portable.norm_quant(x, cols, gain, tmp, q, s);
    }

    #[inline(always)]
    fn quantize(&mut self, x: &[f32], cols: usize, q: &mut [i8], s: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.lanes() > 0
            && Self::rows(x.len(), cols, self.lanes())
                .is_some_and(|t| q.len() >= x.len() && s.len() >= t)
        {
            // SAFETY: as above.
            unsafe {
                if self.packed.kernels == KernelSet::Avx512 {
                    avx512::quantize(x, cols, q, s);
                } else {
                    avx2::quantize(x, cols, q, s);
                }
            }
            hit();
            return;
        }
        ck::Portable.quantize(x, cols, q, s);
    }

    #[inline(always)]
    fn gelu_quant(&mut self, h: &mut [f32], cols: usize, q: &mut [i8], s: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.lanes() > 0
            && Self::rows(h.len(), cols, ck::GROUP)
                .is_some_and(|_| q.len() >= h.len() && s.len() >= h.len() / ck::GROUP)
        {
            // SAFETY: as above (rows are whole groups of 32).
            unsafe {
                if self.packed.kernels == KernelSet::Avx512 {
                    avx512::gelu_quant(h, q, s);
                } else {
                    avx2::gelu_quant(h, q, s);
                }
            }
            hit();
            return;
        }
        ck::Portable.gelu_quant(h, cols, q, s);
    }

    #[inline(always)]
    fn matmul(
        &mut self,
        layer: usize,
        which: Mat,
        out: &mut [f32],
        xq: &[i8],
        xs: &[f32],
        w: &QMat<'_>,
        add: bool,
    ) {
        if !self.product((layer, which, false), out, xq, xs, w, add) {
            ck::matmul_q(out, xq, xs, w, add);
        }
    }

    #[inline(always)]
    fn matmul_grouped(
        &mut self,
        layer: usize,
        out: &mut [f32],
        xq: &[i8],
        xs: &[f32],
        w: &QMat<'_>,
        add: bool,
    ) {
        if !self.product((layer, Mat::MlpProj, true), out, xq, xs, w, add) {
            ck::matmul_qg(out, xq, xs, w, add);
        }
    }

    #[inline(always)]
    fn attention(&mut self, out: &mut [f32], a: &AttnArgs<'_>, work: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.lanes() > 0 {
            let (d, hd) = (a.width, a.head_dim);
            let head_ok = match self.packed.kernels {
                KernelSet::Avx512 => hd.is_multiple_of(16) && hd <= 16 * avx512::MAX_HV,
                _ => hd.is_multiple_of(8),
            };
            let ok = d > 0
                && hd > 0
                && head_ok
                && d.is_multiple_of(hd)
                && out.len().is_multiple_of(d)
                && a.q.len() == out.len()
                && a.keys.len() == a.vals.len()
                && a.keys.len().is_multiple_of(d)
                && a.keys.len() / d == a.p0 + out.len() / d;
            if ok {
                // SAFETY: the set runs on this CPU (checked at packing); the shapes were
                // checked just above.
                unsafe {
                    if self.packed.kernels == KernelSet::Avx512 {
                        avx512::attention(out, a, &mut self.kt, &mut self.probs);
                    } else {
                        avx2::attention(out, a, &mut self.kt, &mut self.probs);
                    }
                }
                hit();
                return;
            }
        }
        ck::attention(out, a, work);
    }
}

#[cfg(test)]
mod tests;
