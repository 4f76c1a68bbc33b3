//! Time-shaped signals: bursts of one client, downstream outage windows, silent sources.

use super::stats::interval;
use super::{Dimension, Draft, capped, confidence, num, subject_of};
use crate::analyze::facts::{ClientShape, DayFacts, DownstreamWindow, SourceActivity, round_to};
use crate::analyze::finding::{Finding, FindingKind, Severity, Subject};
use crate::config::DetectorSettings;

/// Attempts a silence must have been expected to hold (from the baseline's hourly profile)
/// before it means anything: quiet night hours of a small source are normal.
pub const SILENCE_MIN_EXPECTED_ATTEMPTS: f64 = 5.0;

/// RateLimitBurst: a client reached `burst_per_minute` in a minute and was rate limited.
pub(super) fn rate_limit_bursts(facts: &DayFacts, t: &DetectorSettings) -> Vec<Finding> {
    facts
        .shape
        .clients
        .iter()
        .filter(|c| !c.client_id.is_empty())
        .filter(|c| c.rate_limited > 0 && c.max_attempts_per_minute >= t.burst_per_minute)
        .map(|c| rate_limit_burst(t, c))
        .collect()
}

fn rate_limit_burst(t: &DetectorSettings, c: &ClientShape) -> Finding {
    let strong = c.rate_limited >= t.burst_per_minute;
    let window = c
        .rate_limited_from
        .clone()
        .zip(c.rate_limited_until.clone());
    Draft {
        kind: FindingKind::RateLimitBurst,
        subject: subject_of(Dimension::Client, &c.client_id),
        severity: if strong { Severity::High } else { Severity::Medium },
        confidence: confidence(c.rate_limited as f64, t.burst_per_minute as f64, None),
        summary: format!(
            "client {} sent up to {} attempts in one minute and had {} attempts rejected as rate_limited.",
            c.client_id, c.max_attempts_per_minute, c.rate_limited
        ),
        evidence: vec![
            ("max_attempts_per_minute", c.max_attempts_per_minute as f64),
            ("rate_limited", c.rate_limited as f64),
            ("burst_minutes", c.burst_minutes as f64),
            ("attempts", c.attempts as f64),
        ],
        window,
        interval: None,
    }
    .build()
}

/// RecordLoss: attempts counted by the service but missing from the record, above
/// 0.1 % of the day's counted attempts; High from 1 %.
pub(super) fn record_loss(facts: &DayFacts, _t: &DetectorSettings) -> Vec<Finding> {
    let recording = &facts.recording;
    if !recording.is_incomplete() {
        return Vec::new();
    }
    let severity = if recording.missing_share >= 0.01 {
        Severity::High
    } else {
        Severity::Medium
    };
    let finding = Draft {
        kind: FindingKind::RecordLoss,
        subject: Subject::default(),
        severity,
        // Both counts are exact: the only doubt is attempts in flight at the window's
        // edges, a handful at most.
        confidence: if recording.missing >= 10 { 0.95 } else { 0.6 },
        summary: format!(
            "{} of {} attempts the service counted are missing from the record ({} % lost in transit).",
            recording.missing,
            recording.counted,
            round_to(recording.missing_share * 100.0, 2)
        ),
        evidence: vec![
            ("counted", recording.counted as f64),
            ("recorded", recording.recorded as f64),
            ("missing", recording.missing as f64),
            ("missing_share", recording.missing_share),
        ],
        window: None,
        interval: None,
    };
    vec![finding.build()]
}

/// Failed deliveries a window that crosses a local midnight needs at least: its other
/// part lies on the neighbouring day, so its span here may be short.
const CROSSING_MIN_FAILURES: u64 = 2;

/// DownstreamOutage: one finding per run of failed deliveries (no delivery between them)
/// spanning `outage_min_minutes`, or crossing a local midnight.
pub(super) fn downstream_outages(facts: &DayFacts, t: &DetectorSettings) -> Vec<Finding> {
    facts
        .delivery
        .downstream_windows
        .iter()
        .filter(|w| {
            let crossing = w.from_previous_day || w.into_next_day;
            w.span_minutes >= t.outage_min_minutes
                || (crossing && w.timeouts + w.errors >= CROSSING_MIN_FAILURES)
        })
        .map(|w| downstream_outage(t, w))
        .collect()
}

/// High when, by its Wilson interval, most attempts of the window failed downstream (the
/// CRM was down, not slow) and there were at least as many failures as minutes required.
fn downstream_outage(t: &DetectorSettings, w: &DownstreamWindow) -> Finding {
    let failures = w.timeouts + w.errors;
    let share = interval(failures, w.attempts, None);
    let strong = share.low >= 0.5 && failures >= t.outage_min_minutes;
    let mut evidence = vec![
        ("span_minutes", w.span_minutes as f64),
        ("minutes_with_failures", w.minutes_with_failures as f64),
        ("downstream_timeouts", w.timeouts as f64),
        ("downstream_errors", w.errors as f64),
        ("attempts", w.attempts as f64),
        ("downstream_failure_share", w.downstream_failure_share),
    ];
    let mut summary = format!(
        "Delivery failed downstream for {} of {} attempts over {} minutes ({} downstream_timeout, {} downstream_error), with no delivery between the failures",
        failures, w.attempts, w.span_minutes, w.timeouts, w.errors
    );
    if let Some(gap) = w.uncertainty_minutes {
        evidence.push(("uncertainty_minutes", gap as f64));
        summary.push_str(&format!(
            "; the next delivery came {gap} minutes after the last failure"
        ));
    }
    if w.from_previous_day {
        summary.push_str("; it was already failing at the start of the day");
    }
    if w.into_next_day {
        summary.push_str("; it was still failing at the end of the day");
    }
    summary.push('.');
    Draft {
        kind: FindingKind::DownstreamOutage,
        subject: Subject::default(),
        severity: if strong {
            Severity::High
        } else {
            Severity::Medium
        },
        confidence: confidence(
            w.span_minutes as f64,
            2.0 * t.outage_min_minutes as f64,
            None,
        ),
        summary,
        evidence,
        window: Some((w.start.clone(), w.end.clone())),
        interval: Some(share),
    }
    .build()
}

/// SilentSource: a source with traffic on every baseline day and no attempt for
/// `silence_min_hours` elapsed local hours in which the baseline expected traffic.
pub(super) fn silent_sources(facts: &DayFacts, t: &DetectorSettings) -> Vec<Finding> {
    if facts.baseline.days_with_data == 0 {
        return Vec::new();
    }
    facts
        .source_activity
        .iter()
        .filter(|a| a.traffic_on_every_baseline_day && !a.source.is_empty())
        .filter_map(|a| silent_source(facts, t, a))
        .collect()
}

fn silent_source(facts: &DayFacts, t: &DetectorSettings, a: &SourceActivity) -> Option<Finding> {
    let silence = a.longest_silence.as_ref()?;
    if u64::from(silence.hours) < t.silence_min_hours
        || silence.expected_attempts < SILENCE_MIN_EXPECTED_ATTEMPTS
    {
        return None;
    }
    let strong = silence.expected_attempts >= t.min_attempts as f64;
    let severity = if strong {
        Severity::High
    } else {
        Severity::Medium
    };
    Some(
        Draft {
            kind: FindingKind::SilentSource,
            subject: subject_of(Dimension::Source, &a.source),
            severity: capped(severity, facts),
            confidence: confidence(
                silence.expected_attempts,
                2.0 * t.min_attempts as f64,
                Some(facts.baseline.days_with_data),
            ),
            summary: format!(
                "source {} had no attempts for {} hours, in which its baseline averaged {} attempts.",
                a.source,
                silence.hours,
                num(silence.expected_attempts)
            ),
            evidence: vec![
                ("silent_hours", f64::from(silence.hours)),
                ("expected_attempts", silence.expected_attempts),
                ("attempts_today", a.attempts as f64),
            ],
            window: Some((silence.start.clone(), silence.end.clone())),
            interval: None,
        }
        .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{normal_day, plant_burst, plant_outage, plant_silence};
    use super::*;

    #[test]
    fn a_bot_burst_is_a_rate_limit_burst_of_its_client() {
        let mut facts = normal_day();
        plant_burst(&mut facts, "quiz-bot", 120, 85);
        let found = rate_limit_bursts(&facts, &DetectorSettings::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].subject.client_id.as_deref(), Some("quiz-bot"));
        assert_eq!(found[0].severity, Severity::High);
        assert!(rate_limit_bursts(&normal_day(), &DetectorSettings::default()).is_empty());
    }

    fn with_recording(counted: u64, recorded: u64) -> DayFacts {
        let mut facts = normal_day();
        facts.recording = crate::analyze::recording::Recording {
            counted,
            recorded,
            missing: counted - recorded,
            missing_share: (counted - recorded) as f64 / counted as f64,
            instances: Vec::new(),
        };
        facts
    }

    #[test]
    fn attempts_missing_from_the_record_are_a_record_loss() {
        let t = DetectorSettings::default();
        let found = record_loss(&with_recording(1_000, 950), &t);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].severity, Severity::High);
        assert_eq!(found[0].evidence["missing"], 50.0);
        assert!(
            found[0].summary.contains("50 of 1000"),
            "{}",
            found[0].summary
        );
        let small = record_loss(&with_recording(10_000, 9_980), &t);
        assert_eq!(small[0].severity, Severity::Medium, "0.2 % is medium");
        assert!(
            record_loss(&with_recording(10_000, 9_995), &t).is_empty(),
            "0.05 %"
        );
        assert!(record_loss(&normal_day(), &t).is_empty());
    }

    #[test]
    fn a_crm_down_window_is_a_high_outage() {
        let mut facts = normal_day();
        plant_outage(&mut facts, 40, 36, 0.9);
        let found = downstream_outages(&facts, &DetectorSettings::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].severity, Severity::High);
        assert!(found[0].window.is_some());
    }

    #[test]
    fn a_short_blip_is_no_outage() {
        let mut facts = normal_day();
        plant_outage(&mut facts, 3, 3, 1.0);
        assert!(downstream_outages(&facts, &DetectorSettings::default()).is_empty());
    }

    #[test]
    fn a_source_without_traffic_for_hours_is_silent() {
        let mut facts = normal_day();
        plant_silence(&mut facts, "partner", 6, 30.0);
        let found = silent_sources(&facts, &DetectorSettings::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].subject.source.as_deref(), Some("partner"));
        assert_eq!(found[0].severity, Severity::High);
    }

    #[test]
    fn quiet_night_hours_of_a_small_source_are_not_silence() {
        let mut facts = normal_day();
        plant_silence(&mut facts, "ads", 5, 2.0);
        assert!(silent_sources(&facts, &DetectorSettings::default()).is_empty());
    }
}
