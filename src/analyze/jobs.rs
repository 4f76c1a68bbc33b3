//! Analysis as a job, not a request: runs are queued and persisted with their status
//! and timings, one day never has two runs at once (a second request joins the first),
//! a bounded pool of workers does the work with retries, runs a stopped process left
//! behind are picked up again, and the daily schedule enqueues yesterday.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing::instrument::WithSubscriber as _;
use uuid::Uuid;

use super::coordination;
use super::facts::{self, FactsQuery};
use super::llm::LlmClient;
use super::narrate::{Narration, NarrationInput, narrate};
use super::recording;
use super::records::{INTERRUPTED, Records, RunRow, RunStatus, SummaryRow, Trigger};
use super::{Finding, detect};
use crate::config::Settings;
use crate::state::{SharedState, StateError};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid analyzer setting: {0}")]
    Settings(String),
    #[error("invalid model server settings: {0}")]
    Llm(#[from] super::llm::LlmError),
    #[error("cannot read or write analysis records: {0}")]
    Records(#[from] clickhouse::error::Error),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("another instance is analysing {0}; its run is listed by GET /v1/analyses?day={0}")]
    DayHeld(NaiveDate),
}

/// A submitted analysis: the run it started or joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub run_id: Uuid,
    /// A run for the day was already queued or running; this request joined it.
    pub joined: bool,
}

/// What one attempt produced (not to be confused with a lead's `domain::Outcome`).
struct AttemptOutcome {
    facts_ms: u32,
    narration: Narration,
    findings: Vec<Finding>,
}

pub struct Analyzer {
    records: Records,
    client: clickhouse::Client,
    llm: LlmClient,
    /// The app's dispatcher: runs are spawned tasks, which do not inherit it.
    dispatch: tracing::Dispatch,
    settings: Settings,
    zone: Tz,
    /// The run of each day being analysed; its first stored row may not be written yet.
    active: Mutex<HashMap<NaiveDate, RunRow>>,
    workers: Arc<Semaphore>,
    /// Every run and the schedule: a stopping service waits for them, none is detached.
    tasks: TaskTracker,
    /// Stop starting work: the schedule ends, queued runs are handed back.
    stopping: CancellationToken,
    /// The grace period is over: running attempts are dropped and handed back.
    abandoning: CancellationToken,
    /// Leases and report versions: shared with the other instances when `state.url` is set.
    state: SharedState,
    lease_ttl: Duration,
}

impl Analyzer {
    pub fn new(settings: &Settings, dispatch: tracing::Dispatch) -> Result<Arc<Self>, JobError> {
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
            dispatch,
            settings: settings.clone(),
            zone,
            active: Mutex::default(),
            workers: Arc::new(Semaphore::new(settings.analyzer.workers.max(1))),
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            abandoning: CancellationToken::new(),
            state: crate::state::from_settings(settings, 2)?,
            lease_ttl: Duration::from_millis(settings.state.lease_ttl_ms),
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
            // Gone from this process without a final state: it never got the day's lease.
            if self.active_run(submitted.run_id).is_none() {
                let run = self.records.run(submitted.run_id).await?;
                return run
                    .filter(|run| run.status().is_final())
                    .ok_or(JobError::DayHeld(day));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Picks up runs a stopped process left queued or running.
    pub async fn resume_unfinished(self: &Arc<Self>) -> Result<usize, JobError> {
        let shared = self.state.is_shared();
        let stale = if shared {
            Duration::ZERO
        } else {
            self.stale_after()
        };
        let unfinished = self.records.unfinished(stale).await?;
        let mut resumed = 0;
        for row in unfinished {
            if shared && !self.abandoned(&row).await {
                continue;
            }
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

    /// With a shared state, whether an unfinished run may be taken up now: one an
    /// instance of this service ran under a lease (its holder died if the day's lease is
    /// free, which [`Self::claim`] checks), or one silent for longer than
    /// [`Self::stale_after`] (a process without the shared state left it; another
    /// service's run in the same database is left to that service until then).
    async fn abandoned(&self, row: &RunRow) -> bool {
        let silent = (Utc::now() - row.updated_at).to_std().unwrap_or_default();
        if silent > self.stale_after() {
            return true;
        }
        let name = coordination::run_marker(row.run_id);
        self.state.was_leased(&name).await.unwrap_or(false)
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

    /// Runs `row` on a worker under the day's lease; a new run is first recorded as
    /// queued.
    fn spawn(self: &Arc<Self>, row: RunRow, new: bool) {
        let analyzer = self.clone();
        let run = async move {
            let day = row.day;
            if let Some(lease) = analyzer.claim(&row, new).await {
                let work = analyzer.work_on(row, new);
                let state = analyzer.state.as_ref();
                coordination::hold(state, &lease, analyzer.lease_ttl, work).await;
            }
            analyzer.lock_active().remove(&day);
        }
        .with_subscriber(self.dispatch.clone());
        self.tasks.spawn(run);
    }

    /// Waits for a worker and runs `row`; a run still waiting when the service stops is
    /// handed back for the next start.
    async fn work_on(&self, row: RunRow, new: bool) {
        if new && let Err(err) = self.records.save_run(&row).await {
            tracing::warn!(run_id = %row.run_id, error = %err, "cannot record the queued run");
        }
        let permit = tokio::select! {
            permit = self.workers.clone().acquire_owned() => permit,
            () = self.stopping.cancelled() => return self.hand_back(row).await,
        };
        self.execute(row).await;
        drop(permit);
    }

    /// Stops the analyzer as a service stops: no new work starts, runs in progress get
    /// `grace` to finish, and what is still unfinished then is recorded as interrupted,
    /// which the next start resumes at once. A report is written whole or not at all:
    /// only an attempt (facts, detectors, the model call) is ever dropped, never the
    /// writing of its result.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                unfinished = self.tasks.len(),
                "grace period over: unfinished analyses are handed back for the next start"
            );
            self.abandoning.cancel();
            self.tasks.wait().await;
        }
    }

    /// Records `row` as interrupted: queued again, resumable without waiting to go stale.
    async fn hand_back(&self, mut row: RunRow) {
        tracing::info!(run_id = %row.run_id, day = %row.day, "analysis interrupted by shutdown");
        self.save_state(&mut row, RunStatus::Queued, INTERRUPTED)
            .await;
    }

    /// The day's lease for `row`, unless another instance works on the day (or already
    /// finished a resumed run). A new run that cannot get a lease because the state is
    /// unavailable is recorded as failed, so its requester learns why.
    async fn claim(&self, row: &RunRow, new: bool) -> Option<crate::state::Lease> {
        let claimed = coordination::claim_day(self.state.as_ref(), row.day, self.lease_ttl).await;
        let lease = match claimed {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tracing::info!(run_id = %row.run_id, day = %row.day, "another instance analyses the day");
                return None;
            }
            Err(err) => {
                tracing::warn!(run_id = %row.run_id, error = %err, "cannot take the day's lease");
                if new {
                    let mut failed = row.clone();
                    let error = format!("cannot coordinate with other instances: {err}");
                    self.save_state(&mut failed, RunStatus::Failed, &error)
                        .await;
                }
                return None;
            }
        };
        if !new {
            let latest = self.records.run(row.run_id).await;
            if latest
                .ok()
                .flatten()
                .is_none_or(|run| run.status().is_final())
            {
                let _ = self.state.release_lease(&lease).await;
                return None;
            }
        }
        // Marks the run as one of this service's, for the resumers of its replicas.
        let marker = coordination::run_marker(row.run_id);
        if let Err(err) = self
            .state
            .acquire_lease(&marker, coordination::RUN_MARK)
            .await
        {
            tracing::warn!(run_id = %row.run_id, error = %err, "cannot mark the run as leased");
        }
        tracing::info!(run_id = %row.run_id, fence = lease.fence, "holding the day's lease");
        Some(lease)
    }

    /// With a shared state, starts the watch that takes up (every lease lifetime) runs
    /// an instance that died left behind, until the analyzer stops. In-process state has
    /// no one else to watch: runs are resumed at start only.
    pub fn start_resumer(self: &Arc<Self>) {
        if self.state.is_shared() {
            let watch = self.clone().run_resumer();
            self.tasks
                .spawn(watch.with_subscriber(self.dispatch.clone()));
        }
    }

    async fn run_resumer(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.lease_ttl) => {}
                () = self.stopping.cancelled() => return,
            }
            if let Err(err) = self.resume_unfinished().await {
                tracing::warn!(error = %err, "cannot look for unfinished analyses");
            }
        }
    }

    /// Attempts the run up to `max_attempts` times with doubling backoff, then records
    /// how it ended. Never leaves a run without a final state unless the process dies.
    async fn execute(&self, mut row: RunRow) {
        // A root: a run outlives the request that queued it.
        let span = tracing::info_span!(
            parent: None,
            "analysis.run",
            analysis.run_id = %row.run_id,
            analysis.day = %row.day,
            analysis.trigger = %row.trigger,
            analysis.status = Empty,
            otel.status_code = Empty,
            otel.status_message = Empty,
        );
        let Some((status, error)) = self.attempts(&mut row).instrument(span.clone()).await else {
            span.record("analysis.status", "interrupted");
            drop(span);
            return self.hand_back(row).await;
        };
        span.record("analysis.status", status.as_str());
        if status == RunStatus::Failed {
            span.record("otel.status_code", "error");
            span.record("otel.status_message", error.as_str());
        }
        // Ended before the final state is stored: whoever sees the run finished (and then
        // stops the service, which flushes) finds its span exported.
        drop(span);
        self.save_state(&mut row, status, &error).await;
    }

    /// The attempts and their outcome (summary stored); the final state is the caller's.
    /// `None`: the shutdown's grace period ended an attempt, nothing was written.
    async fn attempts(&self, row: &mut RunRow) -> Option<(RunStatus, String)> {
        let started = Instant::now();
        row.started_at = Some(Utc::now());
        let max_attempts = self.settings.analyzer.max_attempts.max(1);
        let mut backoff = Duration::from_millis(self.settings.analyzer.retry_backoff_ms);
        let mut last = None;
        while u32::from(row.attempts) < max_attempts {
            row.attempts += 1;
            self.save_state(row, RunStatus::Running, "").await;
            let attempt = self.unless_abandoned(self.attempt(row.day)).await?;
            let retry = match &attempt {
                Ok(outcome) => outcome.narration.degraded,
                Err(_) => true,
            };
            last = Some(attempt);
            if !retry || u32::from(row.attempts) >= max_attempts {
                break;
            }
            if self
                .unless_abandoned(tokio::time::sleep(backoff))
                .await
                .is_none()
            {
                // The last attempt's result is kept: concluding with it is quicker than
                // handing the run back.
                break;
            }
            backoff *= 2;
        }
        Some(self.conclude(row, last, started).await)
    }

    /// `work`, or `None` once the shutdown's grace period is over.
    async fn unless_abandoned<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            () = self.abandoning.cancelled() => None,
            done = work => Some(done),
        }
    }

    async fn conclude(
        &self,
        row: &mut RunRow,
        last: Option<Result<AttemptOutcome, String>>,
        started: Instant,
    ) -> (RunStatus, String) {
        row.total_ms = millis(started.elapsed());
        row.finished_at = Some(Utc::now());
        match last {
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
        }
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
    async fn attempt(&self, day: NaiveDate) -> Result<AttemptOutcome, String> {
        let facts_started = Instant::now();
        let query = FactsQuery {
            day,
            time_zone: self.zone,
            baseline_days: self.settings.analyzer.baseline_days,
            service: Some(self.settings.otel.service_name.clone()),
            burst_per_minute: self.settings.detectors.burst_per_minute,
        };
        let day_facts = traced(
            tracing::info_span!(
                "analysis.facts",
                otel.status_code = Empty,
                otel.status_message = Empty
            ),
            facts::compute(&self.client, &query, Utc::now()),
        )
        .await
        .map_err(|err| format!("cannot compute the facts: {err}"))?;
        let findings = self.detect(&day_facts);
        let facts_ms = millis(facts_started.elapsed());
        let input = NarrationInput {
            day,
            time_zone: &self.settings.analyzer.time_zone,
            facts: &day_facts,
            findings: &findings,
        };
        let mut narration = narrate(&self.llm, input).await;
        recording::qualify(&mut narration.report, &day_facts.recording);
        detect::samples::qualify(&mut narration.report, &findings);
        Ok(AttemptOutcome {
            facts_ms,
            narration,
            findings,
        })
    }

    #[tracing::instrument(name = "analysis.detect", skip_all, fields(analysis.findings = Empty))]
    fn detect(&self, day_facts: &facts::DayFacts) -> Vec<Finding> {
        let findings = detect::detect(day_facts, &self.settings.detectors);
        tracing::Span::current().record("analysis.findings", findings.len());
        findings
    }

    async fn write_summary(
        &self,
        row: &mut RunRow,
        outcome: &AttemptOutcome,
    ) -> Result<(), JobError> {
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
            version: self.next_version(row.day).await?,
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
        Ok(self.records.save_summary(&summary).await?)
    }

    /// Allocated by the state (atomically across instances), above the highest stored.
    async fn next_version(&self, day: NaiveDate) -> Result<u32, JobError> {
        let floor = self.records.next_version(day).await? - 1;
        Ok(self.state.allocate_version(day, floor).await?)
    }

    /// Starts the daily schedule as one of the analyzer's tasks.
    pub fn start_schedule(self: &Arc<Self>) {
        let schedule = self.clone().run_schedule();
        self.tasks
            .spawn(schedule.with_subscriber(self.dispatch.clone()));
    }

    /// Enqueues yesterday (in the analyzer's zone) at every firing of the cron schedule,
    /// until the analyzer stops.
    async fn run_schedule(self: Arc<Self>) {
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
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.stopping.cancelled() => return,
            }
            match coordination::claim_firing(self.state.as_ref(), next.to_utc()).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot claim the schedule's firing; skipped");
                    continue;
                }
            }
            let yesterday = yesterday(self.zone, Utc::now());
            let run = self.submit(yesterday, Trigger::Schedule);
            tracing::info!(day = %yesterday, run_id = %run.run_id, "scheduled analysis queued");
        }
    }
}

/// `work` in `span` (declared with empty `otel.status_code` and `otel.status_message`),
/// marked failed with the error's message when the work fails.
async fn traced<T, E: std::fmt::Display>(
    span: tracing::Span,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let result = work.instrument(span.clone()).await;
    if let Err(err) = &result {
        span.record("otel.status_code", "error");
        span.record("otel.status_message", err.to_string());
    }
    result
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
