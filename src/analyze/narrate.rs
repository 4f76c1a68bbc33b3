//! Asks the model to narrate the day and decides what is stored: the model's report,
//! checked against the facts, or the rules' report when the model cannot deliver one.
//!
//! The prompt is sized to the model's context first (`prompt::build_within`): what did
//! not fit is listed in the prompt and in the report's `scope.not_analysed`.
//!
//! One call, plus one more when the answer was unusable (cut off, not JSON, not the
//! schema, outside the bounds the grammar cannot enforce): the retry tells the model why
//! its answer was refused, since with temperature 0 and a fixed seed the same request
//! would give the same answer. A missing model, an unreachable or overloaded server, or
//! a timeout ends the narration at once with the rules' report: retrying those, with
//! backoff, is the analysis job's business.

use std::time::Instant;

use chrono::NaiveDate;
use serde_json::Value;
use tracing::Instrument as _;
use tracing::field::Empty;

use super::budget::Compacted;
use super::facts::DayFacts;
use super::finding::Finding;
use super::grounding::{self, Violation};
use super::llm::{ChatRequest, LlmClient, LlmError, Message, TEMPERATURE};
use super::prompt::{self, PromptInput};
use super::report::{
    self, Generator, MAX_NOT_ANALYSED, MAX_NOT_ANALYSED_CHARS, Report, ReportError,
};
use super::rules;

/// Calls per narration: the first, and one retry after an unusable answer.
pub const CALLS: u32 = 2;

/// What the day is narrated from.
#[derive(Debug, Clone, Copy)]
pub struct NarrationInput<'a> {
    pub day: NaiveDate,
    pub time_zone: &'a str,
    pub facts: &'a DayFacts,
    pub findings: &'a [Finding],
}

/// The stored outcome of a narration.
#[derive(Debug, Clone, PartialEq)]
pub struct Narration {
    pub report: Report,
    pub generator: Generator,
    /// The model that answered, or the one asked when none did.
    pub model: String,
    /// Numbers and names of the report not found in the facts (already reflected in
    /// its confidence).
    pub violations: Vec<Violation>,
    /// Summed over the calls made.
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    /// Wall time spent waiting for the model, over the calls made.
    pub llm_ms: u64,
    /// Why the rules wrote the report (`None` when the model did).
    pub error: Option<String>,
    /// The rules wrote the report because the model could not.
    pub degraded: bool,
    /// Chat calls made (0 when the server could not be asked at all).
    pub calls: u32,
    /// Why each refused answer was refused, in order.
    pub refusals: Vec<String>,
    /// What was left out of the prompt to fit the model's context.
    pub left_out: Vec<String>,
    /// The context the prompt was sized to (0 when unknown: the server was not reached).
    pub context_window: u32,
}

/// Usage over the calls of one narration.
#[derive(Debug, Default)]
struct Usage {
    prompt_tokens: u32,
    output_tokens: u32,
    llm_ms: u64,
    calls: u32,
    refusals: Vec<String>,
    left_out: Vec<String>,
    context_window: u32,
}

/// Why a call gave no report.
enum Failure {
    /// The answer was unusable: asking again may help.
    BadOutput(String),
    /// The server or the setup failed: asking again now will not help.
    Server(String),
}

/// Never fails: when the model cannot narrate, the rules do, and the narration says why.
pub async fn narrate(client: &LlmClient, input: NarrationInput<'_>) -> Narration {
    let mut usage = Usage::default();
    let day = input.day.format("%Y-%m-%d").to_string();
    // The model is shown the facts as JSON, and its report is checked against them.
    let facts = match serde_json::to_value(input.facts) {
        Ok(facts) => facts,
        Err(err) => return fallback(client, &input, &Value::Null, usage, err.to_string()),
    };
    let prompt_input = PromptInput {
        day: &day,
        time_zone: input.time_zone,
        facts: &facts,
        findings: input.findings,
    };
    // Personal data stops everything before the server is even asked about the model.
    if let Err(err) = prompt::check_input(prompt_input) {
        return fallback(client, &input, &facts, usage, err.to_string());
    }
    let window = match client.context_window().await {
        Ok(window) => window,
        Err(err) => return fallback(client, &input, &facts, usage, err.to_string()),
    };
    usage.context_window = window;
    let max_output_tokens = client.output_tokens(window);
    let prompt =
        match prompt::build_within(prompt_input, window as usize, max_output_tokens as usize) {
            Ok(prompt) => prompt,
            Err(err) => return fallback(client, &input, &facts, usage, err.to_string()),
        };
    usage.left_out.clone_from(&prompt.shown.left_out);
    let sources = source_names(input.facts);
    let mut request = ChatRequest {
        messages: prompt.messages,
        format: Some(report::json_schema_for(&sources, max_output_tokens)),
        max_output_tokens,
    };
    let shown = Shown {
        facts: &prompt.shown,
        sources: &sources,
    };
    for _ in 0..CALLS {
        match call(client, &input, &shown, &request, &mut usage).await {
            Ok((report, model)) => return from_model(report, model, &shown, usage),
            Err(Failure::BadOutput(why)) => {
                request.messages.truncate(2);
                request
                    .messages
                    .push(Message::user(prompt::retry_note(&why)));
                usage.refusals.push(why);
            }
            Err(Failure::Server(why)) => return fallback(client, &input, &facts, usage, why),
        }
    }
    let why = format!(
        "the model's answer was unusable {CALLS} times: {}",
        usage.refusals.join("; ")
    );
    fallback(client, &input, &facts, usage, why)
}

/// What the model was shown: the report is checked against this, not the full facts.
struct Shown<'a> {
    facts: &'a Compacted,
    sources: &'a [String],
}

/// The names of the day's sources (`by_source`), the only values `sources_covered` takes.
fn source_names(facts: &DayFacts) -> Vec<String> {
    facts
        .by_source
        .iter()
        .map(|source| source.name.clone())
        .filter(|name| !name.is_empty())
        .collect()
}

/// One chat call in its own client span, and the strict parse of its answer.
async fn call(
    client: &LlmClient,
    input: &NarrationInput<'_>,
    shown: &Shown<'_>,
    request: &ChatRequest,
    usage: &mut Usage,
) -> Result<(Report, String), Failure> {
    let span = chat_span(client, request);
    let started = Instant::now();
    let answer = client.chat(request).instrument(span.clone()).await;
    usage.llm_ms += u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    usage.calls += 1;
    match answer {
        Ok(answer) => {
            let prompt_tokens = answer.prompt_tokens.unwrap_or(0);
            let output_tokens = answer.output_tokens.unwrap_or(0);
            usage.prompt_tokens = usage.prompt_tokens.saturating_add(prompt_tokens);
            usage.output_tokens = usage.output_tokens.saturating_add(output_tokens);
            span.record("gen_ai.response.model", answer.model.as_str());
            span.record("gen_ai.usage.input_tokens", i64::from(prompt_tokens));
            span.record("gen_ai.usage.output_tokens", i64::from(output_tokens));
            if let Some(err) = answer.stopped_early() {
                mark_failed(&span, err.kind());
                Err(failure(&err, request.max_output_tokens))
            } else {
                parse(&answer.content, input, shown.sources)
                    .map(|report| (report, answer.model))
                    .map_err(|err| {
                        mark_failed(&span, "invalid_report");
                        Failure::BadOutput(err.to_string())
                    })
            }
        }
        Err(err) => {
            mark_failed(&span, err.kind());
            Err(failure(&err, request.max_output_tokens))
        }
    }
}

/// The answer as a report, strictly: the schema, then (with the day and time zone set
/// to the ones asked about: they are ours, not the model's to state) the bounds.
fn parse(
    content: &str,
    input: &NarrationInput<'_>,
    sources: &[String],
) -> Result<Report, ReportError> {
    let mut report: Report = serde_json::from_str(content)?;
    report.scope.day = input.day.format("%Y-%m-%d").to_string();
    report.scope.time_zone = input.time_zone.to_owned();
    report.validate()?;
    report.validate_sources(sources)?;
    Ok(report)
}

fn failure(err: &LlmError, max_output_tokens: u32) -> Failure {
    match err {
        LlmError::DoneReason(reason) if reason == "length" => Failure::BadOutput(format!(
            "{err}: the answer was cut off at {max_output_tokens} tokens, keep every text short"
        )),
        _ if err.is_bad_output() => Failure::BadOutput(err.to_string()),
        _ => Failure::Server(err.to_string()),
    }
}

/// The GenAI semantic-convention span of one call. What was asked and how much, never
/// the prompt or the answer: those stay in the analyzer's own tables.
fn chat_span(client: &LlmClient, request: &ChatRequest) -> tracing::Span {
    tracing::info_span!(
        "chat",
        otel.name = %format_args!("chat {}", client.model()),
        otel.kind = "client",
        gen_ai.system = client.provider().as_str(),
        gen_ai.operation.name = "chat",
        gen_ai.request.model = client.model(),
        gen_ai.request.temperature = TEMPERATURE,
        gen_ai.request.seed = client.seed(),
        gen_ai.request.max_tokens = i64::from(request.max_output_tokens),
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    )
}

/// Marks the span failed with a closed-set `error.type` (no message: it may quote the
/// answer).
fn mark_failed(span: &tracing::Span, kind: &'static str) {
    span.record("error.type", kind);
    span.record("otel.status_code", "error");
    span.record("otel.status_message", kind);
}

/// The model's report, its confidence lowered by grounding violations. The check is
/// against what the model was shown; what was left out is then added to the scope.
fn from_model(mut report: Report, model: String, shown: &Shown<'_>, usage: Usage) -> Narration {
    let facts = &shown.facts.facts;
    let violations = grounding::check(&report, facts, &shown.facts.findings);
    grounding::adjust_confidence(&mut report, &violations);
    note_left_out(&mut report, &usage.left_out);
    narration(report, Generator::Model, model, violations, usage, None)
}

/// The rules' report, marked degraded with the reason. Checked like the model's, so a
/// rule that ever writes an ungrounded number shows up in the stored violations.
fn fallback(
    client: &LlmClient,
    input: &NarrationInput<'_>,
    facts: &Value,
    usage: Usage,
    why: String,
) -> Narration {
    tracing::warn!(day = %input.day, error = %why, "the model did not narrate the day; using the rules' report");
    let report = rules::report_from_rules(input.facts, input.findings, input.day, input.time_zone);
    let violations = grounding::check(&report, facts, input.findings);
    narration(
        report,
        Generator::Rules,
        client.model().to_owned(),
        violations,
        usage,
        Some(why),
    )
}

fn narration(
    report: Report,
    generator: Generator,
    model: String,
    violations: Vec<Violation>,
    usage: Usage,
    error: Option<String>,
) -> Narration {
    Narration {
        report,
        generator,
        model,
        violations,
        prompt_tokens: usage.prompt_tokens,
        output_tokens: usage.output_tokens,
        llm_ms: usage.llm_ms,
        degraded: error.is_some(),
        error,
        calls: usage.calls,
        refusals: usage.refusals,
        left_out: usage.left_out,
        context_window: usage.context_window,
    }
}

/// Adds one `scope.not_analysed` entry naming what the prompt left out, within the
/// report's bounds (the model's own last entry gives way when the list is full).
pub fn note_left_out(report: &mut Report, left_out: &[String]) {
    if left_out.is_empty() {
        return;
    }
    let prefix = "left out of the model's prompt to fit its context: ";
    let mut note = String::from(prefix);
    for (i, item) in left_out.iter().enumerate() {
        let more = format!(" and {} more", left_out.len() - i);
        let sep = if i == 0 { "" } else { "; " };
        if note.chars().count() + sep.len() + item.chars().count() + more.len() + 8
            > MAX_NOT_ANALYSED_CHARS
        {
            note.push_str(&more);
            break;
        }
        note.push_str(sep);
        note.push_str(item);
    }
    let items = &mut report.scope.not_analysed;
    items.truncate(MAX_NOT_ANALYSED - 1);
    items.push(note);
}
