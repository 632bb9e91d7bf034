//! The `igpt` command line, one file per command family: its arguments (clap), the call
//! into the library, and what it prints. Only this part of the host prints results to
//! the terminal; the library reports progress through [`igpt::progress`].

pub mod args;
pub mod bench;
pub mod data;
pub mod demo;
pub mod eval;
pub mod hf;
pub mod int8;
pub mod palette;
pub mod train;
