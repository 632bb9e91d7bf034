//! Training (temporary phase-1 layout).
pub mod batch;
pub mod finetune;
pub mod pretrain;
pub use batch::*;
