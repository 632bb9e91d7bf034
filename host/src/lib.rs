//! `igpt`: the host side of iGPT in Rust (phase-1 layout).

pub mod data;
pub mod demo;
pub mod eval;
pub mod int8;
pub mod io;
pub mod nn;
pub mod progress;
pub mod train;
