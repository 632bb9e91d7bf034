//! Data-parallel training: the ranks of an MPI job (`mpirun -np N igpt pretrain ...`)
//! each train on their rows of every global batch, and one allreduce per step sums their
//! gradients, so every rank takes the same AdamW step as a single process would on the
//! whole batch (up to the order of floating-point sums).
//!
//! - [`Collective`]: rank, size and the sums the loop needs. [`Single`] (one process,
//!   everything a no-op) is always compiled; `Mpi` (rsmpi over the system MPI) only
//!   with the `mpi` cargo feature.
//! - [`Shard`]: which rows of a global batch and which evaluation chunks a rank takes.
//! - [`HostGrads`]: a device's gradients copied into one flat host `f32` buffer and back
//!   (all parameters in canonical order): the CPU reads its buffers directly; CUDA stages
//!   them through host memory (dfdx 0.13 keeps its device buffers crate-private, so no
//!   NCCL on them).
//! - [`DataParallel`]: what the training loop holds: the collective, the staging buffer
//!   and the time spent in the allreduce.
//! - [`Fingerprint`]: FNV-1a over bytes, to check that every rank starts and ends with
//!   the same run (arguments, data, parameters).
//!
//! What this leaves out: overlapping the allreduce with the backward pass (the loop
//! reduces once, after `backward`), gradient compression, and model parallelism.

use crate::nn::{GptParams, Mat, Param};
use anyhow::{bail, Result};
use dfdx::prelude::*;
use std::ops::Range;
use std::time::Instant;

/// The ranks of a job and the sums between them. Every method is collective (every rank
/// calls it, in the same order) except `rank`, `size`, `local_size` and `abort`.
/// Communication errors are fatal to the whole job (MPI's default error handler aborts
/// every rank), so the sums return nothing.
pub trait Collective {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Ranks in the job.
    fn size(&self) -> usize;
    /// Ranks on this machine (for the default thread count).
    fn local_size(&self) -> usize {
        1
    }
    /// True on rank 0, the only rank that writes files and prints progress.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
    /// This rank's share of batches and evaluations.
    fn shard(&self) -> Shard {
        Shard {
            rank: self.rank(),
            size: self.size(),
        }
    }
    /// Element-wise sum of `buf` over the ranks, in place on every rank.
    fn allreduce_sum(&self, buf: &mut [f32]);
    /// Element-wise sum of `buf` over the ranks, in place on every rank.
    fn allreduce_sum_f64(&self, buf: &mut [f64]);
    /// Every rank's `mine` (all of one length), concatenated in rank order.
    fn all_gather_f64(&self, mine: &[f64]) -> Vec<f64>;
    /// Waits for every rank.
    fn barrier(&self);
    /// Ends every rank of the job with `code` (MPI_Abort); a single process just exits.
    fn abort(&self, code: i32) -> !;
    /// `"rank R of N"`, for messages.
    fn describe(&self) -> String {
        format!("rank {} of {}", self.rank(), self.size())
    }

    /// Checks that every rank holds the same `hash` of `what` (e.g. "the arguments");
    /// fails on every rank, naming the first rank that differs from rank 0.
    fn agree(&self, what: &str, hash: u64) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        // Two 32-bit halves: exact in f64.
        let all = self.all_gather_f64(&[(hash >> 32) as f64, (hash & 0xffff_ffff) as f64]);
        let of = |r: usize| ((all[2 * r] as u64) << 32) | all[2 * r + 1] as u64;
        for r in 1..self.size() {
            if of(r) != of(0) {
                bail!(
                    "{what} on rank {r} differ from rank 0's (fingerprint {:016x}, rank 0 {:016x}): launch every rank with the same arguments, data and checkpoint",
                    of(r),
                    of(0)
                );
            }
        }
        Ok(())
    }

    /// The element-wise sums over the ranks of per-rank rows: `mine` holds this rank's
    /// values (all ranks the same length); the result is `Σ_r mine_r` summed in rank
    /// order, so every rank gets the same bits whatever MPI's reduction order.
    fn sum_in_rank_order(&self, mine: &[f64]) -> Vec<f64> {
        if self.size() == 1 {
            return mine.to_vec();
        }
        let all = self.all_gather_f64(mine);
        let n = mine.len();
        (0..n)
            .map(|i| (1..self.size()).fold(all[i], |s, r| s + all[r * n + i]))
            .collect()
    }
}

/// One process: rank 0 of 1; every sum is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

/// The one [`Single`].
pub static SINGLE: Single = Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn allreduce_sum(&self, _buf: &mut [f32]) {}
    fn allreduce_sum_f64(&self, _buf: &mut [f64]) {}
    fn all_gather_f64(&self, mine: &[f64]) -> Vec<f64> {
        mine.to_vec()
    }
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// A rank's share: rows `range(b)` of every global batch of `b` and the evaluation
/// chunks it [`owns`](Shard::owns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This rank.
    pub rank: usize,
    /// Ranks.
    pub size: usize,
}

impl Shard {
    /// The whole batch: one process.
    pub const WHOLE: Shard = Shard { rank: 0, size: 1 };

    /// True for one process.
    pub fn is_whole(self) -> bool {
        self.size == 1
    }

    /// This rank's rows of a batch of `n`: contiguous blocks in rank order, the first
    /// `n % size` ranks one row more.
    pub fn range(self, n: usize) -> Range<usize> {
        let (q, r) = (n / self.size, n % self.size);
        let lo = self.rank * q + self.rank.min(r);
        lo..lo + q + usize::from(self.rank < r)
    }

    /// True when evaluation chunk `i` is this rank's (round robin).
    pub fn owns(self, i: usize) -> bool {
        i % self.size == self.rank
    }
}

/// A device whose gradients can be copied to and from one flat host buffer.
pub trait HostGrads: Storage<f32> {
    /// Appends the gradient of every parameter, in canonical order, to `buf`
    /// (zeros for a parameter without one).
    fn grads_to_host(
        params: &GptParams<Param<f32, Self>>,
        grads: &mut Gradients<f32, Self>,
        buf: &mut Vec<f32>,
    ) -> Result<()>;
    /// Overwrites the gradients from `buf` (the layout of [`HostGrads::grads_to_host`]).
    fn grads_from_host(
        params: &GptParams<Param<f32, Self>>,
        grads: &mut Gradients<f32, Self>,
        buf: &[f32],
    ) -> Result<()>;
}

impl HostGrads for Cpu {
    fn grads_to_host(
        params: &GptParams<Param<f32, Cpu>>,
        grads: &mut Gradients<f32, Cpu>,
        buf: &mut Vec<f32>,
    ) -> Result<()> {
        for (name, p) in params.iter() {
            let g = grads
                .get_or_alloc_mut(p)
                .map_err(|e| anyhow::anyhow!("gradient of {name}: {e:?}"))?;
            buf.extend_from_slice(g);
        }
        Ok(())
    }
    fn grads_from_host(
        params: &GptParams<Param<f32, Cpu>>,
        grads: &mut Gradients<f32, Cpu>,
        buf: &[f32],
    ) -> Result<()> {
        let mut at = 0;
        for (name, p) in params.iter() {
            let g = grads
                .get_or_alloc_mut(p)
                .map_err(|e| anyhow::anyhow!("gradient of {name}: {e:?}"))?;
            let n = g.len();
            anyhow::ensure!(at + n <= buf.len(), "gradient buffer too short at {name}");
            g.copy_from_slice(&buf[at..at + n]);
            at += n;
        }
        Ok(())
    }
}

/// CUDA: one device-to-host (and host-to-device) copy per parameter, through cudarc's
/// synchronous copies on dfdx's stream.
#[cfg(feature = "cuda")]
impl HostGrads for Cuda {
    fn grads_to_host(
        params: &GptParams<Param<f32, Cuda>>,
        grads: &mut Gradients<f32, Cuda>,
        buf: &mut Vec<f32>,
    ) -> Result<()> {
        for (name, p) in params.iter() {
            let g = grads
                .get_or_alloc_mut(p)
                .map_err(|e| anyhow::anyhow!("gradient of {name}: {}", cuda_error(&e)))?;
            let at = buf.len();
            buf.resize(at + p.shape().0 * p.shape().1, 0.0);
            g.device()
                .dtoh_sync_copy_into(&**g, &mut buf[at..])
                .map_err(|e| {
                    anyhow::anyhow!("gradient of {name} to host: driver error {:?}", e.0)
                })?;
        }
        Ok(())
    }
    fn grads_from_host(
        params: &GptParams<Param<f32, Cuda>>,
        grads: &mut Gradients<f32, Cuda>,
        buf: &[f32],
    ) -> Result<()> {
        let mut at = 0;
        for (name, p) in params.iter() {
            let g = grads
                .get_or_alloc_mut(p)
                .map_err(|e| anyhow::anyhow!("gradient of {name}: {}", cuda_error(&e)))?;
            let n = p.shape().0 * p.shape().1;
            anyhow::ensure!(at + n <= buf.len(), "gradient buffer too short at {name}");
            let dev = g.device();
            dev.htod_sync_copy_into(&buf[at..at + n], &mut **g)
                .map_err(|e| {
                    anyhow::anyhow!("gradient of {name} to the GPU: driver error {:?}", e.0)
                })?;
            at += n;
        }
        Ok(())
    }
}

/// A CUDA error by its code (cudarc 0.9's `Debug` of a driver error can panic).
#[cfg(feature = "cuda")]
fn cuda_error(e: &dfdx::tensor::CudaError) -> String {
    use dfdx::tensor::CudaError;
    match e {
        CudaError::Driver(d) => format!("driver error {:?}", d.0),
        CudaError::Blas(b) => format!("cuBLAS error {:?}", b.0),
        CudaError::Cpu(c) => format!("{c:?}"),
    }
}

type Stage<D> = (
    fn(&GptParams<Param<f32, D>>, &mut Gradients<f32, D>, &mut Vec<f32>) -> Result<()>,
    fn(&GptParams<Param<f32, D>>, &mut Gradients<f32, D>, &[f32]) -> Result<()>,
);

/// What the training loop holds for data parallelism: the collective, the flat gradient
/// buffer, and the time spent staging and reducing.
pub struct DataParallel<'a, D: Storage<f32>> {
    comm: &'a dyn Collective,
    stage: Option<Stage<D>>,
    buf: Vec<f32>,
    /// Seconds copying gradients to and from the host buffer.
    pub stage_s: f64,
    /// Seconds in the allreduce (waiting for the slowest rank included).
    pub reduce_s: f64,
}

impl<D: Storage<f32>> DataParallel<'static, D> {
    /// One process: no reduction.
    pub fn single() -> Self {
        DataParallel {
            comm: &SINGLE,
            stage: None,
            buf: Vec::new(),
            stage_s: 0.0,
            reduce_s: 0.0,
        }
    }
}

impl<'a, D: Storage<f32>> DataParallel<'a, D> {
    /// The ranks of `comm` (no reduction when it has one rank).
    pub fn new(comm: &'a dyn Collective) -> Self
    where
        D: HostGrads,
    {
        DataParallel {
            comm,
            stage: (comm.size() > 1).then_some((
                D::grads_to_host as fn(&_, &mut _, &mut _) -> _,
                D::grads_from_host as fn(&_, &mut _, &_) -> _,
            )),
            buf: Vec::new(),
            stage_s: 0.0,
            reduce_s: 0.0,
        }
    }

    /// The collective.
    pub fn comm(&self) -> &'a dyn Collective {
        self.comm
    }

    /// Sums every parameter's gradient over the ranks: one flat buffer, one allreduce.
    /// A no-op for one process.
    pub fn allreduce_grads(
        &mut self,
        params: &GptParams<Param<f32, D>>,
        grads: &mut Gradients<f32, D>,
    ) -> Result<()> {
        let Some((to_host, from_host)) = self.stage else {
            return Ok(());
        };
        let t = Instant::now();
        self.buf.clear();
        to_host(params, grads, &mut self.buf)?;
        let t1 = Instant::now();
        self.comm.allreduce_sum(&mut self.buf);
        let t2 = Instant::now();
        from_host(params, grads, &self.buf)?;
        self.stage_s += (t1 - t).as_secs_f64() + t2.elapsed().as_secs_f64();
        self.reduce_s += (t2 - t1).as_secs_f64();
        Ok(())
    }
}

/// FNV-1a, 64 bits: a fingerprint of bytes (not cryptographic; it tells ranks apart).
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    /// Adds bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }
    /// Adds f32 values by their bits (little-endian).
    pub fn f32s(&mut self, v: &[f32]) -> &mut Self {
        for x in v {
            self.bytes(&x.to_le_bytes());
        }
        self
    }
    /// Adds u16 values (little-endian).
    pub fn u16s(&mut self, v: &[u16]) -> &mut Self {
        for x in v {
            self.bytes(&x.to_le_bytes());
        }
        self
    }
    /// Adds a u64 (little-endian).
    pub fn u64(&mut self, x: u64) -> &mut Self {
        self.bytes(&x.to_le_bytes())
    }
    /// The hash.
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// What every rank checks before a data-parallel run starts: at least one image of
/// each batch per rank, and the same run everywhere: `args` (the run's arguments with
/// the paths blanked, since nodes may mount the data elsewhere), `--resume` and
/// `--stop-after`.
pub fn agree_on_run(
    comm: &dyn Collective,
    batch: usize,
    args: &impl serde::Serialize,
    resume: bool,
    stop_after: Option<u64>,
) -> Result<()> {
    anyhow::ensure!(
        batch >= comm.size(),
        "--batch {batch} is below the {} ranks: every rank needs at least one image of each batch",
        comm.size()
    );
    let mut h = Fingerprint::default();
    h.bytes(&serde_json::to_vec(args).unwrap_or_default())
        .bytes(&[resume as u8])
        .u64(stop_after.unwrap_or(u64::MAX));
    comm.agree(
        "the arguments (--resume and --stop-after included)",
        h.value(),
    )
}

/// The fingerprint of host-side parameters: their f32 bits in canonical order.
pub fn params_fingerprint(params: &GptParams<Mat>) -> u64 {
    let mut h = Fingerprint::default();
    for (_, m) in params.iter() {
        h.f32s(&m.data);
    }
    h.value()
}

/// The fingerprint of a model's parameters (copied to the host).
pub fn model_fingerprint<D: Device<f32>>(params: &GptParams<Param<f32, D>>) -> u64 {
    let mut h = Fingerprint::default();
    for (_, p) in params.iter() {
        h.f32s(&p.as_vec());
    }
    h.value()
}

/// The job this process belongs to: MPI's world in a build with the `mpi` feature
/// (a process started without `mpirun` is a world of one), else [`Single`].
pub fn world() -> Result<Box<dyn Collective>> {
    #[cfg(feature = "mpi")]
    {
        Ok(Box::new(Mpi::init()?))
    }
    #[cfg(not(feature = "mpi"))]
    {
        Ok(Box::new(Single))
    }
}

/// Runs `f` on every rank; on an error (or a panic) in a job of several ranks, prints
/// it as one line naming the rank and aborts the whole job, so no rank is left waiting
/// in a collective. A single process returns the error as usual.
pub fn or_abort<T>(comm: &dyn Collective, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let out = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(anyhow::anyhow!("panicked: {msg}"))
        }
    };
    match out {
        Err(e) if comm.size() > 1 => {
            crate::progress::message(format!(
                "error: {}: {}",
                comm.describe(),
                format!("{e:#}").replace('\n', " ")
            ));
            comm.abort(1)
        }
        r => r,
    }
}

#[cfg(feature = "mpi")]
pub use self::mpi_world::Mpi;

#[cfg(feature = "mpi")]
mod mpi_world {
    use super::Collective;
    use anyhow::Result;
    use mpi::collective::SystemOperation;
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::*;
    use std::cell::RefCell;

    /// MPI's world communicator (rsmpi over the system MPI). Only the main thread calls
    /// MPI (`MPI_THREAD_FUNNELED`); rayon's workers never do.
    pub struct Mpi {
        world: SimpleCommunicator,
        local_size: usize,
        scratch: RefCell<Vec<f32>>,
        scratch64: RefCell<Vec<f64>>,
        // Finalizes MPI when dropped: the last field, so it is dropped last.
        _universe: Universe,
    }

    impl Mpi {
        /// Initialises MPI (once per process).
        pub fn init() -> Result<Mpi> {
            let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
                .ok_or_else(|| anyhow::anyhow!("MPI was already initialised in this process"))?;
            let world = universe.world();
            let local_size = world.split_shared(world.rank()).size() as usize;
            Ok(Mpi {
                world,
                local_size,
                scratch: RefCell::new(Vec::new()),
                scratch64: RefCell::new(Vec::new()),
                _universe: universe,
            })
        }
    }

    impl Collective for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn size(&self) -> usize {
            self.world.size() as usize
        }
        fn local_size(&self) -> usize {
            self.local_size
        }
        fn allreduce_sum(&self, buf: &mut [f32]) {
            let mut send = self.scratch.borrow_mut();
            send.clear();
            send.extend_from_slice(buf);
            self.world
                .all_reduce_into(&send[..], buf, SystemOperation::sum());
        }
        fn allreduce_sum_f64(&self, buf: &mut [f64]) {
            let mut send = self.scratch64.borrow_mut();
            send.clear();
            send.extend_from_slice(buf);
            self.world
                .all_reduce_into(&send[..], buf, SystemOperation::sum());
        }
        fn all_gather_f64(&self, mine: &[f64]) -> Vec<f64> {
            let mut all = vec![0f64; mine.len() * self.size()];
            self.world.all_gather_into(mine, &mut all[..]);
            all
        }
        fn barrier(&self) {
            self.world.barrier();
        }
        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_a_batch_once_in_order() {
        for n in 1..20 {
            for size in 1..=n {
                let mut next = 0;
                for rank in 0..size {
                    let r = Shard { rank, size }.range(n);
                    assert_eq!(r.start, next, "n {n}, size {size}, rank {rank}");
                    assert!(!r.is_empty());
                    assert!(r.len() == n / size || r.len() == n / size + 1);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
        assert_eq!(Shard::WHOLE.range(7), 0..7);
        let owners: Vec<usize> = (0..7)
            .map(|i| {
                (0..3)
                    .find(|&r| Shard { rank: r, size: 3 }.owns(i))
                    .unwrap()
            })
            .collect();
        assert_eq!(owners, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn fnv1a_matches_its_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(Fingerprint::default().value(), 0xcbf29ce484222325);
        assert_eq!(
            Fingerprint::default().bytes(b"a").value(),
            0xaf63dc4c8601ec8c
        );
        assert_eq!(
            Fingerprint::default().bytes(b"foobar").value(),
            0x85944171f73967e8
        );
    }

    #[test]
    fn cpu_gradients_round_trip_through_the_host_buffer() {
        let dev = Cpu::default();
        let c = igpt_core::Config::new(4, 4, 8, 2, 1).unwrap();
        let gpt = crate::nn::Gpt::<f32, Cpu>::init(&dev, c, None, 0);
        let mut grads = Gradients::leaky();
        let mut buf = Vec::new();
        Cpu::grads_to_host(&gpt.params, &mut grads, &mut buf).unwrap();
        let n: usize = gpt
            .params
            .iter()
            .map(|(_, p)| p.shape().0 * p.shape().1)
            .sum();
        assert_eq!(buf.len(), n);
        assert!(buf.iter().all(|&g| g == 0.0));
        let vals: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
        Cpu::grads_from_host(&gpt.params, &mut grads, &vals).unwrap();
        assert_eq!(grads.get(&gpt.params.wte).as_vec()[..3], vals[..3]);
        let mut back = Vec::new();
        Cpu::grads_to_host(&gpt.params, &mut grads, &mut back).unwrap();
        assert_eq!(back, vals);
        assert!(Cpu::grads_from_host(&gpt.params, &mut grads, &vals[..n - 1]).is_err());
    }
}
