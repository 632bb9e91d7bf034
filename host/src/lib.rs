//! `igpt`: the host side of iGPT in Rust, in the order of the pipeline.
//!
//! - [`data`]: dataset loaders (CIFAR-10, IDX, image folders), area resize, k-means
//!   palettes ([`data::palette`]) and the one tokenization path ([`data::tokenize`]:
//!   an image file or a split to palette tokens, and the model's input ids).
//! - [`nn`]: the float model on dfdx: the typed parameter struct ([`nn::GptParams`]),
//!   the forward pass with its reference twins, the fused CPU kernels, the KV-cached
//!   forward, the device choice. Imports nothing from the rest of the crate.
//! - [`io`]: files: atomic writes and the output-path guard, checkpoints
//!   ([`io::checkpoint`]), typed run metadata ([`io::meta`]), probe heads, HF import,
//!   PNG plots.
//! - [`train`]: batches and losses, AdamW, the schedule, the one training loop
//!   ([`train::trainer`]) and its tasks, pretraining and fine-tuning.
//! - [`eval`]: linear probes, sampling and completion, the parity check.
//! - [`int8`]: the int8 export, running igpt-core's forward on the host (classify, eval,
//!   bench, firmware vectors) and the host's vector kernels for it.
//! - [`demo`]: `igpt demo`, the whole pipeline on the embedded Fashion-MNIST subset.
//! - [`progress`]: progress bars and status lines, the library's only terminal output.
//!
//! The `igpt` binary (`src/main.rs` and `src/cli/`) parses arguments, calls into these
//! modules and prints results.

pub mod data;
pub mod demo;
pub mod eval;
pub mod int8;
pub mod io;
pub mod nn;
pub mod progress;
pub mod train;
