//! GradualFailureRise: a subject's hourly failure share rising through the day, which
//! no single hour makes obvious. Per subject (source, endpoint, page, field, reason):
//!
//! 1. the excess of each hour: its failure share minus the baseline's share at the same
//!    local clock hour (the subject's pooled baseline share where that hour is thin);
//! 2. the Mann–Kendall trend test on the excesses (one-sided, ties corrected), at
//!    `trend_significance` split over the subjects tested (Bonferroni);
//! 3. the hour it started: the one-sided CUSUM of the excesses less half of
//!    `trend_min_rise` (Page's reference value) — the hour after its last zero before its
//!    peak;
//! 4. from that hour on, the pooled share must be `trend_min_rise` above the baseline's,
//!    with `min_attempts` failures and a binomial p-value within `trend_significance`.
//!
//! Its window runs from the start of that hour to the end of the last tested one,
//! narrowed to the subject's first and last failure of the day where the facts time them
//! to the second (a source's or a reason's failures, a field's invalid_field rejections):
//! from evidence to evidence, not from hour to hour.

use super::stats::{binomial_excess_p, interval, upper_tail};
use super::subjects::{Subject, failing_subjects};
use super::{Candidate, Draft, capped, confidence, num};
use crate::analyze::facts::{DayFacts, rate, round_to};
use crate::analyze::finding::{Dimension, FindingKind, Severity};
use crate::config::DetectorSettings;

/// Hours with fewer attempts of the subject are left out of the test (their share is
/// noise).
const MIN_HOUR_ATTEMPTS: u64 = 3;
/// Hours the test needs at least.
const MIN_HOURS: usize = 6;
/// Baseline attempts at one clock hour from which its own share is used.
const MIN_BASELINE_HOUR_ATTEMPTS: u64 = 10;

const DIMENSIONS: [Dimension; 5] = [
    Dimension::Source,
    Dimension::Endpoint,
    Dimension::Page,
    Dimension::Field,
    Dimension::Reason,
];

/// One hour of the test: its index, attempts, failures and the baseline share.
#[derive(Debug, Clone, Copy)]
struct Hour {
    index: u32,
    attempts: u64,
    failures: u64,
    baseline: f64,
}

impl Hour {
    fn excess(&self) -> f64 {
        self.failures as f64 / self.attempts as f64 - self.baseline
    }
}

pub(super) fn gradual_rises(facts: &DayFacts, t: &DetectorSettings) -> Vec<Candidate> {
    if facts.baseline.days_with_data == 0 {
        return Vec::new();
    }
    let series: Vec<(Subject, Vec<Hour>)> = failing_subjects(facts, &DIMENSIONS)
        .into_iter()
        .map(|s| {
            let hours = hours(facts, &s);
            (s, hours)
        })
        .filter(|(_, h)| h.len() >= MIN_HOURS)
        .collect();
    let alpha = t.trend_significance / series.len().max(1) as f64;
    series
        .iter()
        .filter_map(|(s, h)| gradual_rise(facts, t, s, h, alpha))
        .collect()
}

fn hours(facts: &DayFacts, s: &Subject) -> Vec<Hour> {
    let base = s.baseline_hours(facts);
    let (ba, bf) = base.iter().fold((0, 0), |(a, f), &(x, y)| (a + x, f + y));
    let pooled = if ba > 0 { bf as f64 / ba as f64 } else { 0.0 };
    s.day_hours(facts)
        .into_iter()
        .zip(0u32..)
        .filter(|((attempts, _), _)| *attempts >= MIN_HOUR_ATTEMPTS)
        .map(|((attempts, failures), index)| {
            let local = facts
                .cells
                .day
                .iter()
                .find(|c| c.hour == index)
                .map_or(index % 24, |c| c.local_hour);
            let baseline = match base.get(local as usize) {
                Some(&(a, f)) if a >= MIN_BASELINE_HOUR_ATTEMPTS => f as f64 / a as f64,
                _ => pooled,
            };
            Hour {
                index,
                attempts,
                failures,
                baseline,
            }
        })
        .collect()
}

/// The Mann–Kendall S and its one-sided p-value (normal approximation with continuity
/// correction and the tie-corrected variance).
pub(super) fn mann_kendall(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    let mut s = 0i64;
    for i in 0..n {
        for j in i + 1..n {
            s += match values[j].total_cmp(&values[i]) {
                std::cmp::Ordering::Greater => 1,
                std::cmp::Ordering::Less => -1,
                std::cmp::Ordering::Equal => 0,
            };
        }
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut ties = 0.0;
    let mut i = 0;
    while i < n {
        let run = sorted[i..].iter().take_while(|v| **v == sorted[i]).count();
        let t = run as f64;
        ties += t * (t - 1.0) * (2.0 * t + 5.0);
        i += run;
    }
    let nf = n as f64;
    let var = (nf * (nf - 1.0) * (2.0 * nf + 5.0) - ties) / 18.0;
    if s <= 0 || var <= 0.0 {
        return (s as f64, 1.0);
    }
    let z = (s as f64 - 1.0) / var.sqrt();
    (z, upper_tail(z))
}

/// Page's CUSUM of `values − k`: the index after its last zero before its peak.
pub(super) fn cusum_start(values: &[f64], k: f64) -> usize {
    let (mut sum, mut peak, mut start, mut best_start) = (0.0f64, 0.0f64, 0, 0);
    for (i, v) in values.iter().enumerate() {
        sum = (sum + v - k).max(0.0);
        if sum == 0.0 {
            start = i + 1;
        } else if sum > peak {
            peak = sum;
            best_start = start;
        }
    }
    best_start
}

fn gradual_rise(
    facts: &DayFacts,
    t: &DetectorSettings,
    s: &Subject,
    hours: &[Hour],
    alpha: f64,
) -> Option<Candidate> {
    let excess: Vec<f64> = hours.iter().map(Hour::excess).collect();
    let (z, p) = mann_kendall(&excess);
    if p > alpha {
        return None;
    }
    let start = cusum_start(&excess, t.trend_min_rise / 2.0);
    let (before, after) = hours.split_at(start.min(hours.len()));
    let sum = |h: &[Hour]| -> (u64, u64, f64) {
        h.iter().fold((0, 0, 0.0), |(a, f, b), x| {
            (
                a + x.attempts,
                f + x.failures,
                b + x.baseline * x.attempts as f64,
            )
        })
    };
    let (attempts, failures, expected) = sum(after);
    let (before_attempts, before_failures, _) = sum(before);
    let baseline = if attempts > 0 {
        round_to(expected / attempts as f64, 4)
    } else {
        return None;
    };
    let share = rate(failures, attempts);
    let rise = round_to(share - baseline, 4);
    if rise < t.trend_min_rise
        || failures < t.min_attempts
        || binomial_excess_p(failures, attempts, baseline) > t.trend_significance
    {
        return None;
    }
    let first = after.first()?;
    let last = hours.last()?;
    let started = facts
        .cells
        .day
        .iter()
        .find(|c| c.hour == first.index)
        .map_or(first.index, |c| c.local_hour);
    let strong = rise >= t.failure_rate_rise;
    let severity = if strong {
        Severity::High
    } else {
        Severity::Medium
    };
    let label = s.dimension.as_str();
    let share_before = rate(before_failures, before_attempts);
    let draft = Draft {
        kind: FindingKind::GradualFailureRise,
        subject: s.dimension.subject(&s.value),
        severity: capped(severity, facts),
        confidence: confidence(
            failures as f64,
            2.0 * t.min_attempts as f64,
            Some(facts.baseline.days_with_data),
        ),
        summary: format!(
            "{label} {}: the failure share rose through the day; from local hour {started} it was {} ({failures} of {attempts} attempts) against a baseline share of {}, and {} before (Mann-Kendall z {}).",
            s.value,
            num(share),
            num(baseline),
            num(share_before),
            num(round_to(z, 2)),
        ),
        evidence: vec![
            ("started_local_hour", f64::from(started)),
            ("failures_since_start", failures as f64),
            ("attempts_since_start", attempts as f64),
            ("share_since_start", share),
            ("share_before_start", share_before),
            ("baseline_share", baseline),
            ("rise", rise),
            ("mann_kendall_z", round_to(z, 2)),
        ],
        window: Some(narrowed(
            (
                hour_start(facts, first.index),
                hour_start(facts, last.index + 1),
            ),
            failure_span(facts, s),
        )),
        interval: Some(interval(failures, attempts, Some(baseline))),
    };
    Some(Candidate {
        excess: failures as f64 - expected,
        finding: draft.build(),
    })
}

/// The subject's first and last failure of the day, where the facts time them.
fn failure_span(facts: &DayFacts, s: &Subject) -> Option<(String, String)> {
    let spans: Vec<(&str, &str)> = match s.dimension {
        Dimension::Source | Dimension::Reason => facts
            .source_reasons
            .iter()
            .filter(|r| {
                let value = match s.dimension {
                    Dimension::Source => &r.source,
                    _ => &r.reason,
                };
                *value == s.value
            })
            .map(|r| (r.first_event.as_str(), r.last_event.as_str()))
            .collect(),
        Dimension::Field => facts
            .invalid_fields_by_page
            .iter()
            .filter(|f| f.field == s.value)
            .map(|f| (f.first_event.as_str(), f.last_event.as_str()))
            .collect(),
        _ => return None,
    };
    let first = spans.iter().map(|s| s.0).min_by_key(|t| instant(t))?;
    let last = spans.iter().map(|s| s.1).max_by_key(|t| instant(t))?;
    Some((first.to_owned(), last.to_owned()))
}

/// `window` cut to `failures` where they lie inside it (a failure before the change
/// point's hour says nothing about when within that hour the rise began).
fn narrowed(window: (String, String), failures: Option<(String, String)>) -> (String, String) {
    let Some((first, last)) = failures else {
        return window;
    };
    let times = [&window.0, &window.1, &first, &last].map(|t| instant(t));
    let [Some(start), Some(end), Some(first_at), Some(last_at)] = times else {
        return window;
    };
    let cut = (
        if first_at > start {
            first
        } else {
            window.0.clone()
        },
        if last_at < end {
            last
        } else {
            window.1.clone()
        },
    );
    if first_at.max(start) <= last_at.min(end) {
        cut
    } else {
        window
    }
}

fn instant(shown: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(shown).ok()
}

/// The start of the day's hour `index` as the facts show instants.
pub(super) fn hour_start(facts: &DayFacts, index: u32) -> String {
    facts
        .shape
        .hourly
        .get(index as usize)
        .map(|h| h.start.clone())
        .unwrap_or_else(|| facts.completeness.day_end.clone())
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{normal_day, plant_hourly};
    use super::*;
    use crate::analyze::facts::HourSlot;

    /// A failure share of `from` until 08:00, then `step` more every hour.
    fn ramp(from: f64, step: f64) -> impl Fn(u32) -> f64 {
        move |h| {
            if h < 8 {
                from
            } else {
                from + step * f64::from(h - 7)
            }
        }
    }

    #[test]
    fn a_ramp_with_no_step_is_a_gradual_rise_from_the_hour_it_started() {
        let mut facts = normal_day();
        // quiz: 20 attempts an hour; its failure share 5 % until 08:00, then one point
        // more every hour (6 %, 7 %, … 20 % at 23:00): no hour is far from the last.
        plant_hourly(&mut facts, "quiz", 20, ramp(0.05, 0.01));
        let found = gradual_rises(&facts, &DetectorSettings::default());
        let quiz: Vec<_> = found
            .iter()
            .filter(|c| c.finding.subject.source.as_deref() == Some("quiz"))
            .collect();
        assert_eq!(quiz.len(), 1, "{found:#?}");
        let started = quiz[0].finding.evidence["started_local_hour"];
        assert!((7.0..=12.0).contains(&started), "started {started}");
        assert!(quiz[0].finding.interval.is_some());
    }

    #[test]
    fn a_gradual_window_runs_from_the_subjects_first_failure_to_its_last() {
        let mut facts = normal_day();
        plant_hourly(&mut facts, "quiz", 20, ramp(0.0, 0.03));
        let hour = |h: u32| format!("2025-06-10T{h:02}:00:00+02:00");
        facts.shape.hourly = (0..24)
            .map(|h| HourSlot {
                hour_index: h,
                local_hour: h,
                start: hour(h),
                attempts: 20,
                failures: 0,
            })
            .collect();
        for r in facts
            .source_reasons
            .iter_mut()
            .filter(|r| r.source == "quiz")
        {
            r.first_event = "2025-06-10T09:17:42+02:00".into();
            r.last_event = "2025-06-10T23:41:05+02:00".into();
        }
        let found = gradual_rises(&facts, &DetectorSettings::default());
        let quiz = found
            .iter()
            .find(|c| c.finding.subject.source.as_deref() == Some("quiz"))
            .expect("the ramp is found");
        let (start, end) = quiz.finding.window.clone().expect("a window");
        assert_eq!(end, "2025-06-10T23:41:05+02:00", "its last failure");
        let started = quiz.finding.evidence["started_local_hour"];
        if started <= 9.0 {
            assert_eq!(start, "2025-06-10T09:17:42+02:00", "its first failure");
        } else {
            assert_eq!(start, format!("2025-06-10T{started:02}:00:00+02:00"));
        }
        let window = (hour(8), hour(23));
        let early = Some((hour(3), hour(22)));
        assert_eq!(narrowed(window.clone(), early), (hour(8), hour(22)));
        assert_eq!(narrowed(window.clone(), None), window);
    }

    #[test]
    fn noise_around_the_baseline_is_no_trend() {
        let mut facts = normal_day();
        plant_hourly(
            &mut facts,
            "quiz",
            20,
            |h| if h % 2 == 0 { 0.1 } else { 0.0 },
        );
        assert!(gradual_rises(&facts, &DetectorSettings::default()).is_empty());
    }

    #[test]
    fn the_trend_test_and_the_change_point_follow_their_definitions() {
        let rising: Vec<f64> = (0..10).map(f64::from).collect();
        let (z, p) = mann_kendall(&rising);
        assert!(z > 3.0 && p < 0.001, "{z} {p}");
        assert_eq!(mann_kendall(&[1.0; 8]).1, 1.0, "all ties: no trend");
        let values = [0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.4];
        assert_eq!(cusum_start(&values, 0.025), 3);
    }
}
