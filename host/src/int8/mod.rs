//! int8 (temporary phase-1 layout).
pub mod export;
pub mod kernels;
pub mod run;
