//! The analyzer's own tables. Both are append-only: a run's status change is a new
//! `analysis_run_states` row (the latest `updated_at` wins) and a regenerated report is a new
//! `ai_summaries` version, so nothing a user saw is ever overwritten.

use chrono::{DateTime, NaiveDate, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    /// A report written by the model.
    Succeeded,
    /// A report written by the rules because the model could not.
    Degraded,
    /// No report: the facts could not be computed.
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Degraded => "degraded",
            RunStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Degraded | RunStatus::Failed
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Manual,
    Schedule,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
        }
    }
}

/// One state of a run, as stored.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct RunRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub run_id: Uuid,
    #[serde(with = "clickhouse::serde::chrono::date")]
    pub day: NaiveDate,
    pub status: String,
    pub trigger: String,
    pub attempts: u8,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub queued_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis::option")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis::option")]
    pub finished_at: Option<DateTime<Utc>>,
    pub facts_ms: u32,
    pub llm_ms: u32,
    pub total_ms: u32,
    pub model: String,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub error: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub updated_at: DateTime<Utc>,
}

impl RunRow {
    pub fn queued(run_id: Uuid, day: NaiveDate, trigger: Trigger) -> Self {
        let now = Utc::now();
        Self {
            run_id,
            day,
            status: RunStatus::Queued.as_str().into(),
            trigger: trigger.as_str().into(),
            attempts: 0,
            queued_at: now,
            started_at: None,
            finished_at: None,
            facts_ms: 0,
            llm_ms: 0,
            total_ms: 0,
            model: String::new(),
            prompt_tokens: 0,
            output_tokens: 0,
            error: String::new(),
            updated_at: now,
        }
    }

    pub fn status(&self) -> RunStatus {
        RunStatus::parse(&self.status).unwrap_or(RunStatus::Failed)
    }
}

/// One version of a day's report, as stored.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct SummaryRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub run_id: Uuid,
    #[serde(with = "clickhouse::serde::chrono::date")]
    pub day: NaiveDate,
    pub version: u32,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub generated_at: DateTime<Utc>,
    pub generator: String,
    pub model: String,
    pub time_zone: String,
    pub executive_summary: String,
    pub user_behavior: String,
    pub system_behavior: String,
    /// JSON array of {signal, evidence, severity}.
    pub misconfiguration_signals: String,
    pub confidence: String,
    pub confidence_reasons: Vec<String>,
    /// JSON of the report's scope.
    pub scope: String,
    /// JSON array of the detectors' findings.
    pub findings: String,
    pub grounding_violations: Vec<String>,
}

const RUN_COLUMNS: &str = "run_id, day, status, trigger, attempts, queued_at, started_at, finished_at, \
     facts_ms, llm_ms, total_ms, model, prompt_tokens, output_tokens, error, updated_at";
const SUMMARY_COLUMNS: &str = "run_id, day, version, generated_at, generator, model, time_zone, \
     executive_summary, user_behavior, system_behavior, misconfiguration_signals, confidence, \
     confidence_reasons, scope, findings, grounding_violations";

/// The note on a run a stopping service handed back unfinished; the next start resumes
/// such a run without waiting for it to go stale.
pub const INTERRUPTED: &str = "interrupted by shutdown; the next start resumes it";

/// Reads and appends the analyzer's rows; `client` is bound to the project's database.
#[derive(Clone)]
pub struct Records {
    client: clickhouse::Client,
}

impl Records {
    pub fn new(client: clickhouse::Client) -> Self {
        Self { client }
    }

    pub async fn save_run(&self, row: &RunRow) -> clickhouse::error::Result<()> {
        let mut insert = self.client.insert::<RunRow>("analysis_run_states").await?;
        insert.write(row).await?;
        insert.end().await
    }

    pub async fn save_summary(&self, row: &SummaryRow) -> clickhouse::error::Result<()> {
        let mut insert = self.client.insert::<SummaryRow>("ai_summaries").await?;
        insert.write(row).await?;
        insert.end().await
    }

    /// The current state of a run.
    pub async fn run(&self, run_id: Uuid) -> clickhouse::error::Result<Option<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM analysis_run_states WHERE run_id = toUUID(?) ORDER BY updated_at DESC LIMIT 1"
        );
        // Bound as text: the crate's binder writes a Uuid as bytes, which never matches.
        self.client
            .query(&sql)
            .bind(run_id.to_string())
            .fetch_optional()
            .await
    }

    /// The current state of every run of a day, newest first.
    pub async fn runs_of(&self, day: NaiveDate) -> clickhouse::error::Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM analysis_run_states WHERE day = ? \
             ORDER BY run_id, updated_at DESC LIMIT 1 BY run_id"
        );
        let mut runs: Vec<RunRow> = self.client.query(&sql).bind(day).fetch_all().await?;
        runs.sort_by_key(|run| std::cmp::Reverse(run.queued_at));
        Ok(runs)
    }

    /// Runs whose latest state is queued or running and has not changed for `stale`:
    /// left behind by a dead process (a live run records each attempt, so a run of
    /// another process that is still working is younger than that); and runs a stopping
    /// process handed back as [`INTERRUPTED`], at once.
    pub async fn unfinished(
        &self,
        stale: std::time::Duration,
    ) -> clickhouse::error::Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM (SELECT {RUN_COLUMNS} FROM analysis_run_states \
               ORDER BY run_id, updated_at DESC LIMIT 1 BY run_id) \
             WHERE status IN ('queued', 'running') \
               AND (updated_at < now64(3) - toIntervalSecond(?) OR error = ?)"
        );
        self.client
            .query(&sql)
            .bind(stale.as_secs())
            .bind(INTERRUPTED)
            .fetch_all()
            .await
    }

    /// Every version of a day's report, newest first (the first is the current one).
    pub async fn summaries_of(&self, day: NaiveDate) -> clickhouse::error::Result<Vec<SummaryRow>> {
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM ai_summaries WHERE day = ? ORDER BY version DESC"
        );
        self.client.query(&sql).bind(day).fetch_all().await
    }

    /// The report a run wrote, if any.
    pub async fn summary_of_run(
        &self,
        run_id: Uuid,
    ) -> clickhouse::error::Result<Option<SummaryRow>> {
        let sql =
            format!("SELECT {SUMMARY_COLUMNS} FROM ai_summaries WHERE run_id = toUUID(?) LIMIT 1");
        self.client
            .query(&sql)
            .bind(run_id.to_string())
            .fetch_optional()
            .await
    }

    pub async fn next_version(&self, day: NaiveDate) -> clickhouse::error::Result<u32> {
        let latest: u32 = self
            .client
            .query("SELECT max(version) FROM ai_summaries WHERE day = ?")
            .bind(day)
            .fetch_one()
            .await?;
        Ok(latest + 1)
    }
}
