//! The analyzer end to end: detectors against labelled simulator weeks, and analysis
//! jobs through the API with a fake Ollama.

use std::time::{Duration, Instant};

use lead_lab::analyze::facts::{self, FactsQuery};
use lead_lab::analyze::{Finding, FindingKind, Severity, detect};
use lead_lab::config::DetectorSettings;
use lead_lab::simulate::TruthEntry;
use serde_json::{Value, json};

use crate::app::TestApp;
use crate::fake_ollama::{FakeOllama, FakeOptions, Reply};
use crate::simulate::{replayed, shipped, week_start};
use crate::support::analysis::{
    ADMIN_TOKEN, a_day, analysis_app, finished, plain_report, start_analysis,
};
use crate::support::{TestDatabase, eventually};

async fn findings_on(app: &TestApp, day: chrono::NaiveDate) -> Vec<Finding> {
    let query = FactsQuery {
        day,
        time_zone: chrono_tz::Tz::UTC,
        baseline_days: 7,
        service: Some(app.service.clone()),
        burst_per_minute: DetectorSettings::default().burst_per_minute,
    };
    let day_facts = facts::compute(&app.stack.client(), &query, chrono::Utc::now())
        .await
        .expect("facts compute");
    detect::detect(&day_facts, &DetectorSettings::default())
}

/// Whether `finding` is the one `truth` expects: same kind, same subject.
fn explains(finding: &Finding, truth: &TruthEntry) -> bool {
    if finding.kind.as_str() != truth.expected_finding {
        return false;
    }
    let subject = &finding.subject;
    match finding.kind {
        FindingKind::FailureConcentration | FindingKind::NewPage => subject.page == truth.page,
        FindingKind::RateLimitBurst => subject
            .client_id
            .as_deref()
            .zip(truth.source.as_deref())
            .is_some_and(|(client, source)| client.starts_with(source)),
        FindingKind::DownstreamOutage => true,
        _ => subject.source == truth.source,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_detectors_find_every_injected_incident_of_the_default_week() {
    let (app, report) = replayed(&shipped("default.toml"), week_start(), 7, 1).await;
    let mut missed = Vec::new();
    for truth in &report.ground_truth {
        let findings = findings_on(&app, truth.day).await;
        if !findings.iter().any(|f| explains(f, truth)) {
            let seen: Vec<String> = findings
                .iter()
                .map(|f| format!("{} {:?}", f.kind.as_str(), f.subject))
                .collect();
            missed.push(format!(
                "{} on {} ({:?}); found {seen:?}",
                truth.kind, truth.day, truth.source
            ));
        }
    }
    assert!(
        missed.is_empty(),
        "recall below 100%:\n{}",
        missed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_week_raises_no_high_severity_finding() {
    let first = week_start();
    let (app, _) = replayed(&shipped("quiet.toml"), first, 7, 1).await;
    for offset in 3..7 {
        let day = first + chrono::Duration::days(offset);
        let high: Vec<String> = findings_on(&app, day)
            .await
            .into_iter()
            .filter(|f| f.severity == Severity::High)
            .map(|f| f.summary)
            .collect();
        assert!(high.is_empty(), "{day}: {high:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_answer_is_stored_as_the_models_report() {
    let day = a_day();
    let ollama = FakeOllama::start(vec![Reply::GoodJson(plain_report(&day))]).await;
    let db = TestDatabase::migrated().await;
    let mut app = analysis_app(&db, Some(&ollama), |_| {}).await;
    let accepted: Value = start_analysis(&app, &day).await.json().await.unwrap();
    let view = finished(&app, accepted["run_id"].as_str().unwrap()).await;
    assert_eq!(view["run"]["status"], "succeeded", "{view}");
    assert_eq!(view["summary"]["generator"], "model");
    assert_eq!(view["summary"]["grounding_violations"], json!([]));
    let summaries = app
        .get_json(&format!("/v1/summaries/{day}"), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(summaries["current"]["run_id"], accepted["run_id"]);
    let prompt = ollama.chat_requests()[0].to_string();
    assert!(!prompt.contains("@example"), "no email reaches the model");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_number_is_stored_as_a_violation_with_lower_confidence() {
    let day = a_day();
    let mut report = plain_report(&day);
    report["executive_summary"] = json!("There were 987654 attempts.");
    let ollama = FakeOllama::start(vec![Reply::GoodJson(report)]).await;
    let db = TestDatabase::migrated().await;
    let mut app = analysis_app(&db, Some(&ollama), |_| {}).await;
    let accepted: Value = start_analysis(&app, &day).await.json().await.unwrap();
    let view = finished(&app, accepted["run_id"].as_str().unwrap()).await;
    let violations = view["summary"]["grounding_violations"].as_array().unwrap();
    assert!(
        violations
            .iter()
            .any(|v| v.as_str().unwrap().contains("987654")),
        "{view}"
    );
    assert_ne!(view["summary"]["confidence"], "high");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_model_ends_degraded_with_a_rules_report_after_retries() {
    let day = a_day();
    let options = FakeOptions {
        model: None,
        ..FakeOptions::default()
    };
    let ollama = FakeOllama::start_with(options, vec![]).await;
    let db = TestDatabase::migrated().await;
    let mut app = analysis_app(&db, Some(&ollama), |_| {}).await;
    let accepted: Value = start_analysis(&app, &day).await.json().await.unwrap();
    let view = finished(&app, accepted["run_id"].as_str().unwrap()).await;
    assert_eq!(view["run"]["status"], "degraded", "{view}");
    assert_eq!(view["run"]["attempts"], 3, "retried with backoff");
    assert!(!view["run"]["error"].as_str().unwrap().is_empty());
    assert_eq!(view["summary"]["generator"], "rules");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn starting_answers_at_once_and_a_second_request_joins_the_running_run() {
    let day = a_day();
    let slow = Reply::slow(Duration::from_secs(30), Reply::GoodJson(plain_report(&day)));
    let ollama = FakeOllama::start(vec![slow]).await;
    let db = TestDatabase::migrated().await;
    let mut app = TestApp::spawn_with(|s| {
        s.clickhouse.database = db.name.clone();
        s.admin_token = ADMIN_TOKEN.into();
        s.llm = ollama.settings();
        s.llm.timeout_ms = 60_000;
        s.analyzer.schedule_enabled = false;
    })
    .await;
    let began = Instant::now();
    let first = start_analysis(&app, &day).await;
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "202 within a second: {:?}",
        began.elapsed()
    );
    assert_eq!(first.status().as_u16(), 202);
    let first: Value = first.json().await.unwrap();
    let second: Value = start_analysis(&app, &day).await.json().await.unwrap();
    assert_eq!(second["run_id"], first["run_id"]);
    assert_eq!(second["joined"], true);
    let runs = app
        .get_json(&format!("/v1/analyses?day={day}"), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "one run for the day: {runs}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_analysis_api_needs_the_admin_token() {
    let ollama = FakeOllama::start(vec![]).await;
    let db = TestDatabase::migrated().await;
    let mut app = analysis_app(&db, Some(&ollama), |_| {}).await;
    for token in [None, Some("wrong")] {
        let mut request = app
            .http
            .post(app.url("/v1/analyses"))
            .json(&json!({"day": a_day()}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_eq!(request.send().await.unwrap().status().as_u16(), 401);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_left_running_by_a_dead_process_is_resumed_at_start() {
    let day = a_day();
    let ollama = FakeOllama::start(vec![Reply::GoodJson(plain_report(&day))]).await;
    let db = TestDatabase::migrated().await;
    let records = lead_lab::analyze::records::Records::new(db.bound_client());
    let run_id = uuid::Uuid::now_v7();
    let mut orphan = lead_lab::analyze::records::RunRow::queued(
        run_id,
        day.parse().unwrap(),
        lead_lab::analyze::records::Trigger::Manual,
    );
    orphan.status = "running".into();
    orphan.attempts = 1;
    orphan.updated_at = chrono::Utc::now() - chrono::Duration::hours(1);
    records.save_run(&orphan).await.unwrap();
    let mut app = analysis_app(&db, Some(&ollama), |_| {}).await;
    let view = finished(&app, &run_id.to_string()).await;
    assert_eq!(view["run"]["status"], "succeeded", "{view}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_prints_the_report_as_text_and_as_json() {
    let day = a_day();
    let ollama = FakeOllama::start(vec![
        Reply::GoodJson(plain_report(&day)),
        Reply::GoodJson(plain_report(&day)),
    ])
    .await;
    let stack = crate::support::Stack::require().await;
    let run = |json: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lead-lab"));
        command
            .args(["analyze", "--day", &day])
            .env_remove("LEADLAB_CONFIG")
            .env("LEADLAB_CLICKHOUSE_URL", &stack.clickhouse.url)
            .env("LEADLAB_CLICKHOUSE_USER", &stack.clickhouse.user)
            .env(
                "LEADLAB_CLICKHOUSE_PASSWORD",
                stack.clickhouse.password.expose(),
            )
            .env("LEADLAB_OTEL_ENDPOINT", &stack.otlp_grpc)
            .env(
                "LEADLAB_OTEL_SERVICE_NAME",
                crate::support::unique_name("cli"),
            )
            .env("LEADLAB_OLLAMA_URL", &ollama.url);
        if json {
            command.arg("--json");
        }
        command.output().expect("lead-lab runs")
    };
    let text = run(false);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    assert!(
        stdout.contains(&format!("Analysis of {day}")) && stdout.contains("Summary"),
        "{stdout}"
    );
    let json_out = run(true);
    assert!(json_out.status.success());
    let parsed: Value = serde_json::from_slice(&json_out.stdout).expect("--json prints JSON");
    assert_eq!(parsed["summary"]["generator"], "model");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schedule_analyses_yesterday() {
    let yesterday = (chrono::Utc::now().date_naive() - chrono::Duration::days(1)).to_string();
    let replies = (0..20)
        .map(|_| Reply::GoodJson(plain_report(&yesterday)))
        .collect();
    let ollama = FakeOllama::start(replies).await;
    let db = TestDatabase::migrated().await;
    let settings = ollama.settings();
    let mut app = TestApp::spawn_with(|s| {
        s.clickhouse.database = db.name.clone();
        s.admin_token = ADMIN_TOKEN.into();
        s.llm = settings;
        s.analyzer.schedule = "* * * * * *".into();
        s.analyzer.schedule_enabled = true;
    })
    .await;
    let path = format!("/v1/analyses?day={yesterday}");
    let run = eventually(
        "a scheduled run for yesterday",
        Duration::from_secs(30),
        async || {
            let runs = app.get_json(&path, Some(ADMIN_TOKEN)).await;
            runs.as_array()?
                .iter()
                .find(|r| r["trigger"] == "schedule")
                .cloned()
        },
    )
    .await;
    assert_eq!(run["day"], yesterday.as_str());
    app.stop().await;
}
