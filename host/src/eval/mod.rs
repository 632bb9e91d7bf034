//! Evaluation (temporary phase-1 layout).
pub mod logistic;
pub mod parity;
pub mod probe;
pub mod sample;
