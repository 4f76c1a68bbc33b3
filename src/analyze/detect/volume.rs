//! Comparisons with the baseline per source and endpoint: volume, failure share, latency.

use std::collections::BTreeSet;

use super::stats::interval;
use super::{Dimension, Draft, capped, confidence, num, ratio, subject_of};
use crate::analyze::facts::{BaselineVolume, Breakdown, DayFacts, round_to};
use crate::analyze::finding::{Finding, FindingKind, Severity, Subject};
use crate::config::DetectorSettings;

/// Standard errors a failure-share rise must also exceed, so small samples do not fire.
const RISE_STANDARD_ERRORS: f64 = 3.0;

fn today_and_baseline(facts: &DayFacts, dimension: Dimension) -> (&[Breakdown], &[BaselineVolume]) {
    match dimension {
        Dimension::Endpoint => (&facts.by_endpoint, &facts.baseline.by_endpoint),
        _ => (&facts.by_source, &facts.baseline.by_source),
    }
}

/// Sources that must have a baseline of at least `min_attempts` for their median to
/// set the day's level.
const MIN_LEVEL_SOURCES: usize = 3;

/// VolumeDrop / VolumeSpike per source and endpoint against the baseline mean, scaled to
/// the elapsed part of the day and to the day's level ([`day_level`]); and over all
/// sources together when the level itself dropped or spiked.
pub(super) fn volume_changes(facts: &DayFacts, t: &DetectorSettings) -> Vec<Finding> {
    let level = day_level(facts, t);
    let mut found: Vec<Finding> = [Dimension::Source, Dimension::Endpoint]
        .into_iter()
        .flat_map(|dimension| {
            let (today, baseline) = today_and_baseline(facts, dimension);
            let names: BTreeSet<&String> = today
                .iter()
                .map(|b| &b.name)
                .chain(baseline.iter().map(|b| &b.name))
                .filter(|n| !n.is_empty())
                .collect();
            names
                .into_iter()
                .filter_map(|name| {
                    let attempts = today
                        .iter()
                        .find(|b| &b.name == name)
                        .map_or(0, |b| b.attempts);
                    let base = baseline.iter().find(|b| &b.name == name)?;
                    let expected =
                        base.mean_attempts_per_day * facts.elapsed_fraction() * level.ratio;
                    volume_change(
                        facts,
                        t,
                        Some((dimension, name)),
                        attempts,
                        expected,
                        base.mean_attempts_per_day,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // The day as a whole: when the median source moved, and the total with it.
    let (drop_below, spike_above) = volume_bounds(t);
    if level.sources >= MIN_LEVEL_SOURCES && (level.ratio < drop_below || level.ratio > spike_above)
    {
        let attempts = facts.by_source.iter().map(|b| b.attempts).sum();
        let mean: f64 = facts
            .baseline
            .by_source
            .iter()
            .map(|b| b.mean_attempts_per_day)
            .sum();
        found.extend(volume_change(
            facts,
            t,
            None,
            attempts,
            mean * facts.elapsed_fraction(),
            mean,
        ));
    }
    found
}

/// The ratios to the expected volume below which it dropped and above which it spiked.
fn volume_bounds(t: &DetectorSettings) -> (f64, f64) {
    (
        1.0 - t.volume_change_ratio,
        (1.0 + t.volume_change_ratio) * 2.0,
    )
}

/// Where the day's traffic stands against the baseline as a whole.
pub(super) struct DayLevel {
    /// The median of today's attempts over the expected ones, per source.
    pub(super) ratio: f64,
    /// The sources it was taken over (0: too few, and the ratio is 1).
    pub(super) sources: usize,
}

/// The day's level: the median, over the sources whose baseline expects at least
/// `min_attempts` by now, of their attempts over the expected. A weekend, a holiday or a
/// campaign moves every source together — a baseline of mostly weekdays expects twice a
/// Sunday's traffic of every source — while one source's problem moves that source: a
/// source or endpoint is judged against the baseline at the day's level, so a Sunday is
/// not a drop of everything (the day as a whole is judged by its level). With fewer
/// than [`MIN_LEVEL_SOURCES`] such sources the median says little, and the level is 1.
pub(super) fn day_level(facts: &DayFacts, t: &DetectorSettings) -> DayLevel {
    let mut ratios: Vec<f64> = facts
        .baseline
        .by_source
        .iter()
        .filter(|b| !b.name.is_empty())
        .filter_map(|b| {
            let expected = b.mean_attempts_per_day * facts.elapsed_fraction();
            (expected >= t.min_attempts as f64).then(|| {
                let today = facts
                    .by_source
                    .iter()
                    .find(|s| s.name == b.name)
                    .map_or(0, |s| s.attempts);
                today as f64 / expected
            })
        })
        .collect();
    if ratios.len() < MIN_LEVEL_SOURCES {
        return DayLevel {
            ratio: 1.0,
            sources: 0,
        };
    }
    ratios.sort_by(f64::total_cmp);
    let middle = ratios.len() / 2;
    let ratio = if ratios.len().is_multiple_of(2) {
        (ratios[middle - 1] + ratios[middle]) / 2.0
    } else {
        ratios[middle]
    };
    DayLevel {
        ratio,
        sources: ratios.len(),
    }
}

/// `scope` is a source or an endpoint, or all sources together (None).
fn volume_change(
    facts: &DayFacts,
    t: &DetectorSettings,
    scope: Option<(Dimension, &str)>,
    attempts: u64,
    expected: f64,
    baseline_mean_per_day: f64,
) -> Option<Finding> {
    let expected = round_to(expected, 2);
    if expected < t.min_attempts as f64 {
        return None;
    }
    let today = attempts as f64;
    let change = ratio(today, expected);
    let (drop_below, spike_above) = volume_bounds(t);
    let (kind, severity, word) = if today < expected * drop_below {
        let strong = change <= drop_below / 2.0;
        let severity = if strong {
            Severity::High
        } else {
            Severity::Medium
        };
        (FindingKind::VolumeDrop, capped(severity, facts), "fewer")
    } else if today > expected * spike_above {
        (FindingKind::VolumeSpike, Severity::Medium, "more")
    } else {
        return None;
    };
    let (subject, label) = match scope {
        Some((dimension, name)) => (
            subject_of(dimension, name),
            format!("{} {name}", dimension.as_str()),
        ),
        None => (Subject::default(), "all sources together".to_owned()),
    };
    Some(
        Draft {
            kind,
            subject,
            severity,
            confidence: confidence(expected, 4.0 * t.min_attempts as f64, Some(facts.baseline.days_with_data)),
            summary: format!(
                "{label} had {} attempts, {word} than the {} expected from the baseline (ratio {}).",
                num(today),
                num(expected),
                num(change)
            ),
            evidence: vec![
                ("attempts", today),
                ("expected_attempts", expected),
                ("baseline_mean_per_day", baseline_mean_per_day),
                ("ratio", change),
            ],
            window: None,
            interval: None,
        }
        .build(),
    )
}

/// FailureRateRise per source and endpoint: the failure share is `failure_rate_rise`
/// above the baseline's and beyond sampling noise.
pub(super) fn failure_rate_rises(facts: &DayFacts, t: &DetectorSettings) -> Vec<Finding> {
    [Dimension::Source, Dimension::Endpoint]
        .into_iter()
        .flat_map(|dimension| {
            let (today, baseline) = today_and_baseline(facts, dimension);
            today
                .iter()
                .filter(|b| !b.name.is_empty())
                .filter_map(|b| {
                    let base = baseline.iter().find(|v| v.name == b.name)?;
                    failure_rate_rise(facts, t, dimension, b, base)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn failure_rate_rise(
    facts: &DayFacts,
    t: &DetectorSettings,
    dimension: Dimension,
    today: &Breakdown,
    base: &BaselineVolume,
) -> Option<Finding> {
    let base_attempts = base.mean_attempts_per_day * f64::from(facts.baseline.days_with_data);
    let min = t.min_attempts as f64;
    if (today.attempts as f64) < min || base_attempts < min {
        return None;
    }
    let rise = round_to(today.failure_share - base.failure_share, 4);
    let p = base.failure_share.max(0.01);
    let noise = RISE_STANDARD_ERRORS * (p * (1.0 - p) / today.attempts as f64).sqrt();
    if rise < t.failure_rate_rise || rise < noise {
        return None;
    }
    let strong = rise >= 2.0 * t.failure_rate_rise && today.failures() >= t.min_attempts;
    let severity = if strong {
        Severity::High
    } else {
        Severity::Medium
    };
    let label = dimension.as_str();
    Some(
        Draft {
            kind: FindingKind::FailureRateRise,
            subject: subject_of(dimension, &today.name),
            severity: capped(severity, facts),
            confidence: confidence(today.attempts as f64, 4.0 * min, Some(facts.baseline.days_with_data)),
            summary: format!(
                "{label} {} failed {} of {} attempts (failure share {}) against a baseline failure share of {}.",
                today.name,
                today.failures(),
                today.attempts,
                num(today.failure_share),
                num(base.failure_share)
            ),
            evidence: vec![
                ("attempts", today.attempts as f64),
                ("failures", today.failures() as f64),
                ("failure_share", today.failure_share),
                ("baseline_failure_share", base.failure_share),
                ("rise", rise),
            ],
            window: None,
            interval: Some(interval(today.failures(), today.attempts, Some(base.failure_share))),
        }
        .build(),
    )
}

/// LatencyRegression: p95 at least `latency_regression_ratio` times the baseline's and
/// `latency_regression_min_ms` above it, overall; per source only when the overall p95
/// did not regress (a downstream slowdown shows on every source and is one finding).
pub(super) fn latency_regressions(facts: &DayFacts, t: &DetectorSettings) -> Vec<Finding> {
    let overall = facts.latency.overall.as_ref().and_then(|q| {
        latency_regression(
            facts,
            t,
            None,
            q.attempts,
            q.p95_ms,
            facts.baseline.latency_p95_ms?,
        )
    });
    if let Some(finding) = overall {
        return vec![finding];
    }
    facts
        .latency
        .by_source
        .iter()
        .filter(|s| !s.source.is_empty())
        .filter_map(|s| {
            let base = facts
                .baseline
                .latency_p95_ms_by_source
                .iter()
                .find(|b| b.source == s.source)?;
            latency_regression(
                facts,
                t,
                Some(&s.source),
                s.quantiles.attempts,
                s.quantiles.p95_ms,
                base.p95_ms,
            )
        })
        .collect()
}

fn latency_regression(
    facts: &DayFacts,
    t: &DetectorSettings,
    source: Option<&str>,
    attempts: u64,
    p95_ms: f64,
    baseline_p95_ms: f64,
) -> Option<Finding> {
    if attempts < t.min_attempts || baseline_p95_ms <= 0.0 {
        return None;
    }
    let change = ratio(p95_ms, baseline_p95_ms);
    if change < t.latency_regression_ratio || p95_ms - baseline_p95_ms < t.latency_regression_min_ms
    {
        return None;
    }
    let strong = change >= 2.0 * t.latency_regression_ratio;
    let severity = if strong {
        Severity::High
    } else {
        Severity::Medium
    };
    let scope = source.map_or_else(|| "all sources".to_owned(), |s| format!("source {s}"));
    Some(
        Draft {
            kind: FindingKind::LatencyRegression,
            subject: source.map_or_else(Subject::default, |s| subject_of(Dimension::Source, s)),
            severity: capped(severity, facts),
            confidence: confidence(
                attempts as f64,
                4.0 * t.min_attempts as f64,
                Some(facts.baseline.days_with_data),
            ),
            summary: format!(
                "p95 latency of {scope} was {} ms against a baseline p95 of {} ms (ratio {}).",
                num(p95_ms),
                num(baseline_p95_ms),
                num(change)
            ),
            evidence: vec![
                ("attempts", attempts as f64),
                ("p95_ms", p95_ms),
                ("baseline_p95_ms", baseline_p95_ms),
                ("ratio", change),
            ],
            window: None,
            interval: None,
        }
        .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{a_day_at, normal_day, set_source_attempts};
    use super::*;

    fn settings() -> DetectorSettings {
        DetectorSettings::default()
    }

    #[test]
    fn a_source_with_a_fifth_of_its_volume_is_a_high_drop() {
        let mut facts = normal_day();
        set_source_attempts(&mut facts, "quiz", 40, 2);
        let found = volume_changes(&facts, &settings());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].kind, FindingKind::VolumeDrop);
        assert_eq!(found[0].subject.source.as_deref(), Some("quiz"));
        assert_eq!(found[0].severity, Severity::High);
    }

    #[test]
    fn a_source_at_four_times_its_volume_is_a_spike() {
        let mut facts = normal_day();
        set_source_attempts(&mut facts, "partner", 480, 20);
        let found = volume_changes(&facts, &settings());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].kind, FindingKind::VolumeSpike);
        assert_eq!(found[0].subject.source.as_deref(), Some("partner"));
    }

    /// A Sunday at 55 % of a baseline of mostly weekdays: no source, no endpoint and
    /// not the day dropped.
    #[test]
    fn a_quiet_day_of_every_source_is_no_drop() {
        assert!(volume_changes(&a_day_at(0.55), &settings()).is_empty());
    }

    #[test]
    fn every_source_at_a_third_is_one_drop_of_the_whole_day() {
        let found = volume_changes(&a_day_at(0.3), &settings());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].kind, FindingKind::VolumeDrop);
        assert_eq!(found[0].subject, Subject::default());
        assert_eq!(found[0].evidence["attempts"], 240.0);
    }

    /// On a quiet day a source is judged at the day's level: 20 % of its baseline when
    /// the others are at 55 % is a drop, though not below a fifth of the baseline.
    #[test]
    fn a_sources_drop_on_a_quiet_day_is_measured_against_the_day() {
        let mut facts = a_day_at(0.55);
        set_source_attempts(&mut facts, "quiz", 44, 2);
        let found = volume_changes(&facts, &settings());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].kind, FindingKind::VolumeDrop);
        assert_eq!(found[0].subject.source.as_deref(), Some("quiz"));
        let expected = found[0].evidence["expected_attempts"];
        let baseline = found[0].evidence["baseline_mean_per_day"];
        assert!((0.5..0.6).contains(&(expected / baseline)), "{found:#?}");
    }

    #[test]
    fn twenty_percent_less_is_not_a_drop() {
        let mut facts = normal_day();
        set_source_attempts(&mut facts, "web", 320, 16);
        assert!(volume_changes(&facts, &settings()).is_empty());
    }

    #[test]
    fn an_in_progress_day_compares_with_the_elapsed_part_of_the_baseline() {
        let mut facts = normal_day();
        facts.completeness.elapsed_hours = 6;
        for source in ["web", "quiz", "partner", "ads"] {
            let attempts = facts
                .by_source
                .iter()
                .find(|b| b.name == source)
                .map_or(0, |b| b.attempts);
            set_source_attempts(&mut facts, source, attempts / 4, 1);
        }
        let found: Vec<_> = volume_changes(&facts, &settings())
            .into_iter()
            .filter(|f| f.subject.source.is_some())
            .collect();
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn a_failure_share_rising_from_five_to_sixty_percent_is_a_rise() {
        let mut facts = normal_day();
        set_source_attempts(&mut facts, "quiz", 200, 120);
        let found = failure_rate_rises(&facts, &settings());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].subject.source.as_deref(), Some("quiz"));
        assert_eq!(found[0].severity, Severity::High);
    }

    #[test]
    fn the_min_attempts_guard_ignores_small_sources() {
        let mut facts = normal_day();
        set_source_attempts(&mut facts, "ads", 10, 9);
        let mut t = settings();
        t.min_attempts = 20;
        assert!(failure_rate_rises(&facts, &t).is_empty());
        t.min_attempts = 5;
        assert_eq!(failure_rate_rises(&facts, &t).len(), 1);
    }

    #[test]
    fn p95_five_times_the_baseline_is_a_high_regression_of_all_sources() {
        let mut facts = normal_day();
        if let Some(q) = facts.latency.overall.as_mut() {
            q.p95_ms = 1500.0;
        }
        let found = latency_regressions(&facts, &settings());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].subject, Subject::default());
        assert_eq!(found[0].severity, Severity::High);
        assert!(latency_regressions(&normal_day(), &settings()).is_empty());
    }

    /// A fast source several times slower is still fast: 7 ms to 50 ms is a ratio of 7
    /// and no finding under the default floor of 100 ms; a lower floor makes it one.
    #[test]
    fn a_large_ratio_of_small_latencies_is_no_regression() {
        let mut facts = normal_day();
        facts.baseline.latency_p95_ms = Some(7.0);
        if let Some(q) = facts.latency.overall.as_mut() {
            q.p95_ms = 50.0;
        }
        assert!(latency_regressions(&facts, &settings()).is_empty());
        let mut t = settings();
        t.latency_regression_min_ms = 40.0;
        let found = latency_regressions(&facts, &t);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].severity, Severity::High);
    }
}
