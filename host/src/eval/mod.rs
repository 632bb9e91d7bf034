//! Evaluating a model: linear probes on every layer's mean-pooled features ([`probe`]),
//! sampling and completing images ([`sample`]), and the model on a device against the HF
//! fixtures and the CPU reference path ([`parity`], `igpt bench parity`).

pub mod parity;
pub mod probe;
pub mod sample;
