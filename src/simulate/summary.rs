//! What a run sent and what the service answered, counted the way `lead_submissions`
//! counts attempts, so the two can be compared row for row; and the ground truth of the
//! incidents the run injected, for the analyzer's tests.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::plan::Window;

/// Attempts per (local day, source, outcome, reason).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub attempts: BTreeMap<String, u64>,
}

impl Summary {
    pub fn add(&mut self, day: NaiveDate, source: &str, outcome: &str, reason: &str) {
        *self
            .attempts
            .entry(key(day, source, outcome, reason))
            .or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.attempts.values().sum()
    }

    /// Totals grouped by one part of the key: 0 day, 1 source, 2 outcome, 3 reason.
    pub fn by(&self, part: usize) -> BTreeMap<String, u64> {
        let mut totals = BTreeMap::new();
        for (key, count) in &self.attempts {
            let part = key.split('|').nth(part).unwrap_or_default().to_owned();
            *totals.entry(part).or_default() += count;
        }
        totals
    }

    /// `accepted 120 · rejected 14 · failed 2`, for the progress bar.
    pub fn outcome_line(&self) -> String {
        self.by(2)
            .iter()
            .map(|(outcome, n)| format!("{outcome} {n}"))
            .collect::<Vec<_>>()
            .join(" · ")
    }

    /// The end-of-run report for a person.
    pub fn render(&self) -> String {
        let mut text = format!(
            "sent {} attempts in {} requests\n",
            self.total(),
            self.requests
        );
        for (title, part) in [("by outcome", 2), ("by source", 1), ("by day", 0)] {
            text.push_str(&format!("{title}:\n"));
            for (name, n) in self.by(part) {
                text.push_str(&format!("  {name:<24} {n:>8}\n"));
            }
        }
        text
    }
}

/// `day|source|outcome|reason`: flat keys keep the JSON file readable and diffable.
pub fn key(day: NaiveDate, source: &str, outcome: &str, reason: &str) -> String {
    format!("{day}|{source}|{outcome}|{reason}")
}

/// One injected incident, as the analyzer should see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthEntry {
    pub kind: String,
    pub day: NaiveDate,
    pub start: String,
    pub end: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The analyzer finding kind this incident must produce.
    pub expected_finding: String,
    pub expected_effect: String,
}

pub fn ground_truth(windows: &[Window<'_>]) -> Vec<TruthEntry> {
    windows
        .iter()
        .map(|w| TruthEntry {
            kind: serde_json::to_value(w.incident.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            day: w.day,
            start: w.start.to_rfc3339(),
            end: w.end.to_rfc3339(),
            source: w.incident.source.clone(),
            key_of: w.incident.key_of.clone(),
            page: w.incident.page.clone(),
            field: w.incident.field.clone(),
            expected_finding: w.incident.kind.expected_finding().to_owned(),
            expected_effect: w.incident.kind.expected_effect().to_owned(),
        })
        .collect()
}
