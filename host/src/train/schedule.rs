//! The learning-rate schedule: linear warmup, then cosine decay to zero (pretraining) or
//! a constant rate (the paper's fine-tuning: no decay, early stopping instead).

pub use crate::io::meta::Schedule;

/// Linear warmup from 0 over `warmup` steps, then cosine decay to 0 at `total`.
/// `step` counts from 0 (the learning rate of the step about to be taken).
pub fn lr_at(step: u64, base: f64, warmup: u64, total: u64) -> f64 {
    lr_with(Schedule::Cosine, step, base, warmup, total)
}

/// [`lr_at`] with the decay `schedule` chooses.
pub fn lr_with(schedule: Schedule, step: u64, base: f64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    if schedule == Schedule::Constant {
        return base;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let p = ((step - warmup) as f64 / span).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule() {
        assert_eq!(lr_at(0, 1.0, 10, 100), 0.1);
        assert_eq!(lr_at(9, 1.0, 10, 100), 1.0);
        assert!((lr_at(10, 1.0, 10, 100) - 1.0).abs() < 1e-12);
        assert!((lr_at(55, 1.0, 10, 100) - 0.5).abs() < 1e-12);
        assert!(lr_at(100, 1.0, 10, 100).abs() < 1e-12);
        assert_eq!(
            lr_at(5, 1.0, 0, 10),
            0.5 * (1.0 + (std::f64::consts::PI * 0.5).cos())
        );
        assert_eq!(lr_with(Schedule::Constant, 0, 2.0, 4, 100), 0.5);
        assert_eq!(lr_with(Schedule::Constant, 4, 2.0, 4, 100), 2.0);
        assert_eq!(lr_with(Schedule::Constant, 99, 2.0, 4, 100), 2.0);
        assert!(lr_with(Schedule::Cosine, 99, 2.0, 4, 100) < 0.01);
    }
}
