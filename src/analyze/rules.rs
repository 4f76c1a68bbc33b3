//! A report written by fixed rules from the same facts and findings the model gets: what
//! is stored when the model is missing, down, slow or keeps answering out of schema.
//!
//! Plainer than the model's prose, but every number in it is copied from the facts or
//! from a finding, so `grounding::check` finds nothing to object to.

use chrono::NaiveDate;

use super::facts::{Completeness, DayFacts, DayStatus, Totals};
use super::finding::{Finding, FindingKind};
use super::report::{
    Confidence, ConfidenceLevel, MAX_COMPLETENESS_CHARS, MAX_EVIDENCE_CHARS, MAX_NAME_CHARS,
    MAX_SECTION_CHARS, MAX_SIGNALS, MAX_SOURCES, MAX_SUMMARY_CHARS, Report, Scope, Signal,
};

/// Findings quoted in the executive summary.
const TOP_FINDINGS: usize = 3;
/// Sources and downstream windows named in the text.
const LISTED: usize = 5;

/// Kinds that point at a setup problem rather than at how users behaved.
const MISCONFIGURATION: [FindingKind; 4] = [
    FindingKind::KeyMismatchCluster,
    FindingKind::UnauthorizedCluster,
    FindingKind::FailureConcentration,
    FindingKind::NewPage,
];

/// Kinds about the service and its CRM; the others describe what users (and clients) did.
const SYSTEM: [FindingKind; 4] = [
    FindingKind::FailureRateRise,
    FindingKind::DownstreamOutage,
    FindingKind::LatencyRegression,
    FindingKind::FailureConcentration,
];

/// What the analysis never looks at, whoever writes the report.
const NOT_ANALYSED: [&str; 3] = [
    "the contents of individual leads",
    "personal data of submitters",
    "traffic outside the analysed day",
];

pub fn report_from_rules(
    facts: &DayFacts,
    findings: &[Finding],
    day: NaiveDate,
    time_zone: &str,
) -> Report {
    let ranked = ranked(findings);
    Report {
        executive_summary: clip(&executive_summary(facts, &ranked), MAX_SUMMARY_CHARS),
        user_behavior: clip(&user_behavior(facts, &ranked), MAX_SECTION_CHARS),
        system_behavior: clip(&system_behavior(facts, &ranked), MAX_SECTION_CHARS),
        misconfiguration_signals: signals(&ranked),
        confidence: confidence(facts),
        scope: Scope {
            day: day.format("%Y-%m-%d").to_string(),
            time_zone: time_zone.to_owned(),
            sources_covered: facts
                .by_source
                .iter()
                .map(|entry| entry.name.clone())
                .take(MAX_SOURCES)
                .filter(|name| name.chars().count() <= MAX_NAME_CHARS)
                .collect(),
            data_completeness: clip(&completeness(&facts.completeness), MAX_COMPLETENESS_CHARS),
            not_analysed: NOT_ANALYSED.iter().map(|s| (*s).to_owned()).collect(),
        },
    }
}

/// Most severe first, then the detector's confidence.
fn ranked(findings: &[Finding]) -> Vec<&Finding> {
    let mut ranked: Vec<&Finding> = findings.iter().collect();
    ranked.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.confidence.total_cmp(&a.confidence))
    });
    ranked
}

fn executive_summary(facts: &DayFacts, ranked: &[&Finding]) -> String {
    let mut text = totals(&facts.totals);
    if ranked.is_empty() {
        text.push_str(" The detectors flagged nothing against the baseline.");
    } else {
        text.push_str(" Most notable:");
        for finding in ranked.iter().take(TOP_FINDINGS) {
            text.push(' ');
            text.push_str(&sentence(&finding.summary));
        }
    }
    text
}

fn totals(totals: &Totals) -> String {
    format!(
        "The day saw {} attempts: {} accepted, {} rejected, {} failed (failure rate {}).",
        totals.attempts,
        totals.accepted,
        totals.rejected,
        totals.failed,
        percent(totals.failure_rate)
    )
}

fn user_behavior(facts: &DayFacts, ranked: &[&Finding]) -> String {
    let mut parts = Vec::new();
    let by_source: Vec<String> = facts
        .by_source
        .iter()
        .take(LISTED)
        .map(|entry| format!("{} {}", entry.name, entry.attempts))
        .collect();
    if !by_source.is_empty() {
        parts.push(format!("Attempts by source: {}.", by_source.join(", ")));
    }
    let submitters = &facts.submitters;
    parts.push(format!(
        "{} distinct submitters, {} of them with more than one attempt.",
        submitters.distinct_submitters, submitters.repeat_submitters
    ));
    parts.push(format!(
        "Duplicate attempts: {}.",
        submitters.duplicate_attempts
    ));
    parts.extend(summaries(ranked, |kind| !SYSTEM.contains(&kind)));
    parts.join(" ")
}

fn system_behavior(facts: &DayFacts, ranked: &[&Finding]) -> String {
    let mut parts = Vec::new();
    if let Some(overall) = &facts.latency.overall {
        parts.push(format!(
            "Submission latency: p50 {} ms, p95 {} ms.",
            decimal(overall.p50_ms),
            decimal(overall.p95_ms)
        ));
    }
    for window in facts.delivery.downstream_windows.iter().take(LISTED) {
        parts.push(format!(
            "Delivery to the CRM failed between {} and {}: {} timeouts, {} errors.",
            window.start, window.end, window.timeouts, window.errors
        ));
    }
    parts.extend(summaries(ranked, |kind| SYSTEM.contains(&kind)));
    or_nothing(parts, "The facts hold no latency or delivery data.")
}

fn summaries(ranked: &[&Finding], wanted: impl Fn(FindingKind) -> bool) -> Vec<String> {
    ranked
        .iter()
        .filter(|finding| wanted(finding.kind))
        .map(|finding| sentence(&finding.summary))
        .collect()
}

fn or_nothing(parts: Vec<String>, nothing: &str) -> String {
    if parts.is_empty() {
        nothing.to_owned()
    } else {
        parts.join(" ")
    }
}

fn signals(ranked: &[&Finding]) -> Vec<Signal> {
    ranked
        .iter()
        .filter(|finding| MISCONFIGURATION.contains(&finding.kind))
        .take(MAX_SIGNALS)
        .map(|finding| Signal {
            signal: signal_title(finding.kind).to_owned(),
            evidence: clip(&sentence(&finding.summary), MAX_EVIDENCE_CHARS),
            severity: finding.severity,
        })
        .collect()
}

fn signal_title(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::KeyMismatchCluster => "Valid keys used for the wrong source",
        FindingKind::UnauthorizedCluster => "Many attempts with missing, unknown or rotated keys",
        FindingKind::FailureConcentration => "Failures concentrated on one source, page or field",
        FindingKind::NewPage => "Traffic on a page or form the baseline never saw",
        _ => kind.as_str(),
    }
}

/// High for a complete day with a full baseline; medium when the baseline is shorter
/// than asked for; low for a day not over yet, or without a single attempt.
fn confidence(facts: &DayFacts) -> Confidence {
    let mut level = ConfidenceLevel::High;
    let mut reasons = vec!["Written from the facts by fixed rules, without the model.".to_owned()];
    if facts.completeness.status == DayStatus::Complete {
        reasons.push("The day is complete.".to_owned());
    } else {
        level = ConfidenceLevel::Low;
        reasons.push("The day was not complete when analysed.".to_owned());
    }
    if facts.totals.attempts == 0 {
        level = ConfidenceLevel::Low;
        reasons.push("The day has no attempts.".to_owned());
    }
    let baseline = &facts.baseline;
    if baseline.days_with_data < baseline.requested_days {
        level = level.min(ConfidenceLevel::Medium);
        reasons.push(format!(
            "The baseline has data on {} of {} requested days.",
            baseline.days_with_data, baseline.requested_days
        ));
    }
    Confidence { level, reasons }
}

fn completeness(completeness: &Completeness) -> String {
    let mut text = format!(
        "Status {}, {} of {} hours elapsed",
        completeness.status.as_str(),
        completeness.elapsed_hours,
        completeness.day_hours
    );
    let quiet: Vec<String> = completeness
        .hours_without_data
        .iter()
        .map(u32::to_string)
        .collect();
    if !quiet.is_empty() {
        text.push_str(&format!(
            ", no attempts in local hours {}",
            quiet.join(", ")
        ));
    }
    text.push('.');
    text
}

/// A measurement of the facts, with one decimal unless it is whole.
fn decimal(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// A rate of the facts (0–1) as a percentage with one decimal, which grounding accepts
/// as the rate × 100 at the precision written.
fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// The text ending in a full stop, so joined sentences read as sentences.
fn sentence(text: &str) -> String {
    let text = text.trim();
    if text.ends_with(['.', '!', '?']) {
        text.to_owned()
    } else {
        format!("{text}.")
    }
}

/// At most `max` characters, cut at a space so no number or name is cut in two (a cut
/// number would be a different, ungrounded number).
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let head: String = text.chars().take(max.saturating_sub(1)).collect();
    let cut = head.rfind(' ').unwrap_or(0);
    format!("{}…", head[..cut].trim_end())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::analyze::facts::fixture;
    use crate::analyze::finding::{Severity, Subject};
    use crate::analyze::grounding;

    /// The shared fixture with a baseline shorter than asked for.
    fn facts() -> DayFacts {
        let mut facts = fixture();
        facts.baseline.days_with_data = 5;
        facts
    }

    fn check(report: &Report, facts: &DayFacts, findings: &[Finding]) -> Vec<grounding::Violation> {
        let shown = serde_json::to_value(facts).expect("facts serialise");
        grounding::check(report, &shown, findings)
    }

    fn finding(kind: FindingKind, severity: Severity, summary: &str) -> Finding {
        Finding {
            kind,
            subject: Subject {
                source: Some("quiz".into()),
                ..Subject::default()
            },
            severity,
            confidence: 0.9,
            summary: summary.to_owned(),
            evidence: BTreeMap::from([("attempts".to_owned(), 58.0)]),
            window: None,
            interval: None,
            changes: Vec::new(),
        }
    }

    fn findings() -> Vec<Finding> {
        vec![
            finding(
                FindingKind::VolumeSpike,
                Severity::Low,
                "source=quiz had 534 attempts against a baseline mean of 210.5 per day",
            ),
            finding(
                FindingKind::KeyMismatchCluster,
                Severity::High,
                "58 attempts on source=quiz carried the key of source=web_form.",
            ),
            finding(
                FindingKind::DownstreamOutage,
                Severity::Medium,
                "Delivery failed for 15 minutes from 14:05 with 21 failures (35% of attempts).",
            ),
        ]
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 5, 1).expect("valid date")
    }

    #[test]
    fn the_rules_report_is_grounded_in_its_facts() {
        let report = report_from_rules(&facts(), &findings(), day(), "Europe/Berlin");
        assert!(report.validate().is_ok(), "{report:#?}");
        let violations = check(&report, &facts(), &findings());
        assert!(violations.is_empty(), "{violations:?}\n{report:#?}");
    }

    #[test]
    fn the_rules_report_restates_totals_findings_and_signals() {
        let report = report_from_rules(&facts(), &findings(), day(), "Europe/Berlin");
        assert!(report.executive_summary.starts_with(
            "The day saw 1234 attempts: 1100 accepted, 98 rejected, 36 failed (failure rate 10.9%). Most notable: 58 attempts"
        ), "{}", report.executive_summary);
        assert!(report.user_behavior.contains("web_form 700, quiz 534"));
        assert!(report.system_behavior.contains("p95 830.4 ms"));
        assert_eq!(report.misconfiguration_signals.len(), 1);
        assert_eq!(report.misconfiguration_signals[0].severity, Severity::High);
        assert_eq!(report.scope.sources_covered, ["web_form", "quiz"]);
        assert_eq!(report.scope.day, "2024-05-01");
        assert_eq!(report.confidence.level, ConfidenceLevel::Medium);
        assert_eq!(
            report.scope.data_completeness,
            "Status complete, 24 of 24 hours elapsed, no attempts in local hours 2, 3, 4."
        );
    }

    #[test]
    fn an_unfinished_day_without_attempts_gives_a_valid_low_confidence_report() {
        let mut facts = fixture();
        facts.completeness.status = DayStatus::InProgress;
        facts.completeness.elapsed_hours = 3;
        let totals = &mut facts.totals;
        (
            totals.attempts,
            totals.accepted,
            totals.rejected,
            totals.failed,
        ) = (0, 0, 0, 0);
        (totals.success_rate, totals.failure_rate) = (0.0, 0.0);
        facts.latency.overall = None;
        facts.delivery.downstream_windows.clear();
        let report = report_from_rules(&facts, &[], day(), "UTC");
        assert!(report.validate().is_ok(), "{report:#?}");
        assert_eq!(report.confidence.level, ConfidenceLevel::Low);
        assert_eq!(
            report.system_behavior,
            "The facts hold no latency or delivery data."
        );
        assert!(
            report
                .scope
                .data_completeness
                .starts_with("Status in_progress, 3 of 24 hours elapsed")
        );
        assert!(check(&report, &facts, &[]).is_empty());
    }

    #[test]
    fn long_text_is_clipped_between_words() {
        let summary = "1234 attempts ".repeat(200);
        let many = vec![finding(FindingKind::NewPage, Severity::Low, &summary); 3];
        let report = report_from_rules(&facts(), &many, day(), "UTC");
        assert!(report.validate().is_ok());
        assert!(report.executive_summary.ends_with('…'));
        let last_word = report
            .executive_summary
            .trim_end_matches('…')
            .rsplit(' ')
            .next();
        assert!(
            matches!(last_word, Some("1234" | "attempts")),
            "{last_word:?}"
        );
        assert!(check(&report, &facts(), &many).is_empty());
    }
}
