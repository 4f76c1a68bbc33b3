//! A report written by fixed rules from the same facts and findings the model gets: what
//! is stored when the model is missing, down, slow or keeps answering out of schema.
//!
//! Plainer than the model's prose, but every number in it is copied from the facts or
//! from a finding, so `grounding::check` finds nothing to object to. The facts are read
//! as JSON (the serialized `DayFacts`), and a part that is missing is left out of the
//! text rather than failing the report.

use chrono::NaiveDate;
use serde_json::Value;

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
    facts: &Value,
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
            sources_covered: sources(facts)
                .into_iter()
                .take(MAX_SOURCES)
                .filter(|name| name.chars().count() <= MAX_NAME_CHARS)
                .collect(),
            data_completeness: clip(&completeness(facts), MAX_COMPLETENESS_CHARS),
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

fn executive_summary(facts: &Value, ranked: &[&Finding]) -> String {
    let mut text = totals(facts);
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

fn totals(facts: &Value) -> String {
    let totals = &facts["totals"];
    let Some(attempts) = number(&totals["attempts"]) else {
        return "The facts hold no totals for the day.".to_owned();
    };
    let mut text = format!("The day saw {attempts} attempts");
    let parts: Vec<String> = ["accepted", "rejected", "failed"]
        .iter()
        .filter_map(|key| number(&totals[*key]).map(|n| format!("{n} {key}")))
        .collect();
    if !parts.is_empty() {
        text.push_str(&format!(": {}", parts.join(", ")));
    }
    if let Some(rate) = percent(&totals["failure_rate"]) {
        text.push_str(&format!(" (failure rate {rate})"));
    }
    text.push('.');
    text
}

fn user_behavior(facts: &Value, ranked: &[&Finding]) -> String {
    let mut parts = Vec::new();
    let by_source: Vec<String> = entries(&facts["by_source"])
        .iter()
        .take(LISTED)
        .filter_map(|entry| {
            let name = entry["name"].as_str()?;
            Some(format!("{name} {}", number(&entry["attempts"])?))
        })
        .collect();
    if !by_source.is_empty() {
        parts.push(format!("Attempts by source: {}.", by_source.join(", ")));
    }
    let submitters = &facts["submitters"];
    if let (Some(distinct), Some(repeat)) = (
        number(&submitters["distinct_submitters"]),
        number(&submitters["repeat_submitters"]),
    ) {
        parts.push(format!(
            "{distinct} distinct submitters, {repeat} of them with more than one attempt."
        ));
    }
    if let Some(duplicates) = number(&submitters["duplicate_attempts"]) {
        parts.push(format!("Duplicate attempts: {duplicates}."));
    }
    parts.extend(summaries(ranked, |kind| !SYSTEM.contains(&kind)));
    or_nothing(parts, "The facts hold no breakdown of user activity.")
}

fn system_behavior(facts: &Value, ranked: &[&Finding]) -> String {
    let mut parts = Vec::new();
    let overall = &facts["latency"]["overall"];
    if let (Some(p50), Some(p95)) = (decimal(&overall["p50_ms"]), decimal(&overall["p95_ms"])) {
        parts.push(format!("Submission latency: p50 {p50} ms, p95 {p95} ms."));
    }
    for window in entries(&facts["delivery"]["downstream_windows"])
        .iter()
        .take(LISTED)
    {
        if let (Some(start), Some(end), Some(timeouts), Some(errors)) = (
            window["start"].as_str(),
            window["end"].as_str(),
            number(&window["timeouts"]),
            number(&window["errors"]),
        ) {
            parts.push(format!(
                "Delivery to the CRM failed between {start} and {end}: {timeouts} timeouts, {errors} errors."
            ));
        }
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
fn confidence(facts: &Value) -> Confidence {
    let mut level = ConfidenceLevel::High;
    let mut reasons = vec!["Written from the facts by fixed rules, without the model.".to_owned()];
    match facts["completeness"]["status"].as_str() {
        Some("complete") => reasons.push("The day is complete.".to_owned()),
        Some(_) => {
            level = ConfidenceLevel::Low;
            reasons.push("The day was not complete when analysed.".to_owned());
        }
        None => {
            level = ConfidenceLevel::Low;
            reasons.push("The facts do not say whether the day is complete.".to_owned());
        }
    }
    if number(&facts["totals"]["attempts"]) == Some(0) {
        level = ConfidenceLevel::Low;
        reasons.push("The day has no attempts.".to_owned());
    }
    let baseline = &facts["baseline"];
    if let (Some(with_data), Some(requested)) = (
        number(&baseline["days_with_data"]),
        number(&baseline["requested_days"]),
    ) && with_data < requested
    {
        level = level.min(ConfidenceLevel::Medium);
        reasons.push(format!(
            "The baseline has data on {with_data} of {requested} requested days."
        ));
    }
    Confidence { level, reasons }
}

fn completeness(facts: &Value) -> String {
    let completeness = &facts["completeness"];
    let Some(status) = completeness["status"].as_str() else {
        return "unknown".to_owned();
    };
    let mut text = format!("Status {status}");
    if let (Some(elapsed), Some(hours)) = (
        number(&completeness["elapsed_hours"]),
        number(&completeness["day_hours"]),
    ) {
        text.push_str(&format!(", {elapsed} of {hours} hours elapsed"));
    }
    let quiet: Vec<String> = entries(&completeness["hours_without_data"])
        .iter()
        .filter_map(number)
        .map(|hour| hour.to_string())
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

fn sources(facts: &Value) -> Vec<String> {
    entries(&facts["by_source"])
        .iter()
        .filter_map(|entry| entry["name"].as_str().map(str::to_owned))
        .collect()
}

fn entries(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// A whole number of the facts (counts are integers).
fn number(value: &Value) -> Option<u64> {
    value.as_u64()
}

/// A measurement of the facts, with one decimal unless it is whole.
fn decimal(value: &Value) -> Option<String> {
    let value = value.as_f64()?;
    Some(if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    })
}

/// A rate of the facts (0–1) as a percentage with one decimal, which grounding accepts
/// as the rate × 100 at the precision written.
fn percent(value: &Value) -> Option<String> {
    value.as_f64().map(|rate| format!("{:.1}%", rate * 100.0))
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

    use serde_json::json;

    use super::*;
    use crate::analyze::finding::{Severity, Subject};
    use crate::analyze::grounding;

    /// Shaped like a serialized `DayFacts`, trimmed to what the rules read and a bit more.
    fn facts() -> Value {
        json!({
            "day": "2024-05-01",
            "time_zone": "Europe/Berlin",
            "completeness": {
                "status": "complete", "day_start": "2024-05-01T00:00:00+02:00",
                "day_end": "2024-05-02T00:00:00+02:00", "day_hours": 24, "elapsed_hours": 24,
                "hours_without_data": [2, 3, 4]
            },
            "totals": {"attempts": 1234, "accepted": 1100, "rejected": 98, "failed": 36,
                       "success_rate": 0.8914, "failure_rate": 0.1086},
            "by_source": [
                {"name": "web_form", "attempts": 700, "accepted": 650, "rejected": 40, "failed": 10,
                 "failure_share": 0.07142857142857142, "share_of_day_failures": 0.373, "top_reasons": []},
                {"name": "quiz", "attempts": 534, "accepted": 450, "rejected": 58, "failed": 26,
                 "failure_share": 0.15730337078651685, "share_of_day_failures": 0.627, "top_reasons": []}
            ],
            "latency": {"overall": {"attempts": 1234, "p50_ms": 41.25, "p95_ms": 830.44, "p99_ms": 1200.0}, "by_source": []},
            "submitters": {"distinct_submitters": 900, "repeat_submitters": 120, "retries_after_failure": 14,
                           "duplicate_attempts": 31, "submitters_with_duplicates": 20,
                           "high_activity_threshold": 10, "high_activity_submitters": 1,
                           "high_activity": [{"submitter_id": "9f86d081884c", "attempts": 14, "failures": 3, "failure_share": 0.214}]},
            "delivery": {"attempts_distribution": [], "downstream_windows": [
                {"start": "2024-05-01T14:05:00+02:00", "end": "2024-05-01T14:20:00+02:00", "span_minutes": 15,
                 "minutes_with_failures": 12, "timeouts": 17, "errors": 4, "attempts": 60, "downstream_failure_share": 0.35}
            ]},
            "baseline": {"requested_days": 7, "days_with_data": 5, "first_day": "2024-04-24", "last_day": "2024-04-30"}
        })
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
        let violations = grounding::check(&report, &facts(), &findings());
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
    fn missing_facts_still_give_a_valid_low_confidence_report() {
        let report = report_from_rules(&json!({}), &[], day(), "UTC");
        assert!(report.validate().is_ok(), "{report:#?}");
        assert_eq!(report.confidence.level, ConfidenceLevel::Low);
        assert!(grounding::check(&report, &json!({}), &[]).is_empty());
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
        assert!(grounding::check(&report, &facts(), &many).is_empty());
    }
}
