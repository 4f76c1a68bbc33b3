//! `tracing` all the way to ClickHouse: an attempt's log line lands in `otel_logs` with
//! its trace and span id and no lead data in it; analyzer spans made with `tracing`
//! land in `otel_traces` with the run's attributes; a log file gets no colour codes.

use std::collections::HashMap;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::app::{FakeCrm, TestApp};
use crate::fake_ollama::{FakeOllama, Reply};
use crate::ingest::{expect, lead, with};
use crate::support::analysis::{a_day, analysis_app, finished, plain_report, start_analysis};
use crate::support::{ARRIVAL, ClickHouseEnv, TestDatabase, eventually, logged};

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct LogLine {
    trace_id: String,
    span_id: String,
    severity: String,
    scope: String,
    body: String,
    attributes: HashMap<String, String>,
    /// Everything the row says, for the scan for lead data.
    all: String,
}

async fn log_lines(app: &TestApp, at_least: usize) -> Vec<LogLine> {
    app.rows_when(
        "the app's log records in otel_logs",
        "SELECT TraceId AS trace_id, SpanId AS span_id, SeverityText AS severity, \
                ScopeName AS scope, Body AS body, LogAttributes AS attributes, \
                concat(Body, toString(LogAttributes), toString(ResourceAttributes), \
                       ScopeName, EventName) AS all \
         FROM otel_logs WHERE ServiceName = ?",
        |l: &[LogLine]| l.len() >= at_least,
    )
    .await
}

/// The span id of the trace's `lead.submit` span.
async fn record_span_id(app: &TestApp, trace_id: &str) -> String {
    let client = app.stack.client();
    eventually("the attempt's lead.submit span", ARRIVAL, async || {
        let query = client
            .query(
                "SELECT SpanId FROM otel_traces \
                 WHERE ServiceName = ? AND TraceId = ? AND SpanName = 'lead.submit'",
            )
            .bind(&app.service)
            .bind(trace_id);
        logged(query.fetch_optional::<String>().await).flatten()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_attempts_log_line_is_in_otel_logs_with_its_trace_and_no_lead_data() {
    let crm = FakeCrm::start().await;
    let mut app = TestApp::spawn_with(|s| crm.configure(s)).await;
    let failing = with(lead("quiz", "/quiz/logged"), "company", json!("crm-fail"));
    let answer = app.post_lead(Some(&app.keys.quiz), &failing).await;
    let failed = expect(answer, 502, "failed", Some("downstream_error")).await;
    let refused_lead = with(failing.clone(), "consent", json!("yes please"));
    let answer = app.post_lead(Some(&app.keys.quiz), &refused_lead).await;
    assert_eq!(answer.status(), 422);
    let refused: Value = answer.json().await.unwrap();
    app.stop().await;

    let lines = log_lines(&app, 2).await;
    let trace_id = failed["trace_id"].as_str().unwrap();
    let line = lines
        .iter()
        .find(|l| l.trace_id == trace_id)
        .unwrap_or_else(|| panic!("no log line of trace {trace_id}: {lines:?}"));
    assert_eq!(line.severity, "WARN", "log.attempt_level defaults to warn");
    assert_eq!(line.body, "lead attempt");
    assert!(
        line.scope.starts_with("lead_lab::ingest"),
        "target: {}",
        line.scope
    );
    for (key, value) in [
        ("outcome", "failed"),
        ("reason", "downstream_error"),
        ("source", "quiz"),
        ("endpoint", "leads"),
    ] {
        assert_eq!(
            line.attributes.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    assert_eq!(
        line.span_id,
        record_span_id(&app, trace_id).await,
        "the line belongs to the attempt's lead.submit span"
    );
    let refused_trace = refused["trace_id"].as_str().unwrap();
    let refusal = lines
        .iter()
        .find(|l| l.trace_id == refused_trace)
        .expect("the refusal's line");
    assert_eq!(
        refusal.attributes.get("outcome").map(String::as_str),
        Some("rejected")
    );

    let submitted = ["name", "email", "phone", "page"].map(|key| failing[key].as_str().unwrap());
    for row in &lines {
        for value in submitted {
            assert!(
                !row.all.contains(value),
                "{value:?} in otel_logs: {}",
                row.all
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn analyzer_spans_made_with_tracing_reach_otel_traces_with_the_runs_attributes() {
    let day = a_day();
    let ollama = FakeOllama::start(vec![Reply::GoodJson(plain_report(&day))]).await;
    let db = TestDatabase::migrated().await;
    let mut app = analysis_app(&db, Some(&ollama), |_| {}).await;
    let accepted: Value = start_analysis(&app, &day).await.json().await.unwrap();
    let run_id = accepted["run_id"].as_str().unwrap().to_owned();
    let view = finished(&app, &run_id).await;
    assert_eq!(view["run"]["status"], "succeeded", "{view}");
    app.stop().await;

    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    struct Span {
        name: String,
        span_id: String,
        parent: String,
        trace_id: String,
        kind: String,
        attributes: HashMap<String, String>,
    }
    let spans: Vec<Span> = app
        .rows_when(
            "the run's spans",
            "SELECT SpanName AS name, SpanId AS span_id, ParentSpanId AS parent, \
                    TraceId AS trace_id, SpanKind AS kind, SpanAttributes AS attributes \
             FROM otel_traces WHERE ServiceName = ? \
               AND (SpanName LIKE 'analysis.%' OR SpanName LIKE 'chat %')",
            |s: &[Span]| s.len() >= 4,
        )
        .await;
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span: {spans:?}"))
    };
    let run = named("analysis.run");
    assert_eq!(run.parent, "", "a run is a root: it outlives its request");
    for (key, value) in [
        ("analysis.run_id", run_id.as_str()),
        ("analysis.day", day.as_str()),
        ("analysis.trigger", "manual"),
        ("analysis.status", "succeeded"),
    ] {
        assert_eq!(
            run.attributes.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    let chat = spans
        .iter()
        .find(|s| s.name.starts_with("chat "))
        .expect("the model call");
    assert_eq!(chat.kind, "Client");
    assert_eq!(
        chat.attributes
            .get("gen_ai.operation.name")
            .map(String::as_str),
        Some("chat")
    );
    for child in [named("analysis.facts"), named("analysis.detect"), chat] {
        assert_eq!(child.parent, run.span_id, "{} under the run", child.name);
        assert_eq!(child.trace_id, run.trace_id);
    }
    assert!(
        named("analysis.detect")
            .attributes
            .contains_key("analysis.findings")
    );
}

#[tokio::test]
async fn logs_written_to_a_file_carry_no_colour_codes() {
    let db = TestDatabase::empty().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_lead-lab"))
        .arg("migrate")
        .clickhouse_env(&db.stack.clickhouse, &db.name)
        .env("LEADLAB_LOG_LEVEL", "lead_lab=debug")
        .env_remove("LEADLAB_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .status()
        .expect("the lead-lab binary runs");
    assert!(status.success());
    let written = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        written.contains("DEBUG"),
        "debug lines were written: {written}"
    );
    assert!(
        !written.contains('\u{1b}'),
        "ANSI codes in a log file: {written:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_a_failed_attempts_log_lines_from_the_stats_api() {
    crate::console::chromium();
    let crm = FakeCrm::start().await;
    let mut app = TestApp::spawn_with(|s| crm.configure(s)).await;
    let failing = with(lead("quiz", "/quiz/console"), "company", json!("crm-fail"));
    let answer = app.post_lead(Some(&app.keys.quiz), &failing).await;
    let failed = expect(answer, 502, "failed", Some("downstream_error")).await;
    let trace_id = failed["trace_id"].as_str().unwrap();

    let path = format!("/v1/stats/logs?trace_id={}", trace_id.to_uppercase());
    let logs = eventually(
        "the attempt's lines from /v1/stats/logs",
        ARRIVAL,
        async || {
            let answer = app.get_json(&path, None).await;
            answer["lines"]
                .as_array()
                .is_some_and(|lines| !lines.is_empty())
                .then_some(answer)
        },
    )
    .await;
    assert_eq!(logs["trace_id"], trace_id);
    let line = &logs["lines"][0];
    assert_eq!(
        (
            &line["level"],
            &line["message"],
            &line["outcome"],
            &line["reason"]
        ),
        (
            &json!("WARN"),
            &json!("lead attempt"),
            &json!("failed"),
            &json!("downstream_error")
        ),
        "{logs}"
    );
    let text = logs.to_string();
    for key in ["name", "email", "phone", "page"] {
        assert!(
            !text.contains(failing[key].as_str().unwrap()),
            "{key} in {text}"
        );
    }
    let refused = app
        .http
        .get(app.url("/v1/stats/logs?trace_id=1%27%20OR%201"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let recent = format!("\"trace_id\":\"{trace_id}\"");
    eventually("the attempt in /v1/stats/recent", ARRIVAL, async || {
        let answer = app.get_json("/v1/stats/recent?days=1", None).await;
        answer.to_string().contains(&recent).then_some(())
    })
    .await;
    let dom = crate::console::dom(&app.url("/?refresh=0"), 1280, 900, 5_000).await;
    let row = dom
        .find("class=\"log-lines\"")
        .unwrap_or_else(|| panic!("no log row: {dom}"));
    assert!(
        dom[row..]
            .contains("WARN lead_lab::ingest::record: lead attempt (failed downstream_error)"),
        "{}",
        &dom[row..]
    );
    app.stop().await;
}
