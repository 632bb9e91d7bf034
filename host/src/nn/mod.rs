//! The float iGPT on dfdx: the model's parameters ([`params`]), its forward pass and the
//! reference twins of every building block ([`model`]), the fused CPU kernels registered
//! on dfdx's tape ([`kernels`]), the KV-cached forward for sampling ([`kv`]), and where
//! the model runs ([`device`]).
//!
//! `nn` imports nothing from the rest of the crate: data, training, evaluation, the int8
//! side and the file formats all build on it.

pub mod device;
pub mod kernels;
pub mod kv;
pub mod memory;
pub mod model;
pub mod params;

pub use model::*;
pub use params::{BlockParams, BlockTensor, GptParams, Init, Mat, ParamName};
