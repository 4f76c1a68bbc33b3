//! Checks a report against the facts it was written from: every number it writes and
//! every name it gives a source, endpoint, page, form, field or client must be found in
//! the day's facts or findings.
//!
//! A model writes fluent text whether or not its numbers are right, and a wrong number
//! in a report reads exactly like a right one. The check cannot prove the text true; it
//! catches what was made up, and each catch lowers the report's confidence.
//!
//! What counts as written:
//! - numbers: integers, decimals, thousands separators (`1,234`) and percentages. A
//!   number is found if a number of the facts rounds to it at the precision written, or
//!   a rate (at most 1) of the facts does after × 100, so `12.5%` and `13%` both match
//!   a share of `0.125`. Dates, the day's own year, month and day-of-month, ordinals
//!   (`2nd`), status classes (`5xx`) and digits glued to letters (`p95`) are not counted.
//! - names: tokens starting with `/` (paths), containing `_`, written as `key=value`,
//!   or quoted as one word. They must appear, as written, among the strings and object
//!   keys of the facts and findings. `scope.sources_covered` must hold known names only.
//! - times: dates, timestamps, clock times and weekday names must lie in the analysed
//!   day or its baseline (see `time`).

mod time;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::finding::Finding;
use super::report::{ConfidenceLevel, MAX_REASONS, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViolationKind {
    Number,
    Name,
    /// A date, timestamp, clock time or weekday outside the day and its baseline.
    Time,
}

/// One number or name of the report not found in the facts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Violation {
    pub kind: ViolationKind,
    /// The number or name as written.
    pub text: String,
    /// Where it was written, e.g. `misconfiguration_signals[0].evidence`.
    pub field: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            ViolationKind::Number => "number",
            ViolationKind::Name => "name",
            ViolationKind::Time => "time",
        };
        write!(f, "{kind} {:?} in {}", self.text, self.field)
    }
}

/// Violations at or above this count make the confidence low.
const MANY_VIOLATIONS: usize = 3;

/// Quote characters opening or closing a name written as one quoted word.
const QUOTES: &str = "`'\"\u{2018}\u{2019}\u{201c}\u{201d}";
const OPENING: &str = "([{<\u{ab}";
const CLOSING: &str = ")]}>\u{bb},;:.!?";

/// Every number and name of the report's narrative not found in `facts` or `findings`.
pub fn check(report: &Report, facts: &Value, findings: &[Finding]) -> Vec<Violation> {
    let known = Known::collect(facts, findings);
    let exempt = day_numbers(&report.scope.day);
    let calendar = time::Calendar::new(&report.scope.day, &report.scope.time_zone, facts);
    let mut violations = Vec::new();
    for (field, text) in narrative(report) {
        check_text(&field, text, &known, &exempt, &mut violations);
        if let Some(calendar) = &calendar {
            let words: Vec<&str> = text.split_whitespace().map(trim_word).collect();
            for outside in calendar.outside(&words) {
                push_once(&mut violations, ViolationKind::Time, outside, &field);
            }
        }
    }
    for (i, source) in report.scope.sources_covered.iter().enumerate() {
        if !known.names.contains(source.as_str()) {
            violations.push(Violation {
                kind: ViolationKind::Name,
                text: source.clone(),
                field: format!("scope.sources_covered[{i}]"),
            });
        }
    }
    violations
}

/// Lowers the confidence for violations: any → at most medium, three or more → low,
/// with a reason saying why. The reasons hold no numbers of their own, so checking the
/// adjusted report again finds the same violations.
pub fn adjust_confidence(report: &mut Report, violations: &[Violation]) {
    if violations.is_empty() {
        return;
    }
    let cap = if violations.len() >= MANY_VIOLATIONS {
        ConfidenceLevel::Low
    } else {
        ConfidenceLevel::Medium
    };
    let confidence = &mut report.confidence;
    confidence.level = confidence.level.min(cap);
    let mut added = Vec::new();
    for (kind, reason) in [
        (
            ViolationKind::Number,
            "Some numbers in the text were not found in the day's facts.",
        ),
        (
            ViolationKind::Name,
            "Some names in the text were not found in the day's facts.",
        ),
        (
            ViolationKind::Time,
            "Some dates or times in the text lie outside the analysed day and its baseline.",
        ),
    ] {
        if violations.iter().any(|v| v.kind == kind) {
            added.push(reason.to_owned());
        }
    }
    let keep = MAX_REASONS.saturating_sub(added.len());
    confidence.reasons.truncate(keep);
    confidence.reasons.extend(added);
}

/// The report's free text, by field.
fn narrative(report: &Report) -> Vec<(String, &str)> {
    let mut fields = vec![
        (
            "executive_summary".to_owned(),
            report.executive_summary.as_str(),
        ),
        ("user_behavior".to_owned(), report.user_behavior.as_str()),
        (
            "system_behavior".to_owned(),
            report.system_behavior.as_str(),
        ),
    ];
    for (i, signal) in report.misconfiguration_signals.iter().enumerate() {
        fields.push((
            format!("misconfiguration_signals[{i}].signal"),
            &signal.signal,
        ));
        fields.push((
            format!("misconfiguration_signals[{i}].evidence"),
            &signal.evidence,
        ));
    }
    for (i, reason) in report.confidence.reasons.iter().enumerate() {
        fields.push((format!("confidence.reasons[{i}]"), reason));
    }
    fields.push((
        "scope.data_completeness".to_owned(),
        &report.scope.data_completeness,
    ));
    for (i, item) in report.scope.not_analysed.iter().enumerate() {
        fields.push((format!("scope.not_analysed[{i}]"), item));
    }
    fields
}

/// Numbers and names of the facts and findings.
#[derive(Debug, Default)]
struct Known {
    numbers: Vec<f64>,
    names: HashSet<String>,
}

impl Known {
    fn collect(facts: &Value, findings: &[Finding]) -> Self {
        let mut known = Self::default();
        known.add(facts);
        for finding in findings {
            // A Finding always serializes (string keys, finite or null numbers).
            if let Ok(value) = serde_json::to_value(finding) {
                known.add(&value);
            }
        }
        known
    }

    /// Strings count whole and word by word (a finding's summary names its subject as
    /// `page=/pricing`); object keys count too, as facts are often maps keyed by name.
    fn add(&mut self, value: &Value) {
        match value {
            Value::Number(number) => self.numbers.extend(number.as_f64().map(f64::abs)),
            Value::String(text) => self.add_text(text),
            Value::Array(items) => items.iter().for_each(|item| self.add(item)),
            Value::Object(fields) => {
                for (key, item) in fields {
                    self.add_text(key);
                    self.add(item);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn add_text(&mut self, text: &str) {
        self.names.insert(text.to_owned());
        for raw in text.split_whitespace() {
            let word = trim_word(raw);
            if let Some((key, value)) = word.split_once('=') {
                self.names.insert(key.to_owned());
                self.names.insert(value.to_owned());
            }
            self.names.insert(word.to_owned());
        }
        self.numbers.extend(digit_runs(text));
    }

    fn has_number(&self, written: &Written) -> bool {
        let tolerance = 0.5 * 10f64.powi(-written.decimals) + 1e-9;
        self.numbers.iter().any(|&known| {
            (known - written.value).abs() <= tolerance
                || (known <= 1.0 && (known * 100.0 - written.value).abs() <= tolerance)
        })
    }
}

/// Every number in a fact's text, read plainly (digits, then a fraction after a dot):
/// what a summary or a timestamp states (`2024-05-01T14:05:00Z` gives 14 and 5 among
/// others), whatever letters surround it.
fn digit_runs(text: &str) -> Vec<f64> {
    let chars: Vec<char> = text.chars().collect();
    let mut numbers = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let mut len = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            let fraction = chars
                .get(i + len + 1..)
                .unwrap_or_default()
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if chars.get(i + len) == Some(&'.') && fraction > 0 {
                len += 1 + fraction;
            }
            let run: String = chars[i..i + len].iter().collect();
            numbers.extend(run.parse::<f64>().ok());
            i += len;
        } else {
            i += 1;
        }
    }
    numbers
}

/// The day's year (and the one before, which a baseline may reach into), month and
/// day of month: a report names its own day in words ("May 1").
fn day_numbers(day: &str) -> Vec<f64> {
    let mut numbers: Vec<f64> = day
        .split('-')
        .filter_map(|part| part.parse::<f64>().ok())
        .collect();
    if let Some(&year) = numbers.first() {
        numbers.push(year - 1.0);
    }
    numbers
}

fn check_text(
    field: &str,
    text: &str,
    known: &Known,
    exempt: &[f64],
    violations: &mut Vec<Violation>,
) {
    for raw in text.split_whitespace() {
        let word = trim_word(raw);
        if word.is_empty() || is_date(word) || known.names.contains(word) {
            continue;
        }
        if let Some(name) = name_in(raw, word) {
            if !known.names.contains(name) {
                push_once(violations, ViolationKind::Name, name, field);
            }
            continue;
        }
        for written in written_numbers(word) {
            let is_day_part =
                written.decimals == 0 && !written.percent && exempt.contains(&written.value);
            if !is_day_part && !known.has_number(&written) {
                push_once(violations, ViolationKind::Number, &written.text, field);
            }
        }
    }
}

fn push_once(violations: &mut Vec<Violation>, kind: ViolationKind, text: &str, field: &str) {
    let violation = Violation {
        kind,
        text: text.to_owned(),
        field: field.to_owned(),
    };
    if !violations.contains(&violation) {
        violations.push(violation);
    }
}

/// A word without the punctuation around it (and without a possessive `'s`).
fn trim_word(raw: &str) -> &str {
    let word = raw
        .trim_start_matches(|c| QUOTES.contains(c) || OPENING.contains(c))
        .trim_end_matches(|c| QUOTES.contains(c) || CLOSING.contains(c));
    let word = word
        .strip_suffix("'s")
        .or_else(|| word.strip_suffix("\u{2019}s"))
        .unwrap_or(word);
    word.trim_end_matches(|c| QUOTES.contains(c) || CLOSING.contains(c))
}

/// The name a word gives, if it is written as one: a path, an identifier with `_`, the
/// value of `key=value`, or a quoted single word that is not a number.
fn name_in<'a>(raw: &str, word: &'a str) -> Option<&'a str> {
    if let Some((_, value)) = word.split_once('=') {
        return Some(value).filter(|value| !value.is_empty());
    }
    if word.starts_with('/') && word.len() > 1 || word.contains('_') {
        return Some(word);
    }
    let unpunctuated = raw.trim_end_matches(|c| CLOSING.contains(c));
    let quoted = raw.starts_with(|c| QUOTES.contains(c))
        && unpunctuated.ends_with(|c| QUOTES.contains(c))
        && unpunctuated.chars().count() > 1;
    let is_number = word
        .trim_end_matches('%')
        .replace(',', "")
        .parse::<f64>()
        .is_ok();
    (quoted && !is_number).then_some(word)
}

/// `YYYY-MM-DD…` (ISO, with or without a time), `DD.MM.YYYY` or `MM/DD/YYYY`.
fn is_date(word: &str) -> bool {
    let shape = |pattern: &str, text: &str| {
        text.len() == pattern.len()
            && pattern.chars().zip(text.chars()).all(|(p, c)| match p {
                'd' => c.is_ascii_digit(),
                _ => p == c,
            })
    };
    word.get(..10).is_some_and(|head| shape("dddd-dd-dd", head))
        || shape("dd.dd.dddd", word)
        || shape("dd/dd/dddd", word)
}

/// A number as written in the text.
#[derive(Debug, Clone, PartialEq)]
struct Written {
    text: String,
    value: f64,
    decimals: i32,
    percent: bool,
}

/// The numbers of one word, skipping digits glued to a letter before them (`p95`,
/// `v1`), ordinals (`2nd`) and status classes (`5xx`).
fn written_numbers(word: &str) -> Vec<Written> {
    let chars: Vec<char> = word.chars().collect();
    let mut numbers = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        if i > 0 && chars[i - 1].is_alphabetic() {
            i += glued_len(&chars[i..]);
            continue;
        }
        let (written, len) = read_number(&chars[i..]);
        let suffix: String = chars[i + len..]
            .iter()
            .take_while(|c| c.is_alphabetic())
            .collect();
        if !matches!(
            suffix.to_lowercase().as_str(),
            "st" | "nd" | "rd" | "th" | "xx"
        ) {
            numbers.extend(written);
        }
        i += len + suffix.chars().count();
    }
    numbers
}

/// Length of an identifier's tail: letters, digits and inner dots (`v1.2`).
fn glued_len(chars: &[char]) -> usize {
    let mut len = 0;
    while len < chars.len()
        && (chars[len].is_alphanumeric()
            || chars[len] == '.' && chars.get(len + 1).is_some_and(char::is_ascii_digit))
    {
        len += 1;
    }
    len
}

/// Reads `1,234.5%` from the start of `chars`: digits, groups of exactly three after a
/// comma, a fraction after a dot, a percent sign.
fn read_number(chars: &[char]) -> (Option<Written>, usize) {
    let digits_at = |at: usize| {
        chars[at.min(chars.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let mut len = digits_at(0);
    while chars.get(len) == Some(&',') && digits_at(len + 1) == 3 {
        len += 4;
    }
    let mut decimals = 0;
    if chars.get(len) == Some(&'.') && digits_at(len + 1) > 0 {
        decimals = digits_at(len + 1);
        len += 1 + decimals;
    }
    let percent = chars.get(len) == Some(&'%');
    let text: String = chars[..len + usize::from(percent)].iter().collect();
    let value = chars[..len]
        .iter()
        .filter(|&&c| c != ',')
        .collect::<String>()
        .parse::<f64>()
        .ok();
    let written = value.map(|value| Written {
        text,
        value,
        decimals: i32::try_from(decimals).unwrap_or(i32::MAX),
        percent,
    });
    (written, len + usize::from(percent))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::analyze::finding::{FindingKind, Severity, Subject};
    use crate::analyze::report::{Confidence, Scope};

    fn report(summary: &str) -> Report {
        Report {
            executive_summary: summary.to_owned(),
            user_behavior: "Steady.".into(),
            system_behavior: "Steady.".into(),
            misconfiguration_signals: vec![],
            confidence: Confidence {
                level: ConfidenceLevel::High,
                reasons: vec!["Complete data.".into()],
            },
            scope: Scope {
                day: "2024-05-01".into(),
                time_zone: "UTC".into(),
                sources_covered: vec!["quiz".into()],
                data_completeness: "complete".into(),
                not_analysed: vec![],
            },
        }
    }

    fn facts() -> Value {
        json!({
            "totals": {"attempts": 1234, "accepted": 1100, "failure_share": 0.125, "p95_ms": 830.4},
            "sources": [{"source": "quiz", "attempts": 700}, {"source": "web_form", "attempts": 534}],
            "pages": [{"page": "/pricing", "attempts": 12}],
        })
    }

    fn finding() -> Finding {
        Finding {
            kind: FindingKind::KeyMismatchCluster,
            subject: Subject {
                source: Some("partner".into()),
                client_id: Some("partner-eu-2".into()),
                ..Subject::default()
            },
            severity: Severity::Medium,
            confidence: 0.8,
            summary: "42 attempts from client=partner-eu-2 used the key of source=quiz.".into(),
            evidence: BTreeMap::from([("attempts".to_owned(), 42.0)]),
            window: Some(("2024-05-01T14:05:00Z".into(), "2024-05-01T14:20:00Z".into())),
            interval: None,
            changes: Vec::new(),
        }
    }

    fn violations(summary: &str) -> Vec<String> {
        check(&report(summary), &facts(), &[finding()])
            .into_iter()
            .map(|v| v.text)
            .collect()
    }

    #[test]
    fn numbers_of_the_facts_pass_in_any_common_notation() {
        let text = "On 2024-05-01 (May 1, 2024) 1,234 attempts came in; 1100 were accepted, \
                    12.5% (13%) failed, p95 was 830 ms or 830.4ms. 42 attempts between \
                    14:05 and 14:20 hit 5xx on the 2nd try.";
        assert_eq!(violations(text), Vec::<String>::new());
    }

    #[test]
    fn made_up_numbers_are_caught_at_the_precision_written() {
        assert_eq!(
            violations("1,250 attempts; 12.7% failed; 831 ms"),
            ["1,250", "12.7%", "831"]
        );
        assert_eq!(violations("830.5 ms"), ["830.5"]);
    }

    #[test]
    fn names_must_be_known() {
        assert_eq!(
            violations("Traffic on /pricing from `quiz` and web_form."),
            Vec::<String>::new()
        );
        assert_eq!(
            violations("Traffic on /checkout from `webinar`, client=partner-eu-3 and lead_magnet."),
            ["/checkout", "webinar", "partner-eu-3", "lead_magnet"]
        );
        assert_eq!(
            violations("client=partner-eu-2 and quiz's page /pricing."),
            Vec::<String>::new()
        );
    }

    #[test]
    fn times_outside_the_day_and_its_baseline_are_violations() {
        // 2024-05-01 was a Wednesday; the baseline is the seven days before.
        let found = check(
            &report("On Wednesday from 14:05, as since 2024-04-24; not on Friday or 2024-05-02."),
            &facts(),
            &[finding()],
        );
        let times: Vec<&str> = found
            .iter()
            .filter(|v| v.kind == ViolationKind::Time)
            .map(|v| v.text.as_str())
            .collect();
        assert_eq!(times, ["Friday", "2024-05-02"]);
        let mut report = report("x");
        adjust_confidence(&mut report, &found);
        assert!(report.validate().is_ok());
    }

    #[test]
    fn sources_covered_must_be_known() {
        let mut report = report("Quiet.");
        report.scope.sources_covered = vec!["quiz".into(), "webinar".into()];
        let found = check(&report, &facts(), &[finding()]);
        assert_eq!(
            found,
            [Violation {
                kind: ViolationKind::Name,
                text: "webinar".into(),
                field: "scope.sources_covered[1]".into(),
            }]
        );
    }

    #[test]
    fn every_narrative_field_is_checked() {
        let mut report = report("Quiet.");
        report.confidence.reasons.push("Only 3 sources.".into());
        report.scope.not_analysed.push("/admin".into());
        let fields: Vec<String> = check(&report, &facts(), &[])
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["confidence.reasons[1]", "scope.not_analysed[0]"]);
    }

    #[test]
    fn confidence_drops_with_violations() {
        let mut report = report("x");
        adjust_confidence(&mut report, &[]);
        assert_eq!(report.confidence.level, ConfidenceLevel::High);

        let one = Violation {
            kind: ViolationKind::Number,
            text: "7".into(),
            field: "executive_summary".into(),
        };
        adjust_confidence(&mut report, std::slice::from_ref(&one));
        assert_eq!(report.confidence.level, ConfidenceLevel::Medium);
        assert_eq!(report.confidence.reasons.len(), 2);

        let mut report = self::report("x");
        let name = Violation {
            kind: ViolationKind::Name,
            ..one.clone()
        };
        adjust_confidence(&mut report, &[one.clone(), one.clone(), name]);
        assert_eq!(report.confidence.level, ConfidenceLevel::Low);
        assert_eq!(report.confidence.reasons.len(), 3);
        assert!(report.validate().is_ok());
    }

    #[test]
    fn added_reasons_fit_the_bounds() {
        let mut report = report("x");
        report.confidence.reasons = vec!["r".into(); MAX_REASONS];
        let violation = Violation {
            kind: ViolationKind::Name,
            text: "x".into(),
            field: "executive_summary".into(),
        };
        adjust_confidence(&mut report, &[violation]);
        assert_eq!(report.confidence.reasons.len(), MAX_REASONS);
        assert!(report.validate().is_ok());
    }

    #[test]
    fn written_numbers_are_read_as_written() {
        let read = |word: &str| -> Vec<(f64, i32, bool)> {
            written_numbers(word)
                .into_iter()
                .map(|w| (w.value, w.decimals, w.percent))
                .collect()
        };
        assert_eq!(read("1,234.50%"), [(1234.5, 2, true)]);
        assert_eq!(read("10,20"), [(10.0, 0, false), (20.0, 0, false)]);
        assert_eq!(
            read("14:05–14:20"),
            [
                (14.0, 0, false),
                (5.0, 0, false),
                (14.0, 0, false),
                (20.0, 0, false)
            ]
        );
        assert_eq!(read("p95"), []);
        assert_eq!(read("v1.2"), []);
        assert_eq!(read("3rd"), []);
        assert_eq!(read("830ms"), [(830.0, 0, false)]);
    }
}
