//! The simulator through the real ingest path: what it counts is what lands in
//! `lead_submissions`, the same seed sends the same traffic, and every incident type
//! leaves its signature in the data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use lead_lab::config::{DeliveryKind, Settings};
use lead_lab::simulate::{self, Mode, RunReport, SimulateOptions};

use crate::app::TestApp;
use crate::support::{eventually, free_port, logged};

pub const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");

/// A service with the shipped sources, forms and keys, delivering to a fake CRM that
/// the simulator hosts on `crm_port`.
pub async fn lab(crm_port: u16) -> TestApp {
    let shipped = Settings::load(Some(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/local.toml"
    ))))
    .expect("config/local.toml loads");
    TestApp::spawn_with(|s| {
        s.sources = shipped.sources.clone();
        s.forms = shipped.forms.clone();
        s.rate_limit = shipped.rate_limit;
        s.delivery.kind = DeliveryKind::Webhook;
        s.delivery.url = format!("http://127.0.0.1:{crm_port}/leads");
        // Far below the fake CRM's slow answers (2.5 s), far above a normal answer on a
        // loaded 2-core machine: whether a delivery times out is the scenario's doing.
        s.delivery.timeout_ms = 1_000;
        s.delivery.max_attempts = 1;
    })
    .await
}

pub async fn backfill(
    app: &TestApp,
    scenario: &Path,
    first_day: NaiveDate,
    days: u32,
    seed: u64,
    crm_port: u16,
) -> RunReport {
    let options = SimulateOptions {
        scenario: scenario.to_owned(),
        mode: Mode::Backfill { first_day, days },
        seed,
        target: app.base.clone(),
        crm_listen: Some(format!("127.0.0.1:{crm_port}")),
        crm_slow: Duration::from_millis(2_500),
        show_progress: false,
    };
    let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    simulate::run(
        &options,
        opentelemetry::trace::TracerProvider::tracer(&tracer, "sim"),
    )
    .await
    .expect("the simulation runs")
}

/// A stopped lab after `days` of a scenario from `first_day` have been backfilled and
/// have landed: its database holds the days, ready to analyse.
pub async fn replayed(
    scenario: &Path,
    first_day: NaiveDate,
    days: u32,
    seed: u64,
) -> (TestApp, RunReport) {
    let crm = free_port();
    let mut app = lab(crm).await;
    let report = backfill(&app, scenario, first_day, days, seed, crm).await;
    landed(&app, report.summary.total()).await;
    app.stop().await;
    (app, report)
}

/// A scenario shipped under scenarios/.
pub fn shipped(file: &str) -> PathBuf {
    PathBuf::from(SCENARIOS).join(file)
}

pub fn week_start() -> NaiveDate {
    chrono::Utc::now().date_naive() - chrono::Duration::days(7)
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Count {
    key: String,
    n: u64,
}

/// Rows of the app per `day|source|outcome|reason`, once `total` have arrived.
pub async fn landed(app: &TestApp, total: u64) -> BTreeMap<String, u64> {
    let client = app.stack.client();
    eventually("every simulated attempt in lead_submissions", Duration::from_secs(60), async || {
        let query = client
            .query(
                "SELECT concat(toString(toDate(event_time, 'UTC')), '|', source, '|', outcome, '|', reason) AS key, \
                 count() AS n FROM lead_submissions WHERE service = ? GROUP BY key",
            )
            .bind(&app.service);
            let counts = logged(query.fetch_all::<Count>().await)?;
            let sum: u64 = counts.iter().map(|c| c.n).sum();
            (sum >= total).then(|| counts.into_iter().map(|c| (c.key, c.n)).collect())

})
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_week_of_backfill_lands_exactly_as_the_simulator_counted_it() {
    let crm = free_port();
    let mut app = lab(crm).await;
    let scenario = PathBuf::from(SCENARIOS).join("default.toml");
    let report = backfill(&app, &scenario, week_start(), 7, 1, crm).await;
    let rows = landed(&app, report.summary.total()).await;
    assert_eq!(
        rows, report.summary.attempts,
        "per day, source, outcome and reason"
    );
    app.stop().await;

    let sum = &report.summary;
    assert_eq!(sum.by(0).len(), 7, "seven days");
    assert_eq!(sum.by(1).len(), 6, "every source: {:?}", sum.by(1));
    for outcome in ["accepted", "rejected", "failed"] {
        assert!(sum.by(2).contains_key(outcome), "{outcome} missing");
    }
    for reason in [
        "invalid_field",
        "unauthorized",
        "source_key_mismatch",
        "rate_limited",
        "duplicate",
        "downstream_error",
        "downstream_timeout",
    ] {
        assert!(
            sum.by(3).contains_key(reason),
            "{reason} missing: {:?}",
            sum.by(3)
        );
    }
    assert_eq!(
        report.ground_truth.len(),
        9,
        "every incident of the scenario is labelled"
    );
    let client = app.stack.client();
    let endpoints: Vec<String> = client
        .query("SELECT DISTINCT endpoint FROM lead_submissions WHERE service = ? ORDER BY endpoint")
        .bind(&app.service)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(endpoints, ["batch", "forms", "leads"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_seed_sends_the_same_traffic() {
    let scenario = PathBuf::from(SCENARIOS).join("quiet.toml");
    let mut summaries = Vec::new();
    for _ in 0..2 {
        let crm = free_port();
        let mut app = lab(crm).await;
        let report = backfill(&app, &scenario, week_start(), 2, 7, crm).await;
        app.stop().await;
        summaries.push(report.summary);
    }
    assert!(summaries[0].total() > 500);
    assert_eq!(summaries[0], summaries[1]);
}

/// The default scenario cut down to one incident (moved to day 1 of two) and the sources
/// it involves, written to a temp file.
fn single_incident_scenario(kind: &str, dir: &Path) -> (PathBuf, toml::Value) {
    let text = std::fs::read_to_string(PathBuf::from(SCENARIOS).join("default.toml")).unwrap();
    let mut scenario: toml::Value = toml::from_str(&text).unwrap();
    let mut incident = scenario["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"].as_str() == Some(kind))
        .expect("the default scenario has this incident")
        .clone();
    incident["day"] = toml::Value::Integer(1);
    let involved: Vec<String> = ["source", "key_of"]
        .iter()
        .filter_map(|k| incident.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
        .collect();
    let sources = scenario["sources"].as_array().unwrap().iter().filter(|s| {
        involved.is_empty() && s["name"].as_str() == Some("quiz")
            || involved.iter().any(|name| s["name"].as_str() == Some(name))
    });
    scenario["sources"] = toml::Value::Array(sources.cloned().collect());
    scenario["incidents"] = toml::Value::Array(vec![incident.clone()]);
    let path = dir.join(format!("{kind}.toml"));
    std::fs::write(&path, toml::to_string(&scenario).unwrap()).unwrap();
    (path, incident)
}

/// Attempts of the app matching `condition`, inside and outside the incident's window.
async fn inside_and_outside(app: &TestApp, window: (&str, &str), condition: &str) -> (u64, u64) {
    let sql = format!(
        "SELECT countIf(inside), countIf(NOT inside) FROM ( \
           SELECT event_time >= parseDateTime64BestEffort(?, 9) \
              AND event_time < parseDateTime64BestEffort(?, 9) AS inside \
           FROM lead_submissions WHERE service = ? AND ({condition}))"
    );
    app.stack
        .client()
        .query(&sql)
        .bind(window.0)
        .bind(window.1)
        .bind(&app.service)
        .fetch_one()
        .await
        .unwrap()
}

/// Backfills two days with one incident on the second and returns the app and window.
async fn replay(kind: &str) -> (TestApp, toml::Value, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (path, incident) = single_incident_scenario(kind, dir.path());
    let first_day = chrono::Utc::now().date_naive() - chrono::Duration::days(3);
    let (app, report) = replayed(&path, first_day, 2, 3).await;
    let truth = &report.ground_truth[0];
    assert_eq!(truth.kind, kind);
    (app, incident, truth.start.clone(), truth.end.clone())
}

fn text(incident: &toml::Value, key: &str) -> String {
    incident[key].as_str().unwrap().to_owned()
}

/// Replays one `kind` of incident and asserts that at least `min_inside` attempts match
/// the condition (made from the incident) inside its window and none outside it.
async fn assert_confined(kind: &str, min_inside: u64, condition: impl Fn(&toml::Value) -> String) {
    let (app, incident, start, end) = replay(kind).await;
    let (inside, outside) = inside_and_outside(&app, (&start, &end), &condition(&incident)).await;
    assert!(
        inside >= min_inside && outside == 0,
        "{kind}: inside {inside}, outside {outside}"
    );
}

/// The condition "attempts refused for `reason` on the incident's source".
fn reason_on_its_source(reason: &str) -> impl Fn(&toml::Value) -> String {
    move |incident| {
        format!(
            "reason = '{reason}' AND source = '{}'",
            text(incident, "source")
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_shows_as_unauthorized_attempts_of_its_source() {
    assert_confined("wrong_key", 10, reason_on_its_source("unauthorized")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_siblings_key_shows_as_source_key_mismatch_on_the_claimed_source() {
    assert_confined(
        "foreign_key",
        10,
        reason_on_its_source("source_key_mismatch"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_field_shows_as_invalid_field_on_its_page() {
    let (app, incident, start, end) = replay("broken_field").await;
    let condition = format!(
        "reason = 'invalid_field' AND page = '{}' AND field = '{}'",
        text(&incident, "page"),
        text(&incident, "field")
    );
    let (inside, outside) = inside_and_outside(&app, (&start, &end), &condition).await;
    assert!(
        inside >= 10 && outside <= 2,
        "inside {inside}, outside {outside}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bot_burst_is_rate_limited_on_one_client() {
    assert_confined("bot_burst", 10, |_| {
        "reason = 'rate_limited' AND client_id = 'quiz-app'".to_owned()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crm_outage_fails_deliveries_as_downstream_error() {
    assert_confined("crm_down", 3, |_| "reason = 'downstream_error'".to_owned()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_crm_fails_deliveries_as_downstream_timeout() {
    assert_confined("crm_slow", 1, |_| {
        "reason = 'downstream_timeout'".to_owned()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_source_sends_nothing_in_its_window() {
    let (app, incident, start, end) = replay("source_silent").await;
    let condition = format!("source = '{}'", text(&incident, "source"));
    let (inside, outside) = inside_and_outside(&app, (&start, &end), &condition).await;
    assert!(
        inside == 0 && outside >= 50,
        "inside {inside}, outside {outside}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_page_appears_with_mostly_failed_attempts() {
    let (app, incident, start, end) = replay("new_page").await;
    let page = format!("page = '{}'", text(&incident, "page"));
    let (inside, outside) = inside_and_outside(&app, (&start, &end), &page).await;
    // Outside only the retries of people who failed just before the window closed.
    assert!(
        inside >= 20 && outside * 20 <= inside,
        "inside {inside}, outside {outside}"
    );
    let failed = format!("{page} AND outcome != 'accepted'");
    let (failing, _) = inside_and_outside(&app, (&start, &end), &failed).await;
    assert!(failing * 2 >= inside, "{failing} of {inside} failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_surge_shows_as_many_duplicates() {
    let (app, incident, start, end) = replay("duplicate_surge").await;
    let condition = format!(
        "reason = 'duplicate' AND source = '{}'",
        text(&incident, "source")
    );
    let (inside, outside) = inside_and_outside(&app, (&start, &end), &condition).await;
    // Per hour: the window's hours against the rest of the two days.
    let hours =
        |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp() as f64 / 3600.0;
    let window_hours = hours(&end) - hours(&start);
    let (rate_in, rate_out) = (
        inside as f64 / window_hours,
        outside as f64 / (48.0 - window_hours),
    );
    assert!(
        inside >= 10 && rate_in > 5.0 * rate_out,
        "inside {inside}, outside {outside}"
    );
}
