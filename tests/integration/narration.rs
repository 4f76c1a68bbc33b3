//! The narration against a scripted Ollama: which report is stored, why, and what was
//! sent. Needs no stack.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveDate;
use lead_lab::analyze::facts::{Breakdown, DayFacts};
use lead_lab::analyze::grounding::ViolationKind;
use lead_lab::analyze::llm::{LlmClient, LlmError};
use lead_lab::analyze::narrate::{Narration, NarrationInput, narrate};
use lead_lab::analyze::report::{self, ConfidenceLevel, Generator};
use lead_lab::analyze::{Finding, FindingKind, Severity, Subject};
use lead_lab::config::{LlmSettings, LogSettings};
use lead_lab::telemetry::app_dispatch;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{
    SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracer, SdkTracerProvider, SpanData};
use serde_json::{Value, json};
use tracing::instrument::WithSubscriber as _;

use crate::fake_ollama::{FakeOllama, FakeOptions, MODEL, Reply};
use crate::support::root;

const DAY: &str = "2024-05-01";
const TIME_ZONE: &str = "Europe/Berlin";

/// The facts fixture the unit tests share: counts, rates and closed-set names only.
fn facts() -> DayFacts {
    let path = root().join("tests/fixtures/day_facts.json");
    let text = std::fs::read_to_string(&path).expect("the facts fixture reads");
    serde_json::from_str(&text).expect("the facts fixture is a DayFacts")
}

fn breakdown(name: String, attempts: u64) -> Breakdown {
    Breakdown {
        name,
        attempts,
        accepted: attempts,
        rejected: 0,
        failed: 0,
        failure_share: 0.0,
        share_of_day_failures: 0.0,
        top_reasons: Vec::new(),
    }
}

fn findings() -> Vec<Finding> {
    vec![Finding {
        kind: FindingKind::KeyMismatchCluster,
        subject: Subject {
            source: Some("quiz".into()),
            ..Subject::default()
        },
        severity: Severity::High,
        confidence: 0.9,
        summary: "58 attempts on source=quiz carried the key of source=web_form.".into(),
        evidence: BTreeMap::from([("attempts".to_owned(), 58.0)]),
        window: None,
        interval: None,
        changes: Vec::new(),
    }]
}

/// What a good model writes about [`facts`]: only their numbers and names.
fn good_report() -> Value {
    json!({
        "executive_summary": "On 2024-05-01 the service saw 1,234 attempts; 1,100 were accepted and the failure rate was 10.9%. The data shows 58 attempts on source=quiz carrying the key of source=web_form.",
        "user_behavior": "Most attempts came from web_form (700), followed by quiz (534). 900 distinct submitters, 120 of them with more than one attempt.",
        "system_behavior": "Latency p95 was 830.4 ms. Delivery to the CRM failed between 14:05 and 14:20 with 17 timeouts and 4 errors.",
        "misconfiguration_signals": [
            {"signal": "Keys used for the wrong source", "evidence": "58 attempts on source=quiz carried the key of source=web_form.", "severity": "high"}
        ],
        "confidence": {"level": "high", "reasons": ["The day is complete."]},
        "scope": {
            "day": DAY, "time_zone": TIME_ZONE, "sources_covered": ["web_form", "quiz"],
            "data_completeness": "complete", "not_analysed": ["individual leads"]
        }
    })
}

struct Harness {
    spans: InMemorySpanExporter,
    tracer: SdkTracer,
    dispatch: tracing::Dispatch,
}

impl Harness {
    fn new() -> Self {
        let spans = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let tracer = provider.tracer("narration-test");
        let dispatch = app_dispatch(
            &LogSettings::default(),
            tracer.clone(),
            &SdkLoggerProvider::builder().build(),
        );
        Self {
            spans,
            tracer,
            dispatch,
        }
    }

    async fn narrate(&self, settings: &LlmSettings, facts: &DayFacts) -> Narration {
        let client = LlmClient::new(settings).expect("valid settings");
        let parent = Context::new().with_span(self.tracer.start("analysis"));
        let findings = findings();
        let input = NarrationInput {
            day: NaiveDate::parse_from_str(DAY, "%Y-%m-%d").expect("a date"),
            time_zone: TIME_ZONE,
            facts,
            findings: &findings,
        };
        let narration = narrate(&client, input)
            .with_context(parent.clone())
            .with_subscriber(self.dispatch.clone())
            .await;
        parent.span().end();
        narration
    }

    fn span(&self, name: &str) -> SpanData {
        self.spans
            .get_finished_spans()
            .expect("spans")
            .into_iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| panic!("no span {name}"))
    }

    fn chat_spans(&self) -> Vec<SpanData> {
        self.spans
            .get_finished_spans()
            .expect("spans")
            .into_iter()
            .filter(|span| span.name.starts_with("chat "))
            .collect()
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<opentelemetry::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn assert_rules_fallback(narration: &Narration, why: &str) {
    assert_eq!(narration.generator, Generator::Rules);
    assert!(narration.degraded);
    let error = narration.error.as_deref().expect("an error");
    assert!(error.contains(why), "error {error:?} should say {why:?}");
    assert!(
        narration.violations.is_empty(),
        "{:?}",
        narration.violations
    );
    assert!(narration.report.validate().is_ok());
    assert_eq!(narration.report.scope.day, DAY);
}

#[tokio::test]
async fn a_good_answer_is_the_models_report() {
    let fake = FakeOllama::start(vec![Reply::GoodJson(good_report())]).await;
    let harness = Harness::new();
    let narration = harness.narrate(&fake.settings(), &facts()).await;

    assert_eq!(narration.generator, Generator::Model);
    assert!(!narration.degraded);
    assert_eq!(narration.error, None);
    assert_eq!(narration.violations, []);
    assert_eq!(narration.model, MODEL);
    assert_eq!(narration.report.confidence.level, ConfidenceLevel::High);
    assert_eq!(
        serde_json::to_value(&narration.report).expect("serializable"),
        good_report()
    );
    assert!(narration.prompt_tokens > 0 && narration.output_tokens > 0);

    let spans = harness.chat_spans();
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(span.name, format!("chat {MODEL}"));
    assert_eq!(span.span_kind, SpanKind::Client);
    assert_eq!(span.status, Status::Unset);
    for (key, value) in [
        ("gen_ai.system", "ollama".into()),
        ("gen_ai.operation.name", "chat".into()),
        ("gen_ai.request.model", MODEL.into()),
        ("gen_ai.response.model", MODEL.into()),
        ("gen_ai.request.temperature", 0.0.into()),
        ("gen_ai.request.seed", 42i64.into()),
        (
            "gen_ai.usage.input_tokens",
            i64::from(narration.prompt_tokens).into(),
        ),
        (
            "gen_ai.usage.output_tokens",
            i64::from(narration.output_tokens).into(),
        ),
    ] {
        assert_eq!(attribute(span, key), Some(value), "{key}");
    }
    assert_eq!(attribute(span, "error.type"), None);
    let analysis = harness.span("analysis");
    assert_eq!(span.parent_span_id, analysis.span_context.span_id());
    assert_eq!(
        span.span_context.trace_id(),
        analysis.span_context.trace_id()
    );
}

#[tokio::test]
async fn the_request_pins_ollamas_options_and_the_schema() {
    let fake = FakeOllama::start(vec![Reply::GoodJson(good_report())]).await;
    Harness::new().narrate(&fake.settings(), &facts()).await;

    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/api/show", "/api/chat"]);
    let body = &fake.chat_requests()[0];
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["stream"], false);
    assert_eq!(body["truncate"], false);
    assert_eq!(body["keep_alive"], "10m");
    assert_eq!(
        body["format"],
        report::json_schema_for(&["web_form".into(), "quiz".into()], 3072)
    );
    assert_eq!(body["options"]["temperature"], 0.0);
    assert_eq!(body["options"]["seed"], 42);
    let num_ctx = body["options"]["num_ctx"].as_u64().expect("num_ctx");
    assert!(num_ctx >= 4096 && num_ctx.is_power_of_two(), "{num_ctx}");
    assert!(body["options"]["num_predict"].as_u64().is_some());
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["role"], "user");
}

#[tokio::test]
async fn nothing_personal_reaches_the_model_or_the_span() {
    let fake = FakeOllama::start(vec![Reply::GoodJson(good_report())]).await;
    let harness = Harness::new();
    harness.narrate(&fake.settings(), &facts()).await;

    let sent = fake.chat_requests()[0].to_string();
    for personal in ["@", "Ada", "Lovelace", "+49", "phone", "email"] {
        assert!(
            !sent.contains(personal),
            "{personal:?} was sent to the model"
        );
    }
    let user = fake.chat_requests()[0]["messages"][1]["content"]
        .as_str()
        .expect("user message")
        .to_owned();
    assert!(!lead_lab::analyze::prompt::contains_email(&user));
    assert!(!lead_lab::analyze::prompt::contains_phone(&user));
    assert!(user.contains("\"web_form\"") && user.contains(DAY) && user.contains(TIME_ZONE));

    for KeyValue { key, value, .. } in &harness.chat_spans()[0].attributes {
        let text = value.as_str();
        assert!(text.len() < 100, "{key} carries text: {text}");
        assert!(
            !text.contains("web_form"),
            "{key} carries the prompt or answer"
        );
    }
}

#[tokio::test]
async fn facts_with_an_email_are_never_sent() {
    let fake = FakeOllama::start(vec![Reply::GoodJson(good_report())]).await;
    let mut facts = facts();
    facts.by_client = vec![breakdown("ada.lovelace@example.com".into(), 3)];
    let narration = Harness::new().narrate(&fake.settings(), &facts).await;

    assert_eq!(narration.generator, Generator::Rules);
    assert!(narration.degraded);
    let error = narration.error.expect("an error");
    assert!(
        error.contains("email address at facts.by_client[0].name"),
        "{error}"
    );
    assert!(!error.contains("lovelace"));
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_wrong_number_is_a_violation_and_lowers_confidence() {
    let mut answer = good_report();
    answer["executive_summary"] =
        json!("On 2024-05-01 the service saw 1,250 attempts; 1,100 were accepted.");
    answer["scope"]["day"] = json!("Wednesday, the first of May 2024");
    answer["scope"]["time_zone"] = json!("CEST");
    let fake = FakeOllama::start(vec![Reply::GoodJson(answer)]).await;
    let narration = Harness::new().narrate(&fake.settings(), &facts()).await;

    assert_eq!(narration.generator, Generator::Model);
    assert!(!narration.degraded);
    assert_eq!(narration.violations.len(), 1);
    let violation = &narration.violations[0];
    assert_eq!(violation.kind, ViolationKind::Number);
    assert_eq!(violation.text, "1,250");
    assert_eq!(violation.field, "executive_summary");
    assert_eq!(narration.report.confidence.level, ConfidenceLevel::Medium);
    assert_eq!(
        narration.report.scope.day, DAY,
        "the day is ours, not the model's"
    );
    assert_eq!(narration.report.scope.time_zone, TIME_ZONE);
    assert!(
        narration
            .report
            .confidence
            .reasons
            .iter()
            .any(|r| r.contains("not found in the day's facts"))
    );
}

#[tokio::test]
async fn an_unusable_answer_is_asked_again_and_the_second_is_used() {
    let fake = FakeOllama::start(vec![
        Reply::Malformed("Sure! Here is the report: {\"executive_summary\": ".into()),
        Reply::GoodJson(good_report()),
    ])
    .await;
    let harness = Harness::new();
    let narration = harness.narrate(&fake.settings(), &facts()).await;

    assert_eq!(narration.generator, Generator::Model);
    assert!(!narration.degraded);
    assert_eq!(narration.violations, []);
    let chats = fake.chat_requests();
    assert_eq!(chats.len(), 2);
    let (first, retry) = (&chats[0]["messages"], &chats[1]["messages"]);
    assert_eq!(first.as_array().map(Vec::len), Some(2));
    assert_eq!(retry[0], first[0]);
    assert_eq!(retry[1], first[1]);
    assert_eq!(retry[2]["role"], "user");
    let note = retry[2]["content"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("Your previous answer was refused: the answer is not a report"),
        "the retry says why: {note}"
    );
    assert_eq!(narration.calls, 2);
    assert_eq!(narration.refusals.len(), 1);
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/api/show", "/api/chat", "/api/chat"],
        "show is asked once"
    );

    let spans = harness.chat_spans();
    assert_eq!(spans.len(), 2);
    assert_eq!(
        attribute(&spans[0], "error.type"),
        Some("invalid_report".into())
    );
    assert_eq!(attribute(&spans[1], "error.type"), None);
}

#[tokio::test]
async fn an_overlong_field_is_an_unusable_answer_not_a_crash() {
    let mut overlong = good_report();
    overlong["confidence"]["reasons"] = json!(["high ".repeat(200)]);
    let fake = FakeOllama::start(vec![
        Reply::GoodJson(overlong),
        Reply::GoodJson(good_report()),
    ])
    .await;
    let narration = Harness::new().narrate(&fake.settings(), &facts()).await;

    assert_eq!(narration.generator, Generator::Model);
    assert_eq!(fake.chat_requests().len(), 2);
}

#[tokio::test]
async fn two_unusable_answers_fall_back_to_the_rules() {
    let fake = FakeOllama::start(vec![
        Reply::RawBody("<html>proxy error</html>".into()),
        Reply::Truncated("{\"executive_summary\": \"On 2024-05-01".into()),
    ])
    .await;
    let harness = Harness::new();
    let narration = harness.narrate(&fake.settings(), &facts()).await;

    assert_rules_fallback(&narration, "unusable 2 times");
    let error = narration.error.as_deref().unwrap_or_default();
    assert!(error.contains("could not be decoded"), "{error}");
    assert!(error.contains("done_reason length"), "{error}");
    assert_eq!(fake.chat_requests().len(), 2);
    let kinds: Vec<_> = harness
        .chat_spans()
        .iter()
        .map(|span| attribute(span, "error.type"))
        .collect();
    assert_eq!(
        kinds,
        [Some("malformed".into()), Some("done_reason".into())]
    );
}

#[tokio::test]
async fn a_missing_model_falls_back_at_once() {
    let options = FakeOptions {
        model: None,
        ..FakeOptions::default()
    };
    let fake = FakeOllama::start_with(options, vec![Reply::GoodJson(good_report())]).await;
    let narration = Harness::new().narrate(&fake.settings(), &facts()).await;

    assert_rules_fallback(&narration, "is not available in Ollama (pull it first)");
    assert!(fake.chat_requests().is_empty(), "show already said 404");
}

#[tokio::test]
async fn a_server_error_falls_back_without_a_retry() {
    let fake = FakeOllama::start(vec![
        Reply::Status(500, "llama runner process has terminated".into()),
        Reply::GoodJson(good_report()),
    ])
    .await;
    let harness = Harness::new();
    let narration = harness.narrate(&fake.settings(), &facts()).await;

    assert_rules_fallback(&narration, "HTTP 500: llama runner process has terminated");
    assert_eq!(fake.chat_requests().len(), 1);
    let span = &harness.chat_spans()[0];
    assert_eq!(attribute(span, "error.type"), Some("http".into()));
    assert!(matches!(span.status, Status::Error { .. }));
}

#[tokio::test]
async fn an_overloaded_server_falls_back() {
    let fake = FakeOllama::start(vec![Reply::Status(503, "server busy".into())]).await;
    let narration = Harness::new().narrate(&fake.settings(), &facts()).await;

    assert_rules_fallback(&narration, "overloaded (503): server busy");
}

#[tokio::test]
async fn a_model_slower_than_the_timeout_falls_back() {
    let fake = FakeOllama::start(vec![Reply::slow(
        Duration::from_secs(5),
        Reply::GoodJson(good_report()),
    )])
    .await;
    let settings = LlmSettings {
        timeout_ms: 300,
        ..fake.settings()
    };
    let narration = Harness::new().narrate(&settings, &facts()).await;

    assert_rules_fallback(&narration, "did not answer within 300 ms");
    assert!(narration.llm_ms >= 300, "{}", narration.llm_ms);
    assert_eq!(fake.chat_requests().len(), 1);
}

#[tokio::test]
async fn nothing_listening_falls_back() {
    let fake = FakeOllama::start(vec![]).await;
    let settings = fake.settings();
    drop(fake);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let narration = Harness::new().narrate(&settings, &facts()).await;

    assert_rules_fallback(&narration, "cannot reach Ollama");
}

#[tokio::test]
async fn the_client_reads_tags_and_context_length() {
    let fake = FakeOllama::start(vec![]).await;
    let client = LlmClient::new(&fake.settings()).expect("valid settings");
    assert!(client.has_model().await.expect("tags"));
    assert_eq!(client.context_length().await.expect("show"), Some(131_072));

    let options = FakeOptions {
        model: None,
        ..FakeOptions::default()
    };
    let empty = FakeOllama::start_with(options, vec![]).await;
    let client = LlmClient::new(&empty.settings()).expect("valid settings");
    assert!(!client.has_model().await.expect("tags"));
    assert!(matches!(
        client.context_length().await,
        Err(LlmError::ModelNotFound { .. })
    ));
}

#[tokio::test]
async fn num_ctx_is_capped_by_the_models_context_length() {
    let options = FakeOptions {
        context_length: 8192,
        ..FakeOptions::default()
    };
    let fake = FakeOllama::start_with(options, vec![Reply::GoodJson(good_report())]).await;
    let mut facts = facts();
    facts.by_form = (0..800)
        .map(|i| breakdown(format!("form-{i}"), i))
        .collect();
    Harness::new().narrate(&fake.settings(), &facts).await;

    assert_eq!(fake.chat_requests()[0]["options"]["num_ctx"], 8192);
}
