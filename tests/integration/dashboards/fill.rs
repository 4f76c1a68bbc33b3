//! The data the dashboards' queries run on: a simulator backfill of the default week
//! into the shared `otel` database, live traffic, and analyzer runs for the AI panels.

use std::path::PathBuf;
use std::time::Duration;

use lead_lab::analyze::jobs::Analyzer;
use lead_lab::analyze::records::Trigger;
use serde_json::Value;

use super::expansion::TimeRange;
use super::{LIVE_INTERVAL_SECONDS, WEEK_INTERVAL_SECONDS};
use crate::fake_ollama::{FakeOllama, Reply};
use crate::simulate::{SCENARIOS, backfill, lab, landed};
use crate::support::{eventually, free_port, logged};

/// Days the simulator backfills: whole UTC days ending yesterday, so the overview's
/// "today so far" compares live traffic with a full simulated yesterday.
pub(super) const BACKFILL_DAYS: u32 = 8;

/// A report of the fake model with no number or name in it: always grounded.
fn model_report(day: chrono::NaiveDate, executive_summary: &str) -> Value {
    serde_json::json!({
        "executive_summary": executive_summary,
        "user_behavior": "People submitted leads during the day.",
        "system_behavior": "The service answered every attempt.",
        "misconfiguration_signals": [],
        "confidence": {"level": "high", "reasons": ["complete day"]},
        "scope": {"day": day.to_string(), "time_zone": "UTC", "sources_covered": [], "data_completeness": "complete", "not_analysed": []}
    })
}

/// FILL — the data the dashboards read, produced by the product itself in the shared
/// `otel` database (see docs/dashboards.md#where-the-test-gets-its-data):
/// 1. a service of its own (unique service name) gets 8 days of the default scenario
///    from the simulator's backfill, through HTTP, the service's spans and the collector
///    (`lead_submissions`, `otel_traces`);
/// 2. the analyzer analyses three incident days against a fake Ollama: a grounded model
///    report, one quoting a number the facts do not hold (a grounding violation), and a
///    model that answers 500 every time (retried, degraded, rules report) — this fills
///    `analysis_run_states` and `ai_summaries`;
/// 3. the service stops, flushing its metrics (`otel_metrics_sum`, `otel_metrics_histogram`).
///
/// Spans carry the simulated event times of the past days; metric points carry the
/// wall-clock time of this run. Two ranges come back: the week, from the first simulated
/// day to a minute from now, holds both; the live range, the minutes of this run, holds
/// the metric points at the interval Grafana picks for a few minutes.
pub(super) async fn fill() -> (TimeRange, TimeRange) {
    let started = chrono::Utc::now() - chrono::Duration::seconds(5);
    let crm = free_port();
    let mut app = lab(crm).await;
    let scenario = PathBuf::from(SCENARIOS).join("default.toml");
    let today = chrono::Utc::now().date_naive();
    let first_day = today - chrono::Days::new(BACKFILL_DAYS.into());
    let report = backfill(&app, &scenario, first_day, BACKFILL_DAYS, 1, crm).await;
    let mut total = report.summary.total();
    landed(&app, total).await;
    // A few live attempts too: the record-completeness panel compares what the service
    // counted live with the rows of those attempts (replayed history is left out).
    for i in 0..5 {
        let lead = serde_json::json!({
            "name": "Live Visitor",
            "email": format!("live{i}-{}@example.test", uuid::Uuid::new_v4().simple()),
            "source": "quiz",
            "page": "/quiz/start",
            "consent": true,
        });
        // Accepted, or downstream_error once the simulator's CRM is gone: recorded either way.
        let status = app.post_lead(Some("demo-quiz-key"), &lead).await.status();
        assert!([201, 502].contains(&status.as_u16()), "{status}");
    }
    total += 5;
    landed(&app, total).await;

    // Incident days (the scenario's day indexes 4, 5 and 6), so the runs have findings.
    let days: Vec<chrono::NaiveDate> = (4..7).map(|i| first_day + chrono::Days::new(i)).collect();
    let ollama = FakeOllama::start(vec![
        Reply::GoodJson(model_report(
            days[0],
            "Leads arrived through the configured sources.",
        )),
        Reply::GoodJson(model_report(days[1], "There were 987654 attempts.")),
        // Nothing more scripted: the third day's calls get a 500 on every attempt.
    ])
    .await;
    let mut settings = app.settings.clone();
    settings.llm = ollama.settings();
    settings.analyzer.retry_backoff_ms = 20;
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let analyzer = Analyzer::new(&settings, dispatch).expect("the analyzer starts");
    let mut statuses = Vec::new();
    for day in &days {
        let run = analyzer
            .run_now(*day, Trigger::Manual)
            .await
            .unwrap_or_else(|e| panic!("analysis of {day}: {e}"));
        statuses.push(run.status);
    }
    assert_eq!(
        statuses,
        ["succeeded", "succeeded", "degraded"],
        "runs of {days:?}"
    );

    app.stop().await;
    let client = app.stack.client();
    eventually(
        "the stopped service's final leads.submissions points",
        Duration::from_secs(60),
        async || {
            let query = client
                .query(
                    "SELECT toUInt64(sum(v)) FROM (SELECT max(Value) AS v FROM otel_metrics_sum \
                     WHERE ServiceName = ? AND MetricName = 'leads.submissions' \
                     GROUP BY Attributes, StartTimeUnix)",
                )
                .bind(&app.service);
            (logged(query.fetch_one::<u64>().await)? >= total).then_some(())
        },
    )
    .await;

    let from = first_day.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let to = chrono::Utc::now() + chrono::Duration::minutes(1);
    let week = TimeRange {
        from_ms: from.timestamp_millis(),
        to_ms: to.timestamp_millis(),
        interval_s: WEEK_INTERVAL_SECONDS,
    };
    let live = TimeRange {
        from_ms: started.timestamp_millis(),
        interval_s: LIVE_INTERVAL_SECONDS,
        ..week
    };
    (week, live)
}
