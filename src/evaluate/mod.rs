//! `lead-lab eval`: the detectors scored against labelled scenarios. Each scenario is
//! backfilled through the real path (an in-process service, the collector, ClickHouse)
//! under a service name of its own; its rows are copied into a scratch database
//! (created and migrated here, dropped after), where every analysed day gets its facts
//! and findings (the rules path: no model), scored against the injected incidents.
//!
//! This module sits above `http` and `simulate` (it runs both), below `cli`.

pub mod render;
pub mod score;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::analyze::detect;
use crate::analyze::facts::{self, FactsError, FactsQuery};
use crate::config::{DeliveryKind, Settings};
use crate::http::{Application, ServeError};
use crate::simulate::plan::{self, Span};
use crate::simulate::scenario::{Scenario, ScenarioError};
use crate::simulate::{self, Mode, SimulateError, SimulateOptions};
use crate::store::migrate::{MigrateError, Migrator, SchemaTarget};
use score::{DayResult, Label, Score};

/// The fake CRM's slow answers: far above the delivery timeout eval sets.
const CRM_SLOW: Duration = Duration::from_millis(2_500);
/// The service waits this long for the CRM, so whether a delivery times out is the
/// scenario's doing, not the machine's load.
const DELIVERY_TIMEOUT_MS: u64 = 1_000;
/// Rows still arriving keep the wait going; this long without a new one ends it.
const LANDING_STALL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub scenarios: Vec<PathBuf>,
    pub seed: u64,
    /// Keep the scratch databases (their names are in the result).
    pub keep: bool,
    pub show_progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("cannot prepare the scratch database: {0}")]
    Migrate(#[from] MigrateError),
    #[error("cannot start the service for the backfill: {0}")]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Simulate(#[from] SimulateError),
    #[error(
        "only {landed} of {sent} attempts reached lead_submissions in `{database}`; is the \
         collector running and writing there (clickhouse.database)?"
    )]
    NotLanded {
        landed: u64,
        sent: u64,
        database: String,
    },
    #[error("ClickHouse refused {what}: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error(transparent)]
    Facts(#[from] FactsError),
}

/// One scenario's run and its figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioEval {
    pub scenario: String,
    pub file: String,
    pub time_zone: String,
    pub seed: u64,
    pub first_day: NaiveDate,
    pub days: u32,
    pub attempts: u64,
    /// Set when the scratch database was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(flatten)]
    pub score: Score,
}

/// Runs every scenario in turn (they share the service's CPU; in parallel they would
/// only contend).
pub async fn evaluate(
    settings: &Settings,
    options: &EvalOptions,
) -> Result<Vec<ScenarioEval>, EvalError> {
    let mut results = Vec::with_capacity(options.scenarios.len());
    for (n, path) in options.scenarios.iter().enumerate() {
        let scenario = Scenario::load(path)?;
        if options.show_progress {
            eprintln!(
                "eval: scenario {}/{}: {} ({})",
                n + 1,
                options.scenarios.len(),
                scenario.name,
                path.display()
            );
        }
        let scratch = Scratch::create(settings).await?;
        let result = evaluate_one(settings, options, path, &scenario, &scratch).await;
        let kept = if options.keep {
            Some(scratch.database.clone())
        } else {
            scratch.drop().await?;
            None
        };
        let mut result = result?;
        result.database = kept;
        results.push(result);
    }
    Ok(results)
}

async fn evaluate_one(
    settings: &Settings,
    options: &EvalOptions,
    path: &std::path::Path,
    scenario: &Scenario,
    scratch: &Scratch,
) -> Result<ScenarioEval, EvalError> {
    let zone: Tz = scenario.time_zone.parse().unwrap_or(Tz::UTC);
    let (first_day, days) = simulate::last_days(zone, scenario.eval.days);
    let service = format!("{}-eval-{}", settings.otel.service_name, short_id());
    let span = Span { first_day, days };
    let (attempts, evidence) = backfill(settings, options, path, scratch, &service, span).await?;
    scratch.copy_rows(settings, &service, attempts).await?;
    let windows = plan::windows(scenario, span);
    let analysed = analysed_days(scenario, span, &windows);
    let progress = day_bar(analysed.len(), options.show_progress);
    let mut results = Vec::with_capacity(analysed.len());
    for day in analysed {
        progress.set_message(day.to_string());
        let query = FactsQuery {
            day,
            time_zone: zone,
            baseline_days: settings.analyzer.baseline_days,
            service: Some(service.clone()),
            burst_per_minute: settings.detectors.burst_per_minute,
        };
        let day_facts = facts::compute(&scratch.client(), &query, Utc::now()).await?;
        let findings = detect::detect(&day_facts, &settings.detectors);
        let (start, end) = day_bounds(zone, day);
        let labels = windows
            .iter()
            .zip(&evidence)
            .filter_map(|(w, evidence)| Label::of_day(w, evidence, day, start, end))
            .collect();
        results.push(DayResult {
            day,
            labels,
            findings,
        });
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(ScenarioEval {
        scenario: scenario.name.clone(),
        file: path.display().to_string(),
        time_zone: scenario.time_zone.clone(),
        seed: options.seed,
        first_day,
        days,
        attempts,
        database: None,
        score: score::score(&results),
    })
}

/// Sends the scenario through a service of its own (its dedup warmed from the empty
/// scratch database, deliveries to the fake CRM the simulator hosts); returns the
/// attempts it made and each incident's evidence.
async fn backfill(
    settings: &Settings,
    options: &EvalOptions,
    path: &std::path::Path,
    scratch: &Scratch,
    service: &str,
    span: Span,
) -> Result<(u64, Vec<plan::Evidence>), EvalError> {
    let crm = free_address();
    let mut serving = settings.clone();
    serving.otel.service_name = service.to_owned();
    serving.clickhouse.database = scratch.database.clone();
    serving.http.listen = "127.0.0.1:0".into();
    serving.analyzer.schedule_enabled = false;
    serving.delivery.kind = DeliveryKind::Webhook;
    serving.delivery.url = format!("http://{crm}/leads");
    serving.delivery.timeout_ms = DELIVERY_TIMEOUT_MS;
    serving.delivery.max_attempts = 1;
    let app = Application::build(serving).await?;
    let target = format!("http://{}", app.address());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let simulate = SimulateOptions {
        scenario: path.to_owned(),
        mode: Mode::Backfill {
            first_day: span.first_day,
            days: span.days,
        },
        seed: options.seed,
        target,
        crm_listen: Some(crm),
        crm_slow: CRM_SLOW,
        show_progress: options.show_progress,
    };
    // The simulator's own client spans are not what is evaluated: they go nowhere.
    let tracer = opentelemetry::trace::TracerProvider::tracer(
        &opentelemetry_sdk::trace::SdkTracerProvider::builder().build(),
        "lead-lab-eval",
    );
    let report = simulate::run(&simulate, tracer).await;
    let _ = stop.send(());
    // Stopping flushes the service's spans to the collector.
    if let Ok(served) = running.await {
        served?;
    }
    let report = report?;
    Ok((report.summary.total(), report.evidence))
}

/// The days scored: from `first_analysed_day` on, and every earlier one an incident
/// touches.
fn analysed_days(scenario: &Scenario, span: Span, windows: &[plan::Window<'_>]) -> Vec<NaiveDate> {
    let zone: Tz = scenario.time_zone.parse().unwrap_or(Tz::UTC);
    let last = span.first_day + chrono::Duration::days(i64::from(span.days) - 1);
    let first =
        span.first_day + chrono::Duration::days(i64::from(scenario.eval.first_analysed_day));
    let mut days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
    for window in windows {
        for day in span.first_day.iter_days().take_while(|d| *d <= last) {
            let (start, end) = day_bounds(zone, day);
            if window.start < end && start < window.end && !days.contains(&day) {
                days.push(day);
            }
        }
    }
    days.sort();
    days
}

/// The day's local midnights in UTC (the analyzer's day).
fn day_bounds(zone: Tz, day: NaiveDate) -> (chrono::DateTime<Utc>, chrono::DateTime<Utc>) {
    let midnight = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(zone).earliest())
            .map(|t| t.to_utc())
            .unwrap_or_else(|| d.and_time(chrono::NaiveTime::MIN).and_utc())
    };
    (midnight(day), midnight(day + chrono::Duration::days(1)))
}

fn day_bar(days: usize, show: bool) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(days as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("analysing {bar:30} {pos}/{len} days {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if !show {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A loopback address nothing listens on right now, for the fake CRM.
fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "127.0.0.1:18090".into())
}

/// A database of the schema's own, for one scenario's rows and analyses.
struct Scratch {
    database: String,
    /// Bound to no database: statements name their tables fully.
    server: clickhouse::Client,
}

impl Scratch {
    async fn create(settings: &Settings) -> Result<Self, EvalError> {
        let mut scratch = settings.clone();
        scratch.clickhouse.database =
            format!("{}_eval_{}", settings.clickhouse.database, short_id());
        let target = SchemaTarget::from_settings(&scratch)?;
        let server = crate::store::server_client(&settings.clickhouse);
        Migrator::new(&server, target).run().await?;
        Ok(Self {
            database: scratch.clickhouse.database,
            server,
        })
    }

    fn client(&self) -> clickhouse::Client {
        self.server.clone().with_database(&self.database)
    }

    /// Waits until the service's `sent` attempts are in the collector's database, then
    /// copies them into the scratch database.
    async fn copy_rows(
        &self,
        settings: &Settings,
        service: &str,
        sent: u64,
    ) -> Result<(), EvalError> {
        let source = &settings.clickhouse.database;
        let client = &self.server;
        let count = format!("SELECT count() FROM {source}.lead_submissions WHERE service = ?");
        let query = |what| move |source| EvalError::Query { what, source };
        let mut landed = 0;
        let mut last_growth = tokio::time::Instant::now();
        while landed < sent {
            let now: u64 = client
                .query(&count)
                .bind(service)
                .fetch_one()
                .await
                .map_err(query("counting the landed rows"))?;
            if now > landed {
                landed = now;
                last_growth = tokio::time::Instant::now();
            } else if last_growth.elapsed() > LANDING_STALL {
                return Err(EvalError::NotLanded {
                    landed,
                    sent,
                    database: source.clone(),
                });
            }
            if landed < sent {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let copy = format!(
            "INSERT INTO {}.lead_submissions SELECT * FROM {source}.lead_submissions WHERE service = ?",
            self.database
        );
        client
            .query(&copy)
            .bind(service)
            .execute()
            .await
            .map_err(query("copying the rows into the scratch database"))
    }

    async fn drop(self) -> Result<(), EvalError> {
        self.server
            .query(&format!("DROP DATABASE IF EXISTS {}", self.database))
            .execute()
            .await
            .map_err(|source| EvalError::Query {
                what: "dropping the scratch database",
                source,
            })
    }
}
