//! `igpt`: the host side of iGPT in Rust.
//!
//! - [`data`]: CIFAR-10, IDX (MNIST, Fashion-MNIST) and image-folder loaders, area resize.
//! - [`palette`]: k-means palette fitting, OpenAI `.npy` import, palette files, swatches.
//! - [`model_args`]: the model-shape flags shared by every subcommand that builds a model.
//! - [`demo`]: `igpt demo`, the whole pipeline on an embedded Fashion-MNIST subset.
//! - [`export`]: int8 model files (`igpt export`); [`int8`]: running them with igpt-core.
//! - [`device`]: `--device cpu|cuda`; [`bench`](mod@bench): the parity check and training-speed
//!   accounting.
//! - [`io`]: atomic file writes and PNG output; [`progress`]: progress bars.
//!
//! The `igpt` binary (`src/main.rs`) only parses arguments and calls into these modules.

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod demo;
pub mod device;
pub mod export;
pub mod finetune;
pub mod hf;
pub mod int8;
pub mod int8_kernels;
pub mod io;
pub mod kernels;
pub mod model;
pub mod model_args;
pub mod palette;
pub mod plot;
pub mod pretrain;
pub mod probe;
pub mod progress;
pub mod sample;
pub mod train;
