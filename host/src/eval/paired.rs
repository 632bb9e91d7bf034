//! Comparing two classifiers on the same test images: McNemar's exact test. Two
//! accuracies on 500 or 2,000 images differ by chance by a point or more; what counts is
//! the images where exactly one of the two is right. Under the hypothesis that both are
//! equally good, each such image is a fair coin flip between them, so the count won by
//! the first is Binomial(n, 1/2), n the images where they differ.

/// McNemar's test of two classifiers on the same images.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct McNemar {
    /// Images only the first classifier gets right.
    pub only_first: usize,
    /// Images only the second classifier gets right.
    pub only_second: usize,
    /// Two-sided exact p-value: the chance of a split at least this uneven if both
    /// classifiers were equally accurate.
    pub p_value: f64,
}

impl McNemar {
    /// The test on per-image correctness of two classifiers (same images, same order;
    /// extra entries of the longer slice are ignored).
    pub fn of(first: &[bool], second: &[bool]) -> McNemar {
        let (mut only_first, mut only_second) = (0, 0);
        for (&a, &b) in first.iter().zip(second) {
            match (a, b) {
                (true, false) => only_first += 1,
                (false, true) => only_second += 1,
                _ => {}
            }
        }
        McNemar {
            only_first,
            only_second,
            p_value: two_sided_binomial_half(only_first.min(only_second), only_first + only_second),
        }
    }

    /// `p = 0.012 (31 vs 12 images)`, for a report line.
    pub fn describe(&self) -> String {
        format!(
            "McNemar p = {:.3} ({} vs {} images where only one is right)",
            self.p_value, self.only_first, self.only_second
        )
    }
}

/// `P(X <= k) + P(X >= n - k)` for X ~ Binomial(n, 1/2), capped at 1 (`k <= n / 2`),
/// summed in log space so that n in the tens of thousands does not underflow.
fn two_sided_binomial_half(k: usize, n: usize) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let ln_half_n = n as f64 * std::f64::consts::LN_2;
    // ln C(n, i), built up from ln C(n, 0) = 0.
    let mut ln_c = 0.0f64;
    let mut tail = 0.0f64;
    for i in 0..=k {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_c - ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_images_where_they_differ() {
        let a = [true, true, false, false, true];
        let b = [true, false, true, false, false];
        let t = McNemar::of(&a, &b);
        assert_eq!((t.only_first, t.only_second), (2, 1));
        // n = 3, k = 1: 2 * (1 + 3) / 8 = 1.0.
        assert_eq!(t.p_value, 1.0);
    }

    #[test]
    fn p_values_match_the_binomial() {
        // n = 10, k = 1: 2 * (1 + 10) / 1024.
        assert!((two_sided_binomial_half(1, 10) - 22.0 / 1024.0).abs() < 1e-12);
        // n = 20, k = 5: 2 * (1 + 20 + 190 + 1140 + 4845 + 15504) / 2^20.
        let exact = 2.0 * 21700.0 / 1048576.0;
        assert!((two_sided_binomial_half(5, 20) - exact).abs() < 1e-12);
        assert_eq!(two_sided_binomial_half(0, 0), 1.0);
        // Large n: a 1,000 vs 1,200 split is significant, 1,000 vs 1,010 is not.
        assert!(two_sided_binomial_half(1000, 2200) < 1e-4);
        assert!(two_sided_binomial_half(1000, 2010) > 0.5);
    }
}
