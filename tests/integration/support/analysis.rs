//! Helpers of the tests that run analyses through the API: a service whose analysis
//! records live in a database of its own, a model report that is always grounded, and
//! starting and waiting for runs.

use std::time::Duration;

use serde_json::{Value, json};

use super::{TestDatabase, eventually};
use crate::app::TestApp;
use crate::fake_ollama::FakeOllama;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A day whose analysis tests run: two days ago, inside every retention and baseline.
pub fn a_day() -> String {
    (chrono::Utc::now().date_naive() - chrono::Duration::days(2)).to_string()
}

/// A report with no number or name in it: always grounded.
pub fn plain_report(day: &str) -> Value {
    json!({
        "executive_summary": "Leads arrived through the configured sources.",
        "user_behavior": "People submitted leads during the day.",
        "system_behavior": "The service answered every attempt.",
        "misconfiguration_signals": [],
        "confidence": {"level": "high", "reasons": ["complete day"]},
        "scope": {"day": day, "time_zone": "UTC", "sources_covered": [], "data_completeness": "complete", "not_analysed": []}
    })
}

/// A service whose analysis records live in `db`, so no other test's runs are joined,
/// listed or resumed; the model is `ollama` when given (else the default URL, where
/// nothing answers), the schedule is off and retries are quick.
pub async fn analysis_app(
    db: &TestDatabase,
    ollama: Option<&FakeOllama>,
    customize: impl FnOnce(&mut lead_lab::config::Settings),
) -> TestApp {
    let ollama = ollama.map(FakeOllama::settings);
    TestApp::spawn_with(|s| {
        s.clickhouse.database = db.name.clone();
        s.admin_token = ADMIN_TOKEN.into();
        s.analyzer.schedule_enabled = false;
        s.analyzer.retry_backoff_ms = 50;
        if let Some(ollama) = ollama {
            s.llm = ollama;
        }
        customize(s);
    })
    .await
}

/// `POST /v1/analyses` for `day`.
pub async fn start_analysis(app: &TestApp, day: &str) -> reqwest::Response {
    app.http
        .post(app.url("/v1/analyses"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "day": day }))
        .send()
        .await
        .unwrap()
}

/// Polls a run until its status is one of `statuses`; returns the run with its summary.
pub async fn run_in(app: &TestApp, run_id: &str, statuses: &[&str]) -> Value {
    let path = format!("/v1/analyses/{run_id}");
    eventually(
        "the analysis to reach its status",
        Duration::from_secs(60),
        async || {
            let view = app.get_json(&path, Some(ADMIN_TOKEN)).await;
            let status = view["run"]["status"].as_str().unwrap_or_default();
            statuses.contains(&status).then_some(view)
        },
    )
    .await
}

/// Polls a run until it ends.
pub async fn finished(app: &TestApp, run_id: &str) -> Value {
    run_in(app, run_id, &["succeeded", "degraded", "failed"]).await
}
