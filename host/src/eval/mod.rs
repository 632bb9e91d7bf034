//! Evaluating a model: linear probes on every layer's mean-pooled features ([`probe`],
//! solved by [`logistic`] regression), sampling and completing images ([`sample`]), and
//! the model on a device against the HF fixtures and the CPU reference path ([`parity`],
//! `igpt bench parity`), two classifiers on the same images ([`paired`]).

pub mod logistic;
pub mod paired;
pub mod parity;
pub mod probe;
pub mod sample;
pub mod scaling;
