//! `igpt`: the host side of iGPT in Rust.
//!
//! Two types cover the common uses ([`api`]): [`Classifier`] runs an int8 model file on
//! images, [`Pretrained`] opens an f32 checkpoint for features and samples.
//!
//! ```
//! # fn main() -> anyhow::Result<()> {
//! # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/fm-ar-6x192.igpt");
//! # let image = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/photos/chelsea.png");
//! let class = igpt::Classifier::open(model)?.classify_path(image)?;
//! println!("{} (p = {:.2})", class.label, class.probability());
//! # Ok(())
//! # }
//! ```
//!
//! The modules, in the order of the pipeline:
//!
//! - [`api`]: [`Classifier`] and [`Pretrained`].
//! - [`data`]: dataset loaders (CIFAR-10, IDX, image folders), area resize, k-means
//!   palettes ([`data::palette`]) and the one tokenization path ([`data::tokenize`]:
//!   an image file or a split to palette tokens, and the model's input ids).
//! - [`nn`]: the float model on dfdx: the typed parameter struct ([`nn::GptParams`]),
//!   the forward pass with its reference twins, the fused CPU kernels, the KV-cached
//!   forward, the device choice. Imports nothing from the rest of the crate.
//! - [`io`]: files: atomic writes and the output-path guard, checkpoints
//!   ([`io::checkpoint`]), typed run metadata ([`io::meta`]), probe heads, HF import
//!   and export ([`io::hf`], [`io::hf_export`]), PNG plots.
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

pub mod api;
pub mod data;
pub mod demo;
pub mod eval;
pub mod int8;
pub mod io;
pub mod nn;
pub mod progress;
pub mod train;

pub use api::{Classification, Classifier, Pretrained};
