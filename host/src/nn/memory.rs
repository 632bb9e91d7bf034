//! Estimates of what a model needs in memory, checked before allocating so that an
//! oversized shape or batch is one error line instead of an allocation abort.
//! Deliberately generous (a factor of about 1.5 over what a run was seen to use).

use igpt_core::Config;

/// Bytes of the f32 weights.
pub fn weight_bytes(c: &Config) -> u64 {
    4 * c.param_count()
}

/// Bytes of one training step at `batch` images: weights, gradients and AdamW's two
/// moments, plus the activations the tape keeps (per block about 30 floats per position
/// per width unit, the 4d MLP included) and the attention probabilities.
pub fn training_bytes(c: &Config, batch: usize) -> u64 {
    let (b, n, d, l) = (
        batch as u64,
        c.seq_len() as u64,
        c.width as u64,
        c.layers as u64,
    );
    let h = c.heads as u64;
    let params = 4 * weight_bytes(c);
    let activations = 4 * b * n * (30 * d * l + 3 * c.vocab as u64);
    let attention = 4 * 3 * b * h * n * n * l;
    params + activations + attention
}

/// Bytes of a forward pass without gradients at `batch` images (features, evaluation).
pub fn inference_bytes(c: &Config, batch: usize) -> u64 {
    let (b, n, d) = (batch as u64, c.seq_len() as u64, c.width as u64);
    weight_bytes(c) + 4 * b * n * (12 * d + c.vocab as u64) + 4 * 2 * b * c.heads as u64 * n * n
}

/// Bytes of the KV cache for `batch` sequences.
pub fn kv_bytes(c: &Config, batch: usize) -> u64 {
    2 * 4 * c.layers as u64 * batch as u64 * c.seq_len() as u64 * c.width as u64
}
