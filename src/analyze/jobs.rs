//! Analysis as a job, not a request: runs are queued and persisted with their status
//! and timings, one day never has two runs at once (a second request joins the first),
//! a bounded pool of workers does the work with retries, runs a stopped process left
//! behind are picked up again, and the daily schedule enqueues yesterday.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::facts::{self, FactsQuery};
use super::llm::LlmClient;
use super::narrate::{Narration, NarrationInput, narrate};
use super::recording;
use super::records::{Records, RunRow, RunStatus, SummaryRow, Trigger};
use super::{Finding, detect};
use crate::config::Settings;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid analyzer setting: {0}")]
    Settings(String),
    #[error("invalid model server settings: {0}")]
    Llm(#[from] super::llm::LlmError),
    #[error("cannot read or write analysis records: {0}")]
    Records(#[from] clickhouse::error::Error),
}

/// A submitted analysis: the run it started or joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub run_id: Uuid,
    /// A run for the day was already queued or running; this request joined it.
    pub joined: bool,
}

/// What one attempt produced.
struct Outcome {
    facts_ms: u32,
    narration: Narration,
    findings: Vec<Finding>,
}

pub struct Analyzer {
    records: Records,
    client: clickhouse::Client,
    llm: LlmClient,
    tracer: SdkTracer,
    settings: Settings,
    zone: Tz,
    /// The run of each day being analysed; its first stored row may not be written yet.
    active: Mutex<HashMap<NaiveDate, RunRow>>,
    workers: Arc<Semaphore>,
}

impl Analyzer {
    pub fn new(settings: &Settings, tracer: SdkTracer) -> Result<Arc<Self>, JobError> {
        let zone = settings
            .analyzer
            .time_zone
            .parse()
            .map_err(|_| JobError::Settings("analyzer.time_zone".into()))?;
        let client = crate::store::client(&settings.clickhouse);
        Ok(Arc::new(Self {
            records: Records::new(client.clone()),
            client,
            llm: LlmClient::new(&settings.llm)?,
            tracer,
            settings: settings.clone(),
            zone,
            active: Mutex::default(),
            workers: Arc::new(Semaphore::new(settings.analyzer.workers.max(1))),
        }))
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    pub fn time_zone(&self) -> Tz {
        self.zone
    }

    /// Queues an analysis of `day` and returns at once, before anything is written: a
    /// day already being analysed is joined instead of analysed twice.
    pub fn submit(self: &Arc<Self>, day: NaiveDate, trigger: Trigger) -> Submitted {
        let row = {
            let mut active = self.lock_active();
            if let Some(run) = active.get(&day) {
                return Submitted {
                    run_id: run.run_id,
                    joined: true,
                };
            }
            let row = RunRow::queued(Uuid::now_v7(), day, trigger);
            active.insert(day, row.clone());
            row
        };
        let run_id = row.run_id;
        self.spawn(row, true);
        Submitted {
            run_id,
            joined: false,
        }
    }

    /// The state of a run still in this process, for the moments before its first row
    /// is stored.
    pub fn active_run(&self, run_id: Uuid) -> Option<RunRow> {
        self.lock_active()
            .values()
            .find(|run| run.run_id == run_id)
            .cloned()
    }

    pub fn active_run_of(&self, day: NaiveDate) -> Option<RunRow> {
        self.lock_active().get(&day).cloned()
    }

    /// Runs an analysis in this task and returns its final state (the CLI's path).
    pub async fn run_now(
        self: &Arc<Self>,
        day: NaiveDate,
        trigger: Trigger,
    ) -> Result<RunRow, JobError> {
        let submitted = self.submit(day, trigger);
        loop {
            let run = self.records.run(submitted.run_id).await?;
            if let Some(run) = run.filter(|run| run.status().is_final()) {
                return Ok(run);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Picks up runs a stopped process left queued or running.
    pub async fn resume_unfinished(self: &Arc<Self>) -> Result<usize, JobError> {
        let unfinished = self.records.unfinished(self.stale_after()).await?;
        let mut resumed = 0;
        for row in unfinished {
            let claimed = {
                let mut active = self.lock_active();
                !active.contains_key(&row.day) && active.insert(row.day, row.clone()).is_none()
            };
            if claimed {
                tracing::info!(run_id = %row.run_id, day = %row.day, "resuming an unfinished analysis");
                self.spawn(row, false);
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// How long a run may go without a new state before it counts as abandoned: longer
    /// than the slowest attempt (the model's timeout) and the backoff around it.
    fn stale_after(&self) -> Duration {
        let per_attempt = self.settings.llm.timeout_ms + self.settings.analyzer.retry_backoff_ms;
        let attempts = u64::from(self.settings.analyzer.max_attempts.max(1));
        Duration::from_millis((2 * per_attempt * attempts).max(300_000))
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<NaiveDate, RunRow>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `row` on a worker; a new run is first recorded as queued.
    fn spawn(self: &Arc<Self>, row: RunRow, new: bool) {
        let analyzer = self.clone();
        tokio::spawn(async move {
            let day = row.day;
            let recorded = if new {
                analyzer.records.save_run(&row).await
            } else {
                Ok(())
            };
            if let Err(err) = recorded {
                tracing::warn!(run_id = %row.run_id, error = %err, "cannot record the queued run");
            }
            let permit = analyzer.workers.clone().acquire_owned().await;
            analyzer.execute(row).await;
            drop(permit);
            analyzer.lock_active().remove(&day);
        });
    }

    /// Attempts the run up to `max_attempts` times with doubling backoff, then records
    /// how it ended. Never leaves a run without a final state unless the process dies.
    async fn execute(&self, mut row: RunRow) {
        let started = Instant::now();
        let mut span = self
            .tracer
            .span_builder("analysis.run")
            .with_kind(SpanKind::Internal)
            .with_attributes([
                KeyValue::new("analysis.run_id", row.run_id.to_string()),
                KeyValue::new("analysis.day", row.day.to_string()),
                KeyValue::new("analysis.trigger", row.trigger.clone()),
            ])
            .start(&self.tracer);
        let cx = Context::new().with_remote_span_context(span.span_context().clone());
        row.started_at = Some(Utc::now());
        let max_attempts = self.settings.analyzer.max_attempts.max(1);
        let mut backoff = Duration::from_millis(self.settings.analyzer.retry_backoff_ms);
        let mut last = None;
        while u32::from(row.attempts) < max_attempts {
            row.attempts += 1;
            self.save_state(&mut row, RunStatus::Running, "").await;
            let attempt = self.attempt(row.day, &cx).await;
            let retry = match &attempt {
                Ok(outcome) => outcome.narration.degraded,
                Err(_) => true,
            };
            last = Some(attempt);
            if !retry || u32::from(row.attempts) >= max_attempts {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        let status = self.conclude(&mut row, last, started).await;
        span.set_attribute(KeyValue::new("analysis.status", status.as_str()));
        if status == RunStatus::Failed {
            span.set_status(Status::error(row.error.clone()));
        }
        span.end();
    }

    async fn conclude(
        &self,
        row: &mut RunRow,
        last: Option<Result<Outcome, String>>,
        started: Instant,
    ) -> RunStatus {
        row.total_ms = millis(started.elapsed());
        row.finished_at = Some(Utc::now());
        let (status, error) = match last {
            Some(Ok(outcome)) => match self.write_summary(row, &outcome).await {
                Ok(()) => {
                    let status = if outcome.narration.degraded {
                        RunStatus::Degraded
                    } else {
                        RunStatus::Succeeded
                    };
                    (status, outcome.narration.error.unwrap_or_default())
                }
                Err(err) => (RunStatus::Failed, format!("cannot store the report: {err}")),
            },
            Some(Err(err)) => (RunStatus::Failed, err),
            None => (RunStatus::Failed, "no attempt was made".into()),
        };
        self.save_state(row, status, &error).await;
        status
    }

    async fn save_state(&self, row: &mut RunRow, status: RunStatus, error: &str) {
        row.status = status.as_str().into();
        row.error = error.into();
        row.updated_at = Utc::now();
        if let Err(err) = self.records.save_run(row).await {
            tracing::warn!(run_id = %row.run_id, error = %err, "cannot record the run's state");
        }
    }

    /// Facts, detectors, narration: one try. Facts that cannot be read are an error
    /// (retried); a model that cannot narrate is not (the rules do, marked degraded).
    async fn attempt(&self, day: NaiveDate, cx: &Context) -> Result<Outcome, String> {
        let facts_started = Instant::now();
        let query = FactsQuery {
            day,
            time_zone: self.zone,
            baseline_days: self.settings.analyzer.baseline_days,
            service: Some(self.settings.otel.service_name.clone()),
            burst_per_minute: self.settings.detectors.burst_per_minute,
        };
        let day_facts = self
            .traced(
                cx,
                "analysis.facts",
                facts::compute(&self.client, &query, Utc::now()),
            )
            .await
            .map_err(|err| format!("cannot compute the facts: {err}"))?;
        let findings = self.detect(cx, &day_facts);
        let facts_ms = millis(facts_started.elapsed());
        let facts = serde_json::to_value(&day_facts).map_err(|e| e.to_string())?;
        let input = NarrationInput {
            day,
            time_zone: &self.settings.analyzer.time_zone,
            facts: &facts,
            findings: &findings,
        };
        let mut narration = narrate(&self.llm, input, &self.tracer, cx).await;
        recording::qualify(&mut narration.report, &day_facts.recording);
        detect::samples::qualify(&mut narration.report, &findings);
        Ok(Outcome {
            facts_ms,
            narration,
            findings,
        })
    }

    fn detect(&self, cx: &Context, day_facts: &facts::DayFacts) -> Vec<Finding> {
        let mut span = self.tracer.start_with_context("analysis.detect", cx);
        let findings = detect::detect(day_facts, &self.settings.detectors);
        span.set_attribute(KeyValue::new("analysis.findings", findings.len() as i64));
        span.end();
        findings
    }

    async fn traced<T, E: std::fmt::Display>(
        &self,
        cx: &Context,
        name: &'static str,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let mut span = self.tracer.start_with_context(name, cx);
        let result = work.await;
        if let Err(err) = &result {
            span.set_status(Status::error(err.to_string()));
        }
        span.end();
        result
    }

    async fn write_summary(
        &self,
        row: &mut RunRow,
        outcome: &Outcome,
    ) -> Result<(), clickhouse::error::Error> {
        let narration = &outcome.narration;
        row.facts_ms = outcome.facts_ms;
        row.llm_ms = u32::try_from(narration.llm_ms).unwrap_or(u32::MAX);
        row.model = narration.model.clone();
        row.prompt_tokens = narration.prompt_tokens;
        row.output_tokens = narration.output_tokens;
        let report = &narration.report;
        let summary = SummaryRow {
            run_id: row.run_id,
            day: row.day,
            version: self.records.next_version(row.day).await?,
            generated_at: Utc::now(),
            generator: narration.generator.as_str().into(),
            model: narration.model.clone(),
            time_zone: self.settings.analyzer.time_zone.clone(),
            executive_summary: report.executive_summary.clone(),
            user_behavior: report.user_behavior.clone(),
            system_behavior: report.system_behavior.clone(),
            misconfiguration_signals: to_json(&report.misconfiguration_signals),
            confidence: report.confidence.level.as_str().into(),
            confidence_reasons: report.confidence.reasons.clone(),
            scope: to_json(&report.scope),
            findings: to_json(&outcome.findings),
            grounding_violations: narration
                .violations
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        self.records.save_summary(&summary).await
    }

    /// Enqueues yesterday (in the analyzer's zone) at every firing of the cron schedule,
    /// until the task is aborted.
    pub async fn run_schedule(self: Arc<Self>) {
        let schedule: cron::Schedule = match self.settings.analyzer.schedule.parse() {
            Ok(schedule) => schedule,
            Err(err) => {
                tracing::error!(error = %err, "analyzer.schedule is not a cron expression; no scheduled runs");
                return;
            }
        };
        loop {
            let Some(next) = schedule.upcoming(self.zone).next() else {
                return;
            };
            let wait = (next.to_utc() - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            let yesterday = yesterday(self.zone, Utc::now());
            let run = self.submit(yesterday, Trigger::Schedule);
            tracing::info!(day = %yesterday, run_id = %run.run_id, "scheduled analysis queued");
        }
    }
}

/// The calendar day before `now` in `zone`.
pub fn yesterday(zone: Tz, now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&zone).date_naive() - chrono::Duration::days(1)
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yesterday_is_the_local_calendar_day_before() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T23:30:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            yesterday(Tz::UTC, now),
            NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
        );
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            yesterday(berlin, now),
            NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()
        );
    }

    #[test]
    fn statuses_round_trip_and_know_when_they_are_final() {
        for status in [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Degraded,
            RunStatus::Failed,
        ] {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert!(!RunStatus::Running.is_final());
        assert!(RunStatus::Degraded.is_final());
    }
}
