//! The int8 side on the host: writing model files for igpt-core ([`export`]), running
//! the core's forward here for `classify`, `eval`, `bench infer` and the firmware test
//! vectors ([`run`]), and the host's vector kernels behind the core's `Ops` hook
//! ([`kernels`]).

pub mod export;
pub mod kernels;
pub mod run;
