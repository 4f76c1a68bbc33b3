//! Deterministic detectors: from a day's facts and the `detectors.*` thresholds to a
//! sorted list of findings. The same facts always give the same findings, so a report
//! can be reproduced and the narration checked against them.
//!
//! Each kind has one small function in a submodule. A finding's summary is built from its
//! evidence numbers and closed-set names only; severities are calibrated so that a normal
//! day with natural noise gives no High finding (docs/analyzer.md, "Detectors").

mod auth;
mod failures;
mod gradual;
mod novelty;
mod same_incident;
pub mod samples;
mod shift;
pub mod stats;
mod subjects;
mod traffic;
mod volume;
mod window_changes;

#[cfg(test)]
mod fixture;

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::analyze::facts::{DayFacts, round_to};
use crate::analyze::finding::{Dimension, Finding, FindingKind, RateInterval, Severity, Subject};
use crate::config::DetectorSettings;

/// Baseline days with data from which a baseline-relative signal can be High.
pub const WELL_SUPPORTED_BASELINE_DAYS: u32 = 3;
/// Baseline days with data at which confidence no longer grows.
const FULL_BASELINE_DAYS: u32 = 7;

/// Runs every detector; findings sorted by severity (High first), kind, subject.
pub fn detect(facts: &DayFacts, thresholds: &DetectorSettings) -> Vec<Finding> {
    let detectors: [fn(&DayFacts, &DetectorSettings) -> Vec<Finding>; 13] = [
        volume::volume_changes,
        volume::failure_rate_rises,
        volume::latency_regressions,
        failures::failure_concentrations,
        auth::key_mismatch_clusters,
        auth::unauthorized_clusters,
        traffic::rate_limit_bursts,
        traffic::downstream_outages,
        traffic::silent_sources,
        novelty::new_pages,
        novelty::new_forms,
        novelty::duplicate_surge,
        traffic::record_loss,
    ];
    // A source's or endpoint's whole failure rise or concentration is the broad view of
    // what a specific finding (a cluster, a burst, an outage, a broken field) explains:
    // merged like the generic ones.
    let (broad, hand): (Vec<Finding>, Vec<Finding>) = detectors
        .iter()
        .flat_map(|d| d(facts, thresholds))
        .partition(|f| {
            f.kind == FindingKind::FailureRateRise
                || (f.kind == FindingKind::FailureConcentration && f.subject.field.is_none())
        });
    // Then gradual rises (they name the hour), then what changed, ranked by lift; each
    // only when no finding already kept explains most of its failures.
    let generic: Vec<Candidate> = broad
        .into_iter()
        .map(Candidate::broad)
        .chain(gradual::gradual_rises(facts, thresholds))
        .chain(shift::failure_shifts(facts, thresholds))
        .collect();
    let mut findings = same_incident::fold(subjects::merge(facts, hand, generic));
    window_changes::attach(facts, thresholds, &mut findings);
    sort(&mut findings);
    findings
}

/// A generic detector's finding and its excess failures (today's less what the baseline
/// share expects), by which it is merged into a finding explaining the same failures.
#[derive(Debug)]
struct Candidate {
    excess: f64,
    finding: Finding,
}

impl Candidate {
    /// A hand-written finding with an interval: its excess over the baseline share.
    fn broad(finding: Finding) -> Self {
        let excess = finding.interval.map_or(0.0, |i| {
            i.count as f64 - i.attempts as f64 * i.baseline.unwrap_or(0.0)
        });
        Self { excess, finding }
    }
}

fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        (Reverse(a.severity), a.kind, &a.subject, &a.summary).cmp(&(
            Reverse(b.severity),
            b.kind,
            &b.subject,
            &b.summary,
        ))
    });
}

/// What a detector fills in; `build` turns it into a Finding.
struct Draft {
    kind: FindingKind,
    subject: Subject,
    severity: Severity,
    confidence: f64,
    summary: String,
    evidence: Vec<(&'static str, f64)>,
    window: Option<(String, String)>,
    /// The share a rate-based finding rests on ([`stats::interval`]).
    interval: Option<RateInterval>,
}

impl Draft {
    /// A finding whose interval is compatible with its baseline is at most Medium: the
    /// share may be the baseline's plus sampling noise. The interval's bounds join the
    /// evidence, so the narration may state them.
    fn build(self) -> Finding {
        let mut evidence: BTreeMap<String, f64> = self
            .evidence
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        let mut severity = self.severity;
        if let Some(i) = &self.interval {
            evidence.insert("ci_low".to_owned(), i.low);
            evidence.insert("ci_high".to_owned(), i.high);
            if severity == Severity::High && i.compatible_with_baseline() {
                severity = Severity::Medium;
            }
        }
        Finding {
            kind: self.kind,
            subject: self.subject,
            severity,
            confidence: self.confidence,
            summary: self.summary,
            evidence,
            window: self.window,
            interval: self.interval,
            changes: Vec::new(),
        }
    }
}

/// A subject naming one value of one dimension.
fn subject_of(dimension: Dimension, name: &str) -> Subject {
    dimension.subject(name)
}

/// 0–1: grows with the sample (up to `enough`) and with the baseline days that had data
/// (up to a week); `None` for detectors that do not compare with the baseline.
fn confidence(sample: f64, enough: f64, baseline_days: Option<u32>) -> f64 {
    let data = if enough <= 0.0 {
        1.0
    } else {
        (sample / enough).clamp(0.0, 1.0)
    };
    let base = baseline_days.map_or(1.0, |d| {
        (f64::from(d) / f64::from(FULL_BASELINE_DAYS)).min(1.0)
    });
    round_to((0.4 + 0.6 * data) * (0.6 + 0.4 * base), 2)
}

/// High only when the baseline it compares with is long enough to trust.
fn capped(severity: Severity, facts: &DayFacts) -> Severity {
    if severity == Severity::High && facts.baseline.days_with_data < WELL_SUPPORTED_BASELINE_DAYS {
        Severity::Medium
    } else {
        severity
    }
}

/// The baseline's failure share over all sources together (attempt-weighted).
fn baseline_failure_share(facts: &DayFacts) -> f64 {
    let (attempts, failures) = facts
        .baseline
        .by_source
        .iter()
        .fold((0.0, 0.0), |(a, f), v| {
            (
                a + v.mean_attempts_per_day,
                f + v.mean_attempts_per_day * v.failure_share,
            )
        });
    if attempts > 0.0 {
        round_to(failures / attempts, 4)
    } else {
        0.0
    }
}

/// A number as the evidence holds it: integers without a fraction, others as rounded.
fn num(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// The ratio of two evidence numbers, rounded to 2 places (0 when the base is 0).
fn ratio(value: f64, base: f64) -> f64 {
    if base > 0.0 {
        round_to(value / base, 2)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::normal_day;
    use super::*;
    use crate::domain::Reason;

    #[test]
    fn a_normal_day_has_no_high_finding() {
        let findings = detect(&normal_day(), &DetectorSettings::default());
        let high: Vec<_> = findings
            .iter()
            .filter(|f| f.severity == Severity::High)
            .collect();
        assert!(high.is_empty(), "{high:#?}");
    }

    #[test]
    fn a_normal_day_has_no_finding_at_all() {
        let findings = detect(&normal_day(), &DetectorSettings::default());
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn findings_are_sorted_by_severity_then_kind_then_subject() {
        let mut facts = normal_day();
        fixture::plant_unauthorized(&mut facts, "quiz", 40);
        fixture::plant_unauthorized(&mut facts, "ads", 12);
        fixture::plant_duplicates(&mut facts, "web", 60);
        let findings = detect(&facts, &DetectorSettings::default());
        let keys: Vec<_> = findings
            .iter()
            .map(|f| (Reverse(f.severity), f.kind, f.subject.clone()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(findings, detect(&facts, &DetectorSettings::default()));
        assert_eq!(findings.first().map(|f| f.severity), Some(Severity::High));
    }

    #[test]
    fn a_source_rise_explained_by_its_auth_cluster_is_one_finding() {
        let mut facts = normal_day();
        fixture::plant_unauthorized(&mut facts, "quiz", 150);
        let broad = volume::failure_rate_rises(&facts, &DetectorSettings::default());
        assert!(!broad.is_empty(), "the quiz's failure share rose");
        let mut facts_with_cells = facts.clone();
        fixture::plant_reason_cells(&mut facts_with_cells, "quiz", Reason::Unauthorized, 150);
        let findings = detect(&facts_with_cells, &DetectorSettings::default());
        let quiz: Vec<_> = findings
            .iter()
            .filter(|f| f.subject.source.as_deref() == Some("quiz"))
            .map(|f| f.kind)
            .collect();
        assert_eq!(quiz, [FindingKind::UnauthorizedCluster], "{findings:#?}");
    }

    #[test]
    fn confidence_grows_with_data_and_baseline_days() {
        assert!(confidence(10.0, 100.0, Some(7)) < confidence(100.0, 100.0, Some(7)));
        assert!(confidence(100.0, 100.0, Some(1)) < confidence(100.0, 100.0, Some(7)));
        assert_eq!(confidence(500.0, 100.0, None), 1.0);
    }

    #[test]
    fn numbers_print_as_the_evidence_holds_them() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(0.8512), "0.8512");
    }
}
