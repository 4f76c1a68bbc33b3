//! The two messages the model gets: rules of the task (system) and the day's facts and
//! findings (user).
//!
//! The facts hold only counts, rates and closed-set names, never a lead's data. Because
//! the prompt leaves the process, it is checked anyway: a string that looks like an email
//! address or a phone number anywhere in the input stops the prompt from being built.

use serde_json::Value;

use super::budget::{self, Compacted};
use super::finding::Finding;
use super::llm::{CHARS_PER_TOKEN, Message};
use super::report::{
    self, MAX_COMPLETENESS_CHARS, MAX_EVIDENCE_CHARS, MAX_NOT_ANALYSED, MAX_REASON_CHARS,
    MAX_REASONS, MAX_SECTION_CHARS, MAX_SIGNAL_CHARS, MAX_SIGNALS, MAX_SUMMARY_CHARS,
};

/// The task, stated once. Kept observational: the report is read as a record of the day,
/// so guesses about tomorrow or advice would be read as facts.
const SYSTEM_RULES: &str = "\
You describe one calendar day of a lead submission service for its operators.
Rules:
- Describe only what happened on that day, from the facts and findings given. Do not predict, do not recommend, do not speculate about causes beyond what a finding states.
- Use cautious wording (\"the data shows\", \"consistent with\").
- Every number you write must appear in the facts or findings, written the same way (a share of 0.125 may be written 12.5%). Do not compute new numbers, totals or differences.
- Name sources, endpoints, pages, forms, fields and clients exactly as they are written in the facts.
- misconfiguration_signals restate findings that point to a setup problem (wrong or unknown keys, failures concentrated on one page or field, pages never seen before); leave it empty if there are none.
- confidence.level is low, medium or high, with short reasons based on how complete the data is.
- scope.day and scope.time_zone are the day and time zone given; scope.sources_covered lists the sources present in the facts.
- Answer with a single JSON object following the schema below, and nothing else.";

/// The rules, the schema (the model never sees Ollama's `format`: it only constrains
/// sampling) and the length limits, which the schema leaves out.
fn system_message() -> String {
    format!(
        "{SYSTEM_RULES}\n\nJSON Schema of the answer:\n{schema}\n\nLimits: executive_summary at most \
         {MAX_SUMMARY_CHARS} characters; user_behavior and system_behavior at most \
         {MAX_SECTION_CHARS} each; at most {MAX_SIGNALS} misconfiguration_signals, each signal \
         at most {MAX_SIGNAL_CHARS} characters and its evidence at most {MAX_EVIDENCE_CHARS}; \
         at most {MAX_REASONS} confidence reasons of at most {MAX_REASON_CHARS} characters; \
         data_completeness at most {MAX_COMPLETENESS_CHARS}; at most {MAX_NOT_ANALYSED} \
         not_analysed entries. An answer over a limit is discarded.",
        schema = report::json_schema(),
    )
}

/// Input of the prompt: the serialized day facts and the detectors' findings.
#[derive(Debug, Clone, Copy)]
pub struct PromptInput<'a> {
    /// The calendar day, `YYYY-MM-DD`.
    pub day: &'a str,
    pub time_zone: &'a str,
    pub facts: &'a Value,
    pub findings: &'a [Finding],
}

/// What looked like personal data, and where. The value itself is never repeated: the
/// error ends up in logs and in the run's record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    #[error("refusing to build the prompt: {what} at {path}")]
    PersonalData { what: &'static str, path: String },
    #[error("cannot serialize the findings: {0}")]
    Findings(String),
    #[error("the model's context ({window} tokens) is too small for the day: {reason}")]
    ContextTooSmall { window: usize, reason: String },
}

/// Tokens kept free beyond the prompt's estimate and the answer: the chat template's
/// own tokens and the note a retry adds (at most [`MAX_RETRY_NOTE_CHARS`]).
const RESERVED_TOKENS: usize = 256;

/// Longest note a retry appends to the conversation.
pub const MAX_RETRY_NOTE_CHARS: usize = 400;

/// Room kept in the user message for the list of what was left out.
const LEFT_OUT_CHARS: usize = 800;

/// A prompt sized to a context, and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub messages: Vec<Message>,
    /// The facts, findings and omissions the model was shown: what its report is
    /// checked against.
    pub shown: Compacted,
}

/// The system and user messages for one day, with everything in it (no context limit).
pub fn build(input: PromptInput<'_>) -> Result<Vec<Message>, PromptError> {
    build_within(input, usize::MAX / 4, 0).map(|prompt| prompt.messages)
}

/// The system and user messages for one day, the facts compacted so that prompt and
/// answer fit `window` tokens (see [`budget`]); what was left out is listed in the
/// prompt. Personal data anywhere in the input refuses the whole prompt.
pub fn build_within(
    input: PromptInput<'_>,
    window: usize,
    output_tokens: usize,
) -> Result<Prompt, PromptError> {
    check_input(input)?;
    let system = Message::system(system_message());
    let frame = user_message(input.day, input.time_zone, "", "", &[]).len();
    let user_tokens = window
        .saturating_sub(output_tokens + RESERVED_TOKENS)
        .saturating_sub(system.estimated_tokens());
    let budget = user_tokens
        .saturating_mul(CHARS_PER_TOKEN)
        .saturating_sub(frame + LEFT_OUT_CHARS);
    let shown = budget::compact(input.facts, input.findings, budget).map_err(|err| {
        PromptError::ContextTooSmall {
            window,
            reason: err.to_string(),
        }
    })?;
    let user = user_message(
        input.day,
        input.time_zone,
        &compact_json(&shown.facts),
        &compact_json(&shown.findings),
        &shown.left_out,
    );
    Ok(Prompt {
        messages: vec![system, Message::user(user)],
        shown,
    })
}

/// Refuses input with anything that looks like personal data, before anything is sent.
pub fn check_input(input: PromptInput<'_>) -> Result<(), PromptError> {
    let findings = serde_json::to_value(input.findings)
        .map_err(|err| PromptError::Findings(err.to_string()))?;
    refuse_personal_data(input.facts, "facts")?;
    refuse_personal_data(&findings, "findings")?;
    refuse_personal_data(&Value::String(input.day.to_owned()), "day")?;
    refuse_personal_data(&Value::String(input.time_zone.to_owned()), "time_zone")
}

fn user_message(
    day: &str,
    time_zone: &str,
    facts: &str,
    findings: &str,
    left_out: &[String],
) -> String {
    let left_out = if left_out.is_empty() {
        String::new()
    } else {
        format!(
            "\n\nLeft out of these facts to fit the model's context (mention this in scope.not_analysed): {}.",
            left_out.join("; ")
        )
    };
    format!(
        "Day: {day} (time zone {time_zone}).\n\nFacts of the day (JSON):\n{facts}\n\nFindings of the detectors (JSON):\n{findings}{left_out}\n\nWrite the report for {day} as one JSON object."
    )
}

/// The note a retry adds: why the previous answer was refused.
pub fn retry_note(reason: &str) -> String {
    let mut reason: String = reason.chars().take(MAX_RETRY_NOTE_CHARS - 120).collect();
    if reason.len() < MAX_RETRY_NOTE_CHARS - 120 {
        reason.push('.');
    }
    format!(
        "Your previous answer was refused: {reason} Write the report again as one JSON object that follows the schema and the limits."
    )
}

/// Compact JSON: a small model's context holds about a third more facts than pretty
/// printing allows, and the model reads it as well.
fn compact_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Keys whose values are truncated hashes: 12 hex characters are all decimal digits
/// about once in 300 ids, which would read as a phone number and refuse a clean day.
const HASH_KEYS: [&str; 1] = ["submitter_id"];

/// Walks every string and object key of `value`.
fn refuse_personal_data(value: &Value, path: &str) -> Result<(), PromptError> {
    match value {
        Value::String(text) => check_text(text, path, true),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| refuse_personal_data(item, &format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            let at = format!("{path}.{key}");
            check_text(key, &at, true)?;
            match item {
                Value::String(hash) if HASH_KEYS.contains(&key.as_str()) => {
                    check_text(hash, &at, false)
                }
                _ => refuse_personal_data(item, &at),
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// `phones: false` skips the phone check (hash values); emails are always looked for.
fn check_text(text: &str, path: &str, phones: bool) -> Result<(), PromptError> {
    let what = if contains_email(text) {
        "an email address"
    } else if phones && contains_phone(text) {
        "a phone number"
    } else {
        return Ok(());
    };
    Err(PromptError::PersonalData {
        what,
        path: path.to_owned(),
    })
}

/// `local@domain.tld`: a non-empty local part, and a domain with a dot followed by at
/// least two letters.
pub fn contains_email(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chars
        .iter()
        .enumerate()
        .any(|(at, &c)| c == '@' && has_local_part(&chars[..at]) && has_domain(&chars[at + 1..]))
}

fn has_local_part(before: &[char]) -> bool {
    before
        .last()
        .is_some_and(|&c| c.is_alphanumeric() || "._%+-".contains(c))
}

fn has_domain(after: &[char]) -> bool {
    let domain: String = after
        .iter()
        .take_while(|&&c| c.is_alphanumeric() || c == '.' || c == '-')
        .collect();
    let domain = domain.trim_end_matches('.');
    match domain.rsplit_once('.') {
        Some((host, tld)) => {
            !host.is_empty() && tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic)
        }
        None => false,
    }
}

/// Digits that can make a phone number (9 to 15 of them, E.164's range), separated only
/// by spaces, dashes, dots, slashes or parentheses, and not glued to a letter (an id or
/// a path) or followed by a colon (a time of day).
pub fn contains_phone(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let mut start = 0;
    while start < chars.len() {
        if !is_phone_char(chars[start]) {
            start += 1;
            continue;
        }
        let len = chars[start..]
            .iter()
            .take_while(|&&c| is_phone_char(c))
            .count();
        if looks_like_phone(&chars, start, start + len) {
            return true;
        }
        start += len;
    }
    false
}

fn is_phone_char(c: char) -> bool {
    c.is_ascii_digit() || " +-.()/".contains(c)
}

/// Whether `chars[start..end]`, a run of phone characters, is one. Spaces at its ends
/// belong to the surrounding text, so they are dropped before looking at neighbours.
fn looks_like_phone(chars: &[char], mut start: usize, mut end: usize) -> bool {
    while start < end && chars[start] == ' ' {
        start += 1;
    }
    while end > start && chars[end - 1] == ' ' {
        end -= 1;
    }
    let digits = chars[start..end]
        .iter()
        .filter(|c| c.is_ascii_digit())
        .count();
    let before = start.checked_sub(1).and_then(|i| chars.get(i));
    let after = chars.get(end);
    let glued_before = before.is_some_and(|&c| c.is_alphanumeric() || "_@".contains(c));
    let glued_after = after.is_some_and(|&c| c.is_alphanumeric() || ":_@".contains(c));
    (9..=15).contains(&digits) && !glued_before && !glued_after
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn input<'a>(facts: &'a Value, findings: &'a [Finding]) -> PromptInput<'a> {
        PromptInput {
            day: "2024-05-01",
            time_zone: "Europe/Berlin",
            facts,
            findings,
        }
    }

    #[test]
    fn builds_a_system_and_a_user_message() {
        let facts = json!({"totals": {"attempts": 120}, "sources": [{"source": "quiz"}]});
        let messages = build(input(&facts, &[])).expect("clean input");
        assert_eq!(messages.len(), 2);
        assert!(messages[0].content.contains("Do not predict"));
        assert!(messages[0].content.contains("\"executive_summary\""));
        assert!(messages[0].content.contains("at most 1500 characters"));
        assert!(messages[1].content.contains("2024-05-01"));
        assert!(messages[1].content.contains("Europe/Berlin"));
        assert!(messages[1].content.contains("\"quiz\""));
    }

    #[test]
    fn a_small_window_compacts_the_facts_and_says_what_is_left_out() {
        let forms: Vec<Value> = (0..400)
            .map(|i| json!({"name": format!("form-{i}"), "attempts": 1000 - i}))
            .collect();
        let facts = json!({"totals": {"attempts": 120}, "by_form": forms});
        let prompt = build_within(input(&facts, &[]), 4096, 1024).expect("clean input");
        let tokens: usize = prompt.messages.iter().map(Message::estimated_tokens).sum();
        assert!(tokens + 1024 <= 4096, "{tokens} tokens");
        assert_eq!(prompt.shown.left_out.len(), 1);
        assert!(prompt.shown.left_out[0].ends_with(" of 400)"));
        assert!(
            prompt.messages[1]
                .content
                .contains("Left out of these facts")
        );
        assert!(prompt.messages[1].content.contains("\"form-0\""));
        assert!(!prompt.messages[1].content.contains("\"form-399\""));
        let full = build_within(input(&facts, &[]), 1 << 20, 1024).expect("clean input");
        assert!(full.shown.left_out.is_empty());
        let err = build_within(input(&facts, &[]), 1024, 256).expect_err("too small");
        assert!(
            matches!(err, PromptError::ContextTooSmall { window: 1024, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_retry_note_is_bounded() {
        let note = retry_note(&"x".repeat(5000));
        assert!(note.len() <= MAX_RETRY_NOTE_CHARS, "{}", note.len());
        assert!(retry_note("scope.day is empty").contains("scope.day is empty."));
    }

    #[test]
    fn refuses_an_email_address_without_repeating_it() {
        let facts = json!({"sources": [{"source": "quiz", "note": "from ada@example.com"}]});
        let err = build(input(&facts, &[])).expect_err("email");
        assert_eq!(
            err,
            PromptError::PersonalData {
                what: "an email address",
                path: "facts.sources[0].note".into()
            }
        );
        assert!(!err.to_string().contains("ada@"));
    }

    #[test]
    fn refuses_a_phone_number_even_in_a_key() {
        let facts = json!({"by_client": {"+49 30 1234567": 3}});
        let err = build(input(&facts, &[])).expect_err("phone");
        assert!(matches!(
            err,
            PromptError::PersonalData {
                what: "a phone number",
                ..
            }
        ));
    }

    #[test]
    fn all_digit_submitter_hashes_are_not_phone_numbers() {
        let facts = json!({"submitters": {"high_activity": [{"submitter_id": "123456789012"}]}});
        assert!(build(input(&facts, &[])).is_ok());
        let facts = json!({"submitters": {"high_activity": [{"submitter_id": "ada@example.com"}]}});
        assert!(build(input(&facts, &[])).is_err());
    }

    #[test]
    fn emails_are_told_from_other_at_signs() {
        assert!(contains_email("ada.l+x@mail.example.org"));
        assert!(contains_email("<ADA@EXAMPLE.DE>"));
        assert!(!contains_email("@handle"));
        assert!(!contains_email("user@localhost"));
        assert!(!contains_email("v1@2024.05"));
        assert!(!contains_email("a @ b.com"));
    }

    #[test]
    fn phones_are_told_from_dates_times_and_ids() {
        assert!(contains_phone("+1 (555) 123-4567"));
        assert!(contains_phone("030/1234567"));
        assert!(contains_phone("call 0151 23456789 now"));
        assert!(contains_phone("Tel:+49 30 1234567"));
        assert!(!contains_phone("2024-05-01T10:00:00Z"));
        assert!(!contains_phone("2024-05-01 10:00:00"));
        assert!(!contains_phone("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!contains_phone("client-123456789"));
        assert!(!contains_phone("/v1/forms/123456789abc"));
        assert!(!contains_phone("12.5% of 1234 attempts"));
    }
}
