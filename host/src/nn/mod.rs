//! The float iGPT on dfdx (temporary phase-1 layout).
pub mod device;
pub mod kernels;
pub mod model;
pub use model::*;
