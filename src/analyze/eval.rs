//! Measures what the model writes, day by day (`lead-lab eval-narration`): whether its
//! first answer was valid, retries, fallbacks, grounding violations per field, which
//! findings the narrative mentions, tokens and latency. The days' facts are read from
//! ClickHouse as an analysis would; nothing is stored (a measurement, not a run).
//!
//! A finding counts as mentioned when the narrative (summary, behaviours, signals)
//! names one of its subjects (source, endpoint, page, form, field or client) or, for a
//! finding without a named subject (a downstream outage), its kind in words
//! ("downstream outage").

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::detect;
use super::facts::{self, FactsError, FactsQuery};
use super::finding::Finding;
use super::llm::LlmClient;
use super::narrate::{NarrationInput, narrate};
use super::report::{Generator, Report};
use crate::config::Settings;

/// The figures of one day's narration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayEval {
    pub day: NaiveDate,
    pub generator: Generator,
    /// The first answer parsed and validated.
    pub valid_first_try: bool,
    /// Calls after the first.
    pub retries: u32,
    /// The rules wrote the report (the reason in `error`).
    pub fallback: bool,
    pub error: Option<String>,
    /// Grounding violations by the field they were written in.
    pub violations_by_field: BTreeMap<String, usize>,
    pub findings: usize,
    pub findings_mentioned: usize,
    /// `kind subject` of the findings the narrative does not mention.
    pub findings_omitted: Vec<String>,
    /// Parts of the facts left out of the prompt.
    pub left_out: usize,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    /// Wall time waiting for the model.
    pub llm_ms: u64,
    /// Wall time of the whole day (facts, detectors, narration).
    pub total_ms: u64,
}

/// Narrates every day from `from` to `to` (inclusive) and measures each.
pub async fn evaluate(
    settings: &Settings,
    client: &LlmClient,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DayEval>, FactsError> {
    let zone: Tz = settings.analyzer.time_zone.parse().unwrap_or(Tz::UTC);
    let ch = crate::store::client(&settings.clickhouse);
    let mut days = Vec::new();
    let mut day = from;
    while day <= to {
        let started = Instant::now();
        let query = FactsQuery {
            day,
            time_zone: zone,
            baseline_days: settings.analyzer.baseline_days,
            service: Some(settings.otel.service_name.clone()),
            burst_per_minute: settings.detectors.burst_per_minute,
        };
        let day_facts = facts::compute(&ch, &query, Utc::now()).await?;
        let findings = detect::detect(&day_facts, &settings.detectors);
        let input = NarrationInput {
            day,
            time_zone: &settings.analyzer.time_zone,
            facts: &day_facts,
            findings: &findings,
        };
        let narration = narrate(client, input).await;
        let mut violations_by_field = BTreeMap::new();
        for violation in &narration.violations {
            *violations_by_field
                .entry(violation.field.clone())
                .or_default() += 1;
        }
        let omitted: Vec<String> = findings
            .iter()
            .filter(|finding| !mentioned(&narration.report, finding))
            .map(describe)
            .collect();
        days.push(DayEval {
            day,
            generator: narration.generator,
            valid_first_try: narration.generator == Generator::Model && narration.calls == 1,
            retries: narration.calls.saturating_sub(1),
            fallback: narration.degraded,
            error: narration.error,
            violations_by_field,
            findings: findings.len(),
            findings_mentioned: findings.len() - omitted.len(),
            findings_omitted: omitted,
            left_out: narration.left_out.len(),
            prompt_tokens: narration.prompt_tokens,
            output_tokens: narration.output_tokens,
            llm_ms: narration.llm_ms,
            total_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        day = day.succ_opt().unwrap_or(NaiveDate::MAX);
        if day == NaiveDate::MAX {
            break;
        }
    }
    Ok(days)
}

/// The names of a finding's subject.
fn subject_names(finding: &Finding) -> Vec<&str> {
    let subject = &finding.subject;
    [
        &subject.source,
        &subject.endpoint,
        &subject.page,
        &subject.form_id,
        &subject.field,
        &subject.client_id,
    ]
    .into_iter()
    .filter_map(|name| name.as_deref())
    .filter(|name| !name.is_empty())
    .collect()
}

fn mentioned(report: &Report, finding: &Finding) -> bool {
    let mut text = format!(
        "{}\n{}\n{}",
        report.executive_summary, report.user_behavior, report.system_behavior
    );
    for signal in &report.misconfiguration_signals {
        text.push('\n');
        text.push_str(&signal.signal);
        text.push('\n');
        text.push_str(&signal.evidence);
    }
    let names = subject_names(finding);
    if names.is_empty() {
        let kind = finding.kind.as_str();
        let lower = text.to_lowercase();
        return lower.contains(kind) || lower.contains(&kind.replace('_', " "));
    }
    names.iter().any(|name| text.contains(name))
}

fn describe(finding: &Finding) -> String {
    let names = subject_names(finding);
    if names.is_empty() {
        finding.kind.as_str().to_owned()
    } else {
        format!("{} {}", finding.kind.as_str(), names.join("/"))
    }
}

/// A table of the days and a line of totals.
pub fn render(days: &[DayEval]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "day         generator  valid-1st  retries  fallback  violations  findings(mentioned)  left-out  tokens-in  tokens-out  llm-ms\n",
    );
    for d in days {
        let violations: usize = d.violations_by_field.values().sum();
        let _ = writeln!(
            out,
            "{}  {:<9}  {:<9}  {:>7}  {:<8}  {:>10}  {:>8} ({:>2})        {:>8}  {:>9}  {:>10}  {:>6}",
            d.day,
            d.generator.as_str(),
            d.valid_first_try,
            d.retries,
            d.fallback,
            violations,
            d.findings,
            d.findings_mentioned,
            d.left_out,
            d.prompt_tokens,
            d.output_tokens,
            d.llm_ms
        );
        for (field, count) in &d.violations_by_field {
            let _ = writeln!(out, "            violations in {field}: {count}");
        }
        if !d.findings_omitted.is_empty() {
            let _ = writeln!(
                out,
                "            not mentioned: {}",
                d.findings_omitted.join(", ")
            );
        }
        if let Some(error) = &d.error {
            let _ = writeln!(out, "            fallback because: {error}");
        }
    }
    let n = days.len().max(1);
    let first = days.iter().filter(|d| d.valid_first_try).count();
    let fallbacks = days.iter().filter(|d| d.fallback).count();
    let retries: u32 = days.iter().map(|d| d.retries).sum();
    let violations: usize = days
        .iter()
        .flat_map(|d| d.violations_by_field.values())
        .sum();
    let findings: usize = days.iter().map(|d| d.findings).sum();
    let mentioned: usize = days.iter().map(|d| d.findings_mentioned).sum();
    let llm_ms: u64 = days.iter().map(|d| d.llm_ms).sum();
    let _ = writeln!(
        out,
        "{} days: valid first try {first}, retries {retries}, fallbacks {fallbacks}, grounding violations {violations}, \
         findings mentioned {mentioned} of {findings}, mean model time {} ms",
        days.len(),
        llm_ms / n as u64
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{FindingKind, Severity, Subject};

    fn finding(kind: FindingKind, page: Option<&str>) -> Finding {
        Finding {
            kind,
            subject: Subject {
                page: page.map(str::to_owned),
                ..Subject::default()
            },
            severity: Severity::High,
            confidence: 1.0,
            summary: String::new(),
            evidence: BTreeMap::new(),
            window: None,
            interval: None,
            changes: Vec::new(),
        }
    }

    fn report(summary: &str) -> Report {
        serde_json::from_value(serde_json::json!({
            "executive_summary": summary, "user_behavior": "u", "system_behavior": "s",
            "misconfiguration_signals": [], "confidence": {"level": "low", "reasons": []},
            "scope": {"day": "2024-05-01", "time_zone": "UTC", "sources_covered": [],
                      "data_completeness": "complete", "not_analysed": []}
        }))
        .expect("a report")
    }

    #[test]
    fn a_finding_is_mentioned_by_its_subject_or_its_kind() {
        let page = finding(FindingKind::NewPage, Some("/partners/new-offer"));
        let outage = finding(FindingKind::DownstreamOutage, None);
        let text = report("Page /partners/new-offer was new; a downstream outage at noon.");
        assert!(mentioned(&text, &page));
        assert!(mentioned(&text, &outage));
        let silent = report("A quiet day.");
        assert!(!mentioned(&silent, &page));
        assert!(!mentioned(&silent, &outage));
        assert_eq!(describe(&page), "new_page /partners/new-offer");
    }
}
