//! Where the dfdx model runs: `--device cpu|cuda`.
//!
//! The model, training, probe and benchmark code is generic over the device
//! (`D: ModelDevice`); [`on_device!`](crate::on_device) picks the device at run time. The
//! CPU keeps its fused kernels (`impl Kernels<f32> for Cpu` in `model.rs`); dfdx's `Cuda`
//! runs the plain dfdx compositions (the trait's default methods), built only with the
//! `cuda` cargo feature. Without it, `--device cuda` is one error line ([`NO_CUDA`]).

use crate::nn::Kernels;
use anyhow::Result;
pub use dfdx::prelude::Cpu;
use dfdx::prelude::Synchronize;

/// The device a command runs its dfdx model on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceKind {
    /// The host CPU, with the fused f32 kernels.
    #[default]
    Cpu,
    /// dfdx's CUDA device 0 (needs a build with `--features cuda`).
    Cuda,
}

impl DeviceKind {
    /// Its `--device` name.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }

    /// Fails at once with [`NO_CUDA`] for `cuda` in a build without the feature, so a
    /// command refuses before it reads its inputs.
    pub fn check(self) -> Result<()> {
        if self == DeviceKind::Cuda && !cfg!(feature = "cuda") {
            anyhow::bail!(NO_CUDA);
        }
        Ok(())
    }
}

/// The error of `--device cuda` in a build without the `cuda` feature.
pub const NO_CUDA: &str =
    "this igpt was built without the cuda feature: cargo build --release -p igpt --features cuda";

/// What the model code needs of a device: the model's kernels in f32 and a way to wait
/// for queued work (for timing).
pub trait ModelDevice: Kernels<f32> + Synchronize {}
impl<D: Kernels<f32> + Synchronize> ModelDevice for D {}

/// `on_device!(kind, seed, |dev| body)`: runs `body` (a `Result`) with `dev` bound to the
/// device `kind` names: `Cpu::seed_from_u64(seed)`, or CUDA device 0 through
/// [`run_cuda`]. `body` is compiled for both device types, so it must be generic code.
#[macro_export]
macro_rules! on_device {
    ($kind:expr, $seed:expr, |$dev:ident| $body:expr) => {
        match $kind {
            $crate::nn::device::DeviceKind::Cpu => {
                let $dev = $crate::nn::device::Cpu::seed_from_u64($seed);
                $body
            }
            $crate::nn::device::DeviceKind::Cuda => {
                $crate::nn::device::run_cuda($seed, |$dev| $body)
            }
        }
    };
}

/// Without the `cuda` feature: the [`NO_CUDA`] error (the closure is never called; it
/// takes a `Cpu` only so that generic bodies type-check).
#[cfg(not(feature = "cuda"))]
pub fn run_cuda<T>(seed: u64, f: impl FnOnce(Cpu) -> Result<T>) -> Result<T> {
    let _ = (seed, f);
    anyhow::bail!(NO_CUDA)
}

/// Creates CUDA device 0 (seeded) and runs `f` on it. A device that fails to start is
/// one error line with a diagnosis; a panic inside dfdx or cudarc (out of GPU memory, an
/// NVRTC compile failure, a driver error: dfdx's infallible ops unwrap) becomes an error
/// line too, with the panic's message and location.
#[cfg(feature = "cuda")]
pub fn run_cuda<T>(seed: u64, f: impl FnOnce(dfdx::prelude::Cuda) -> Result<T>) -> Result<T> {
    let dev = catch_panics(|| {
        dfdx::prelude::Cuda::try_seed_from_u64(seed).map_err(|e| {
            anyhow::anyhow!(
                "cannot initialise CUDA device 0: {}. {}",
                describe(&e),
                cuda_diagnosis()
            )
        })
    })?;
    catch_panics(|| f(dev)).map_err(|e| e.context("CUDA run failed"))
}

/// A CUDA error by its code alone: cudarc 0.9's `Debug` for a driver error asks the
/// driver for its string and panics when that fails.
#[cfg(feature = "cuda")]
fn describe(e: &dfdx::tensor::CudaError) -> String {
    use dfdx::tensor::CudaError;
    match e {
        CudaError::Driver(d) => format!("driver error {:?}", d.0),
        CudaError::Blas(b) => format!("cuBLAS error {:?}", b.0),
        CudaError::Cpu(c) => format!("{c:?}"),
    }
}

/// What to look at when CUDA does not start (one line).
#[cfg(feature = "cuda")]
pub fn cuda_diagnosis() -> String {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into());
    format!(
        "This binary uses cudarc 0.9 (CUDA 11.8 driver-API bindings, linked to libcuda.so.1, \
         libnvrtc, libcublas, libcublasLt); check that nvidia-smi sees a GPU, that the driver \
         supports the toolkit the binary was linked against, and CUDA_VISIBLE_DEVICES \
         (now {visible}); bench/gpu-check.sh prints the libraries found"
    )
}

/// Runs `f`, turning a panic into an error that carries its message and location. The
/// default panic hook is silenced meanwhile (the error is printed once, by `main`).
pub fn catch_panics<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<String>> = Arc::default();
    let hook = std::panic::take_hook();
    {
        let seen = seen.clone();
        std::panic::set_hook(Box::new(move |info| {
            let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                s.to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "panic".to_string()
            };
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            if let Ok(mut s) = seen.lock() {
                *s = format!("{msg}{at}");
            }
        }));
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    match r {
        Ok(v) => v,
        Err(_) => {
            let msg = seen.lock().map(|s| s.clone()).unwrap_or_default();
            Err(anyhow::anyhow!(
                "panicked: {}",
                msg.replace('\n', " ").trim()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors() {
        let r: Result<()> = catch_panics(|| panic!("boom {}", 1));
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("boom 1") && e.contains("device.rs"), "{e}");
        assert_eq!(catch_panics(|| Ok(3)).unwrap(), 3);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_one_error_line() {
        let r: Result<usize> = crate::on_device!(DeviceKind::Cuda, 0, |dev| {
            let _ = dev;
            Ok(1)
        });
        assert_eq!(r.unwrap_err().to_string(), NO_CUDA);
        let r: Result<usize> = crate::on_device!(DeviceKind::Cpu, 0, |dev| {
            let _ = dev;
            Ok(1)
        });
        assert_eq!(r.unwrap(), 1);
    }
}
