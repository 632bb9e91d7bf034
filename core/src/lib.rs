//! `igpt-core`: the `no_std` heart of iGPT in Rust.
//!
//! This crate holds what both the training host and a microcontroller need:
//!
//! - [`Config`]: the model's shape (palette size, image side, width, heads, depth) with the
//!   paper's presets and the small ones this project trains on a CPU or runs in firmware;
//!   parameter, compute and size accounting.
//! - [`Palette`]: up to 512 colours (1 grey or 3 RGB channels) and the exact integer
//!   nearest-colour tokenizer that turns an image at model resolution into tokens.
//! - [`crc32`]: the checksum the project's files carry.
//!
//! Token convention (HuggingFace ImageGPT's): ids `0..k` are palette colours, id `k` is the
//! start-of-sequence token (SOS). The model input for an image of `n` pixels is
//! `[SOS, x0, .., x(n-2)]` and output `i` predicts `x_i` (see [`Palette::model_input`]).
//!
//! Nothing here allocates or panics on any input: every fallible call returns [`Error`].
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod crc;
pub mod error;
pub mod format;
pub mod kernels;
pub mod model;
pub mod palette;
pub mod quant;
pub mod state;
pub mod vectors;
pub mod weights;

pub use config::{Config, Preset};
pub use crc::crc32;
pub use error::{Error, Result};
pub use model::{Model, Prediction};
pub use palette::Palette;
pub use state::{kv_f32_len, scratch_f32_len, scratch_i8_len, KvCache, Scratch};
