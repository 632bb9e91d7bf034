//! Shared body of the fuzz targets: parse, then run the forward entry points.

use igpt_core::{scratch_f32_len, scratch_i8_len, Model, Scratch};

/// Skip the forward pass for configs larger than this (`seq_len · width`), to keep
/// iterations fast.
const MAX_FORWARD: usize = 1 << 16;

/// `Model::parse(data)`; when it succeeds, `classify` (and `logits` for a model with a
/// head) on an all-zero image. Errors are fine; any panic is a bug.
pub fn parse_and_run(data: &[u8]) {
    let Ok(model) = Model::parse(data) else {
        return;
    };
    let config = model.config();
    let n = config.seq_len();
    if n.saturating_mul(config.width) > MAX_FORWARD {
        return;
    }
    let image = vec![0u16; n];
    let mut f = vec![0f32; scratch_f32_len(config)];
    let mut q = vec![0i8; scratch_i8_len(config)];
    let Ok(mut s) = Scratch::new(config, &mut f, &mut q) else {
        return;
    };
    let _ = model.classify(&image, &mut s);
    if model.has_head() {
        let mut out = vec![0f32; n.saturating_mul(config.vocab)];
        let _ = model.logits(&image, &mut s, &mut out);
    }
}
