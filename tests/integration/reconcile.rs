//! A loss in transit is counted, not invisible: with an export queue too small for its
//! traffic the service drops spans (as the SDK does when a collector falls behind), its
//! counter still counts every attempt, and the day's facts, report and console say how
//! many attempts are missing from the record.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::app::TestApp;
use crate::console::{chromium, dom, field_after};
use crate::ingest::lead;
use crate::support::{ClickHouseEnv, eventually};

const BATCHES: u64 = 30;
const PER_BATCH: u64 = 10;

#[tokio::test(flavor = "multi_thread")]
async fn spans_lost_on_the_way_are_counted_in_the_facts_the_report_and_the_console() {
    chromium();
    let mut app = TestApp::spawn_with(|s| {
        // A queue of 8 spans, exported only when full: most of a 10-lead batch's spans
        // find it full and are dropped; the counter is exported every 500 ms regardless.
        s.otel.max_queue_size = 8;
        s.otel.max_export_batch_size = 8;
        s.otel.scheduled_delay_ms = 60_000;
    })
    .await;
    for b in 0..BATCHES {
        let leads: Vec<Value> = (0..PER_BATCH)
            .map(|i| lead("quiz", &format!("/quiz/lossy/{b}/{i}")))
            .collect();
        let answer = app
            .post_json(
                "/v1/leads/batch",
                Some(&app.keys.quiz),
                &json!({ "leads": leads }),
            )
            .await;
        assert_eq!(answer.status(), 200);
    }
    let attempts = BATCHES * PER_BATCH;

    // The console, while the service runs: its stats read the counter and the rows.
    let recording = eventually(
        "the counter of every attempt",
        Duration::from_secs(30),
        || async {
            let stats = app.get_json("/v1/stats/recording", None).await;
            (stats["counted"] == json!(attempts)).then_some(stats)
        },
    )
    .await;
    let recorded = recording["recorded"].as_u64().unwrap();
    assert!(recorded < attempts, "spans were dropped: {recording}");
    assert_eq!(
        recording["missing"],
        json!(attempts - recorded),
        "{recording}"
    );
    assert_eq!(recording["incomplete"], json!(true));
    let page = dom(&app.url("/?refresh=0"), 1440, 900, 10_000).await;
    let card = "data-card=\"recording\"";
    assert_eq!(field_after(&page, card, "counted"), attempts.to_string());
    assert!(
        field_after(&page, card, "missing").starts_with(&(attempts - recorded).to_string()),
        "{page}"
    );
    assert!(page.contains("data-incomplete=\"true\""));
    app.stop().await;

    // The day's analysis, as `lead-lab analyze` writes it.
    let today = chrono::Utc::now().date_naive().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_lead-lab"))
        .args(["analyze", "--day", &today, "--json"])
        .env_remove("LEADLAB_CONFIG")
        .clickhouse_env(&app.stack.clickhouse, &app.stack.clickhouse.database)
        .env("LEADLAB_OTEL_SERVICE_NAME", &app.service)
        .env("LEADLAB_OTEL_ENABLED", "false")
        .env("LEADLAB_OLLAMA_URL", "http://127.0.0.1:9")
        .env("LEADLAB_ANALYZER_MAX_ATTEMPTS", "1")
        .output()
        .expect("lead-lab analyze runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&output.stderr)));
    let summary = &report["summary"];
    let missing = attempts - recorded;
    let note = format!("{missing} of {attempts} counted attempts");
    let completeness = summary["scope"]["data_completeness"]
        .as_str()
        .unwrap_or_default();
    assert!(completeness.contains(&note), "{completeness}");
    assert!(
        summary["confidence_reasons"].to_string().contains(&note),
        "{summary}"
    );
    assert_ne!(summary["confidence"], "high");
    let findings = summary["findings"].as_array().cloned().unwrap_or_default();
    let loss = findings
        .iter()
        .find(|f| f["kind"] == "record_loss")
        .unwrap_or_else(|| panic!("a record_loss finding: {findings:?}"));
    assert_eq!(loss["evidence"]["missing"], json!(missing as f64));
}
