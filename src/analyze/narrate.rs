//! Asks the model to narrate the day and decides what is stored: the model's report,
//! checked against the facts, or the rules' report when the model cannot deliver one.
//!
//! One call, plus one more when the answer was unusable (cut off, not JSON, not the
//! schema): with temperature 0 and a fixed seed the second answer is usually the same,
//! but a sampling or server hiccup is not, and one retry is cheap. A missing model, an
//! unreachable or overloaded server, or a timeout ends the narration at once with the
//! rules' report: retrying those, with backoff, is the analysis job's business.

use std::time::Instant;

use chrono::NaiveDate;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use serde_json::Value;

use super::finding::Finding;
use super::grounding::{self, Violation};
use super::ollama::{ChatRequest, OllamaClient, OllamaError, TEMPERATURE};
use super::prompt::{self, PromptInput};
use super::report::{self, Generator, Report, ReportError};
use super::rules;

/// Calls per narration: the first, and one retry after an unusable answer.
const CALLS: u32 = 2;

/// Tokens the answer may take. A typical report is under 1,000; the bounds of
/// [`Report`] allow more, and an answer cut off here is unusable anyway.
const MAX_OUTPUT_TOKENS: u32 = 3072;

/// What the day is narrated from.
#[derive(Debug, Clone, Copy)]
pub struct NarrationInput<'a> {
    pub day: NaiveDate,
    pub time_zone: &'a str,
    /// The serialized `DayFacts`.
    pub facts: &'a Value,
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
}

/// Usage over the calls of one narration.
#[derive(Debug, Default)]
struct Usage {
    prompt_tokens: u32,
    output_tokens: u32,
    llm_ms: u64,
}

/// Why a call gave no report.
enum Failure {
    /// The answer was unusable: asking again may help.
    BadOutput(String),
    /// The server or the setup failed: asking again now will not help.
    Server(String),
}

/// Never fails: when the model cannot narrate, the rules do, and the narration says why.
pub async fn narrate(
    client: &OllamaClient,
    input: NarrationInput<'_>,
    tracer: &SdkTracer,
    parent: &Context,
) -> Narration {
    let day = input.day.format("%Y-%m-%d").to_string();
    let messages = match prompt::build(PromptInput {
        day: &day,
        time_zone: input.time_zone,
        facts: input.facts,
        findings: input.findings,
    }) {
        Ok(messages) => messages,
        Err(err) => return fallback(client, &input, Usage::default(), err.to_string()),
    };
    let request = ChatRequest {
        messages,
        format: Some(report::json_schema()),
        max_output_tokens: MAX_OUTPUT_TOKENS,
    };
    let mut usage = Usage::default();
    let mut unusable = Vec::new();
    for _ in 0..CALLS {
        match call(client, &input, &request, tracer, parent, &mut usage).await {
            Ok((report, model)) => return from_model(report, model, &input, usage),
            Err(Failure::BadOutput(why)) => unusable.push(why),
            Err(Failure::Server(why)) => return fallback(client, &input, usage, why),
        }
    }
    let why = format!(
        "the model's answer was unusable {CALLS} times: {}",
        unusable.join("; ")
    );
    fallback(client, &input, usage, why)
}

/// One chat call in its own client span, and the strict parse of its answer.
async fn call(
    client: &OllamaClient,
    input: &NarrationInput<'_>,
    request: &ChatRequest,
    tracer: &SdkTracer,
    parent: &Context,
    usage: &mut Usage,
) -> Result<(Report, String), Failure> {
    let mut span = start_span(client, tracer, parent);
    let started = Instant::now();
    let answer = client.chat(request).await;
    usage.llm_ms += u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let result = match answer {
        Ok(answer) => {
            let prompt_tokens = answer.prompt_tokens.unwrap_or(0);
            let output_tokens = answer.output_tokens.unwrap_or(0);
            usage.prompt_tokens = usage.prompt_tokens.saturating_add(prompt_tokens);
            usage.output_tokens = usage.output_tokens.saturating_add(output_tokens);
            span.set_attributes([
                KeyValue::new("gen_ai.response.model", answer.model.clone()),
                KeyValue::new("gen_ai.usage.input_tokens", i64::from(prompt_tokens)),
                KeyValue::new("gen_ai.usage.output_tokens", i64::from(output_tokens)),
            ]);
            parse(&answer.content, input)
                .map(|report| (report, answer.model))
                .map_err(|err| {
                    mark_failed(&mut span, "invalid_report");
                    Failure::BadOutput(err.to_string())
                })
        }
        Err(err) => {
            mark_failed(&mut span, err.kind());
            Err(failure(&err))
        }
    };
    span.end();
    result
}

/// The answer as a report, strictly: the schema, then (with the day and time zone set
/// to the ones asked about: they are ours, not the model's to state) the bounds.
fn parse(content: &str, input: &NarrationInput<'_>) -> Result<Report, ReportError> {
    let mut report: Report = serde_json::from_str(content)?;
    report.scope.day = input.day.format("%Y-%m-%d").to_string();
    report.scope.time_zone = input.time_zone.to_owned();
    report.validate()?;
    Ok(report)
}

fn failure(err: &OllamaError) -> Failure {
    if err.is_bad_output() {
        Failure::BadOutput(err.to_string())
    } else {
        Failure::Server(err.to_string())
    }
}

/// The GenAI semantic-convention span of one call. What was asked and how much, never
/// the prompt or the answer: those stay in the analyzer's own tables.
fn start_span(client: &OllamaClient, tracer: &SdkTracer, parent: &Context) -> Span {
    tracer
        .span_builder(format!("chat {}", client.model()))
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("gen_ai.system", "ollama"),
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", client.model().to_owned()),
            KeyValue::new("gen_ai.request.temperature", TEMPERATURE),
            KeyValue::new("gen_ai.request.seed", client.seed()),
            KeyValue::new("gen_ai.request.max_tokens", i64::from(MAX_OUTPUT_TOKENS)),
        ])
        .start_with_context(tracer, parent)
}

/// Marks the span failed with a closed-set `error.type` (no message: it may quote the
/// answer).
fn mark_failed(span: &mut Span, kind: &'static str) {
    span.set_attribute(KeyValue::new("error.type", kind));
    span.set_status(Status::error(kind));
}

/// The model's report, its confidence lowered by grounding violations.
fn from_model(
    mut report: Report,
    model: String,
    input: &NarrationInput<'_>,
    usage: Usage,
) -> Narration {
    let violations = grounding::check(&report, input.facts, input.findings);
    grounding::adjust_confidence(&mut report, &violations);
    Narration {
        report,
        generator: Generator::Model,
        model,
        violations,
        prompt_tokens: usage.prompt_tokens,
        output_tokens: usage.output_tokens,
        llm_ms: usage.llm_ms,
        error: None,
        degraded: false,
    }
}

/// The rules' report, marked degraded with the reason. Checked like the model's, so a
/// rule that ever writes an ungrounded number shows up in the stored violations.
fn fallback(
    client: &OllamaClient,
    input: &NarrationInput<'_>,
    usage: Usage,
    why: String,
) -> Narration {
    tracing::warn!(day = %input.day, error = %why, "the model did not narrate the day; using the rules' report");
    let report = rules::report_from_rules(input.facts, input.findings, input.day, input.time_zone);
    let violations = grounding::check(&report, input.facts, input.findings);
    Narration {
        report,
        generator: Generator::Rules,
        model: client.model().to_owned(),
        violations,
        prompt_tokens: usage.prompt_tokens,
        output_tokens: usage.output_tokens,
        llm_ms: usage.llm_ms,
        error: Some(why),
        degraded: true,
    }
}
