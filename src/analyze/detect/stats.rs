//! The statistics the detectors share: Wilson score intervals for shares, the normal
//! tail, and Benjamini–Hochberg control of the false discovery rate. Plain formulas, so
//! docs/analyzer.md can state them and a reader can check a finding by hand.

use crate::analyze::facts::round_to;
use crate::analyze::finding::RateInterval;

/// z of a two-sided 95 % interval.
pub const Z_95: f64 = 1.959_964;
/// Fewer attempts than this behind a share make it a small sample.
pub const SMALL_SAMPLE_ATTEMPTS: u64 = 30;
/// An interval wider than this (0–1) also makes it one, whatever the count.
pub const SMALL_SAMPLE_WIDTH: f64 = 0.2;

/// The Wilson score interval of `count` of `attempts` at 95 %: unlike the normal
/// approximation it stays inside 0–1 and is honest for 3 of 12.
pub fn wilson(count: u64, attempts: u64) -> (f64, f64) {
    if attempts == 0 {
        return (0.0, 1.0);
    }
    let n = attempts as f64;
    let p = count.min(attempts) as f64 / n;
    let z2 = Z_95 * Z_95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z_95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// A share with its Wilson interval, against the baseline share it is compared with.
pub fn interval(count: u64, attempts: u64, baseline: Option<f64>) -> RateInterval {
    let (low, high) = wilson(count, attempts);
    let (low, high) = (round_to(low, 4), round_to(high, 4));
    RateInterval {
        count,
        attempts,
        share: crate::analyze::facts::rate(count, attempts),
        low,
        high,
        baseline,
        small_sample: attempts < SMALL_SAMPLE_ATTEMPTS || high - low > SMALL_SAMPLE_WIDTH,
    }
}

/// P(Z > z) for a standard normal Z.
pub fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' erfcc, relative error below
/// 1.2e-7): enough for p-values compared with levels like 0.01.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// One-sided p-value that `count` of `attempts` exceed a share of `p0` (normal
/// approximation of the binomial with a continuity correction; `p0` floored so a
/// baseline that never failed does not make every failure infinitely significant).
pub fn binomial_excess_p(count: u64, attempts: u64, p0: f64) -> f64 {
    if attempts == 0 {
        return 1.0;
    }
    let p0 = p0.clamp(MIN_BASELINE_SHARE, 1.0 - MIN_BASELINE_SHARE);
    let n = attempts as f64;
    let expected = n * p0;
    let sd = (n * p0 * (1.0 - p0)).sqrt();
    upper_tail((count as f64 - 0.5 - expected) / sd)
}

/// The smallest baseline share a test assumes: one failure in a thousand.
pub const MIN_BASELINE_SHARE: f64 = 0.001;

/// Benjamini–Hochberg: which of the p-values are discoveries at false discovery rate
/// `q`. The i-th smallest p is compared with q·i/m; every p up to the largest that
/// passes is a discovery.
pub fn benjamini_hochberg(p_values: &[f64], q: f64) -> Vec<bool> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let passing = order
        .iter()
        .enumerate()
        .filter(|&(rank, &i)| p_values[i] <= q * (rank + 1) as f64 / m as f64)
        .map(|(rank, _)| rank + 1)
        .max()
        .unwrap_or(0);
    let mut discovered = vec![false; m];
    for &i in order.iter().take(passing) {
        discovered[i] = true;
    }
    discovered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_of_twelve_has_a_wide_interval_and_is_a_small_sample() {
        let (low, high) = wilson(3, 12);
        assert!((low - 0.0889).abs() < 1e-3, "{low}");
        assert!((high - 0.5323).abs() < 1e-3, "{high}");
        let i = interval(3, 12, Some(0.1));
        assert!(i.small_sample);
        assert!(i.compatible_with_baseline(), "0.1 lies inside {i:?}");
    }

    #[test]
    fn a_large_sample_is_narrow_and_all_or_nothing_stays_in_bounds() {
        let i = interval(300, 1200, Some(0.05));
        assert!(!i.small_sample && !i.compatible_with_baseline(), "{i:?}");
        assert!(wilson(0, 10).0.abs() < 1e-12);
        assert!((wilson(10, 10).1 - 1.0).abs() < 1e-12);
        assert!(wilson(10, 10).0 > 0.69);
    }

    #[test]
    fn the_normal_tail_matches_its_table() {
        assert!((upper_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((upper_tail(1.959_964) - 0.025).abs() < 1e-6);
        assert!((upper_tail(-1.644_854) - 0.95).abs() < 1e-6);
        assert!((upper_tail(3.090_232) - 0.001).abs() < 1e-6);
    }

    #[test]
    fn an_excess_of_failures_is_significant_and_noise_is_not() {
        assert!(binomial_excess_p(30, 100, 0.05) < 1e-6);
        assert!(binomial_excess_p(6, 100, 0.05) > 0.2);
        assert_eq!(binomial_excess_p(0, 0, 0.05), 1.0);
    }

    #[test]
    fn benjamini_hochberg_keeps_the_step_up_discoveries() {
        // m = 5, q = 0.05: thresholds 0.01, 0.02, 0.03, 0.04, 0.05; the third smallest
        // (0.029) passes, so the two below it are discoveries too, 0.2 is not.
        let found = benjamini_hochberg(&[0.2, 0.029, 0.015, 0.012, 0.6], 0.05);
        assert_eq!(found, [false, true, true, true, false]);
        assert!(benjamini_hochberg(&[], 0.05).is_empty());
    }
}
