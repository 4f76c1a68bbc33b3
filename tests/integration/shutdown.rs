//! Stopping the service (what SIGTERM does: `run_until`'s signal resolves) never loses an
//! analysis: one that finishes within the grace period is finished, one that does not is
//! handed back and the next start resumes it at once.

use std::time::{Duration, Instant};

use lead_lab::analyze::records::{INTERRUPTED, Records, RunRow};
use serde_json::Value;

use crate::fake_ollama::{FakeOllama, Reply};
use crate::support::TestDatabase;
use crate::support::analysis::{
    a_day, analysis_app, finished, plain_report, run_in, start_analysis,
};

async fn started_run(app: &crate::app::TestApp, day: &str) -> String {
    let accepted: Value = start_analysis(app, day).await.json().await.unwrap();
    let run_id = accepted["run_id"].as_str().expect("a run id").to_owned();
    run_in(app, &run_id, &["running"]).await;
    run_id
}

async fn stored_run(records: &Records, run_id: &str) -> RunRow {
    records
        .run(run_id.parse().unwrap())
        .await
        .unwrap()
        .expect("the run is stored")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_analysis_running_at_shutdown_finishes_within_the_grace_period() {
    let day = a_day();
    let slow = Reply::slow(Duration::from_secs(2), Reply::GoodJson(plain_report(&day)));
    let ollama = FakeOllama::start(vec![slow]).await;
    let db = TestDatabase::migrated().await;
    let mut app = analysis_app(&db, Some(&ollama), |s| s.http.shutdown_grace_secs = 30).await;
    let run_id = started_run(&app, &day).await;
    app.stop().await;
    let records = Records::new(db.bound_client());
    let run = stored_run(&records, &run_id).await;
    assert_eq!(run.status, "succeeded", "{run:?}");
    let summary = records.summary_of_run(run.run_id).await.unwrap();
    assert!(
        summary.is_some(),
        "the report was written before the service stopped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_analysis_cut_by_the_grace_period_is_resumed_by_the_next_start() {
    let day = a_day();
    let hung = Reply::slow(
        Duration::from_secs(120),
        Reply::GoodJson(plain_report(&day)),
    );
    let ollama = FakeOllama::start(vec![hung, Reply::GoodJson(plain_report(&day))]).await;
    let db = TestDatabase::migrated().await;
    let mut app = analysis_app(&db, Some(&ollama), |s| {
        s.http.shutdown_grace_secs = 1;
        s.llm.timeout_ms = 180_000;
    })
    .await;
    let run_id = started_run(&app, &day).await;
    let stopping = Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "the stop waited for the grace period, not for the model"
    );
    let records = Records::new(db.bound_client());
    let left = stored_run(&records, &run_id).await;
    assert_eq!(
        (left.status.as_str(), left.error.as_str()),
        ("queued", INTERRUPTED)
    );
    assert!(
        records.summary_of_run(left.run_id).await.unwrap().is_none(),
        "nothing half-written"
    );

    // Not stale (the default takes minutes): resumed because it was handed back.
    let mut next = app.restart().await;
    let view = finished(&next, &run_id).await;
    assert_eq!(view["run"]["status"], "succeeded", "{view}");
    let versions = records.summaries_of(day.parse().unwrap()).await.unwrap();
    assert_eq!(versions.len(), 1, "one report for the one run");
    next.stop().await;
}
