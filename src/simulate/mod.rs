//! `lead-lab simulate`: realistic multi-source lead traffic with injected incidents,
//! sent through the real ingest path — live, or backfilled at simulated times.

pub mod crm;
pub mod plan;
pub mod scenario;
pub mod send;
pub mod summary;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;
use opentelemetry_sdk::trace::SdkTracer;

use crm::{CrmState, FakeCrm};
use plan::Span;
use scenario::{Scenario, ScenarioError};
use send::{Pace, Sender};
pub use summary::{Summary, TruthEntry};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `days` calendar days from `first_day`, as fast as the service answers.
    Backfill { first_day: NaiveDate, days: u32 },
    /// From now on at the scenario's daily curve, `speed` times faster, for `duration`.
    Live {
        speed: f64,
        duration: Option<Duration>,
    },
}

#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub scenario: PathBuf,
    pub mode: Mode,
    pub seed: u64,
    /// Base URL of the lead-lab service.
    pub target: String,
    /// Host the fake CRM here for the run (the service's delivery.url must point to it).
    pub crm_listen: Option<String>,
    /// How long the fake CRM takes to answer during crm_slow.
    pub crm_slow: Duration,
    pub show_progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(
        "the service does not answer at {target} ({reason}); start it first (scripts/run or lead-lab serve)"
    )]
    ServiceDown { target: String, reason: String },
    #[error("cannot host the fake CRM on {listen}: {source}")]
    Crm {
        listen: String,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// What a run did: the service's answers, counted, and the incidents it injected.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub summary: Summary,
    pub ground_truth: Vec<TruthEntry>,
    /// Each incident's evidence (the attempts it changed), in `ground_truth`'s order.
    pub evidence: Vec<plan::Evidence>,
    pub crm_received: Option<u64>,
}

/// The calendar days `--backfill N` covers: the N days before today, in `zone`.
pub fn last_days(zone: Tz, days: u32) -> (NaiveDate, u32) {
    let today = Utc::now().with_timezone(&zone).date_naive();
    (today - chrono::Duration::days(i64::from(days)), days)
}

pub async fn run(options: &SimulateOptions, tracer: SdkTracer) -> Result<RunReport, SimulateError> {
    let scenario = Scenario::load(&options.scenario)?;
    let zone: Tz = scenario.time_zone.parse().unwrap_or(Tz::UTC);
    let (span, pace) = span_and_pace(options.mode, zone);
    let windows = plan::windows(&scenario, span);
    let plan::Plan {
        requests: mut planned,
        evidence,
    } = plan::plan(&scenario, span, options.seed);
    if let Pace::Live { plan_start, .. } = pace {
        planned.retain(|p| p.at >= plan_start);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    check_service(&http, &options.target).await?;
    let crm = match &options.crm_listen {
        Some(listen) => Some(host_crm(listen, CrmState::new(&windows, options.crm_slow)).await?),
        None => None,
    };
    let leads = planned.iter().map(|p| p.leads() as u64).sum();
    let progress = send::progress_bar(leads, matches!(options.mode, Mode::Live { .. }));
    if !options.show_progress {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let sender = Arc::new(Sender {
        http,
        target: options.target.trim_end_matches('/').to_owned(),
        simulator_key: scenario.simulator_key.clone(),
        tracer,
        time_zone: zone,
        pace,
    });
    let summary = sender.run(planned, progress).await;
    let crm_received = crm.map(|(state, task)| {
        task.abort();
        state.received.load(std::sync::atomic::Ordering::Relaxed)
    });
    Ok(RunReport {
        summary,
        ground_truth: summary::ground_truth(&windows),
        evidence,
        crm_received,
    })
}

fn span_and_pace(mode: Mode, zone: Tz) -> (Span, Pace) {
    match mode {
        Mode::Backfill { first_day, days } => (Span { first_day, days }, Pace::Backfill),
        Mode::Live { speed, duration } => {
            let now = Utc::now();
            let wall_start = tokio::time::Instant::now();
            let span = Span {
                first_day: now.with_timezone(&zone).date_naive(),
                days: 2,
            };
            let pace = Pace::Live {
                plan_start: now,
                wall_start,
                speed,
                until: duration.map(|d| wall_start + d),
            };
            (span, pace)
        }
    }
}

async fn check_service(http: &reqwest::Client, target: &str) -> Result<(), SimulateError> {
    let url = format!("{}/healthz", target.trim_end_matches('/'));
    let down = |reason: String| SimulateError::ServiceDown {
        target: target.to_owned(),
        reason,
    };
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|e| down(e.to_string()))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(down(format!("/healthz answered {}", response.status())))
    }
}

async fn host_crm(
    listen: &str,
    state: CrmState,
) -> Result<(Arc<CrmState>, tokio::task::JoinHandle<()>), SimulateError> {
    let crm = FakeCrm::bind(listen, state)
        .await
        .map_err(|source| SimulateError::Crm {
            listen: listen.to_owned(),
            source,
        })?;
    let state = crm.state.clone();
    let task = tokio::spawn(async move {
        if let Err(err) = crm.run().await {
            tracing::warn!(error = %err, "the fake CRM stopped");
        }
    });
    Ok((state, task))
}
