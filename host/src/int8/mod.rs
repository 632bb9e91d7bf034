//! The int8 side on the host: writing model files for igpt-core ([`export`]), running
//! the core's forward here for `classify`, `eval`, `bench infer` and the firmware test
//! vectors ([`run`]), and the host's vector kernels behind the core's `Ops` hook
//! ([`kernels`]: the `igpt-kernels` crate in `host/kernels/`, which depends on igpt-core
//! alone so that its tests run for aarch64 under emulation).

pub mod export;
pub mod run;
pub use igpt_kernels as kernels;
