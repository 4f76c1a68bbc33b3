//! The analysis API: start a day's analysis (202 at once, whatever the model's speed),
//! follow its run, read the current report. Needs the admin token.

use std::sync::Arc;

use chrono::NaiveDate;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use serde_json::Value;
use uuid::Uuid;

use crate::analyze::jobs::Analyzer;
use crate::analyze::records::{RunRow, SummaryRow, Trigger};

#[derive(Tags)]
enum ApiTags {
    /// The daily AI analysis (admin token required).
    Analysis,
}

#[derive(Debug, Object)]
pub struct AnalysisRequest {
    /// The calendar day to analyse, `YYYY-MM-DD`, in `analyzer.time_zone`.
    pub day: NaiveDate,
}

/// A run's current state.
#[derive(Debug, Object, serde::Serialize)]
pub struct RunView {
    pub run_id: String,
    pub day: NaiveDate,
    /// queued, running, succeeded, degraded (rules report), failed (no report).
    pub status: String,
    /// manual or schedule.
    pub trigger: String,
    pub attempts: u8,
    pub queued_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub facts_ms: u32,
    pub llm_ms: u32,
    pub total_ms: u32,
    pub model: String,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub error: String,
}

impl From<RunRow> for RunView {
    fn from(r: RunRow) -> Self {
        Self {
            run_id: r.run_id.to_string(),
            day: r.day,
            status: r.status,
            trigger: r.trigger,
            attempts: r.attempts,
            queued_at: r.queued_at.to_rfc3339(),
            started_at: r.started_at.map(|t| t.to_rfc3339()),
            finished_at: r.finished_at.map(|t| t.to_rfc3339()),
            facts_ms: r.facts_ms,
            llm_ms: r.llm_ms,
            total_ms: r.total_ms,
            model: r.model,
            prompt_tokens: r.prompt_tokens,
            output_tokens: r.output_tokens,
            error: r.error,
        }
    }
}

/// One version of a day's report.
#[derive(Debug, Object, serde::Serialize)]
pub struct SummaryView {
    pub run_id: String,
    pub day: NaiveDate,
    pub version: u32,
    pub generated_at: String,
    /// model or rules.
    pub generator: String,
    pub model: String,
    pub time_zone: String,
    pub executive_summary: String,
    pub user_behavior: String,
    pub system_behavior: String,
    pub misconfiguration_signals: Value,
    pub confidence: String,
    pub confidence_reasons: Vec<String>,
    pub scope: Value,
    /// The detectors' findings the report was written from.
    pub findings: Value,
    /// Numbers or names the model wrote that the facts do not contain.
    pub grounding_violations: Vec<String>,
}

impl From<SummaryRow> for SummaryView {
    fn from(s: SummaryRow) -> Self {
        let json = |text: &str| serde_json::from_str(text).unwrap_or(Value::Null);
        Self {
            run_id: s.run_id.to_string(),
            day: s.day,
            version: s.version,
            generated_at: s.generated_at.to_rfc3339(),
            generator: s.generator,
            model: s.model,
            time_zone: s.time_zone,
            executive_summary: s.executive_summary,
            user_behavior: s.user_behavior,
            system_behavior: s.system_behavior,
            misconfiguration_signals: json(&s.misconfiguration_signals),
            confidence: s.confidence,
            confidence_reasons: s.confidence_reasons,
            scope: json(&s.scope),
            findings: json(&s.findings),
            grounding_violations: s.grounding_violations,
        }
    }
}

#[derive(Debug, Object)]
pub struct Accepted {
    pub run_id: String,
    pub day: NaiveDate,
    /// A run for this day was already queued or running; the request joined it.
    pub joined: bool,
    /// Poll this for the run's status.
    pub status_url: String,
}

#[derive(Debug, Object, serde::Serialize)]
pub struct RunWithSummary {
    pub run: RunView,
    /// The report this run wrote, once it has.
    pub summary: Option<SummaryView>,
}

#[derive(Debug, Object)]
pub struct DaySummaries {
    /// The latest version: the day's current report.
    pub current: SummaryView,
    /// Every version, newest first (the current one included).
    pub versions: Vec<VersionView>,
}

#[derive(Debug, Object)]
pub struct VersionView {
    pub version: u32,
    pub run_id: String,
    pub generated_at: String,
    pub generator: String,
    pub confidence: String,
}

#[derive(Debug, Object)]
pub struct Problem {
    pub message: String,
}

#[derive(Debug, ApiResponse)]
pub enum Answer<T: poem_openapi::types::ToJSON + Send + Sync> {
    #[oai(status = 200)]
    Ok(Json<T>),
    /// The analysis was queued (or joined a running one).
    #[oai(status = 202)]
    Accepted(Json<T>),
    /// Missing or wrong admin token (or the API is disabled: no admin_token set);
    /// answered before the body is read.
    #[oai(status = 401)]
    Unauthorized(Json<Problem>),
    #[oai(status = 404)]
    NotFound(Json<Problem>),
    /// ClickHouse could not be read or written.
    #[oai(status = 503)]
    Unavailable(Json<Problem>),
}

fn problem<T: poem_openapi::types::ToJSON + Send + Sync>(
    make: fn(Json<Problem>) -> Answer<T>,
    message: impl Into<String>,
) -> Answer<T> {
    make(Json(Problem {
        message: message.into(),
    }))
}

/// The analysis API. Its admin token is checked by the admission middleware before a
/// request (and its body) reaches these handlers.
pub struct AnalysesApi;

fn unavailable<T: poem_openapi::types::ToJSON + Send + Sync>(
    err: impl std::fmt::Display,
) -> Answer<T> {
    problem(
        Answer::Unavailable,
        format!("analysis records unavailable: {err}"),
    )
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Analysis")]
impl AnalysesApi {
    /// Start analysing a day. Answers 202 at once with the run id; poll its status.
    #[oai(path = "/analyses", method = "post")]
    async fn start(
        &self,
        analyzer: Data<&Arc<Analyzer>>,
        body: Json<AnalysisRequest>,
    ) -> Answer<Accepted> {
        let submitted = analyzer.submit(body.day, Trigger::Manual);
        Answer::Accepted(Json(Accepted {
            run_id: submitted.run_id.to_string(),
            day: body.day,
            joined: submitted.joined,
            status_url: format!("/v1/analyses/{}", submitted.run_id),
        }))
    }

    /// A run's status and, once written, its report.
    #[oai(path = "/analyses/:id", method = "get")]
    async fn run(
        &self,
        analyzer: Data<&Arc<Analyzer>>,
        id: Path<String>,
    ) -> Answer<RunWithSummary> {
        let Ok(run_id) = Uuid::parse_str(&id) else {
            return problem(Answer::NotFound, "no run with this id");
        };
        // The in-process state is read first: a run that ends while ClickHouse is asked
        // leaves this process's table before its rows are visible to that query.
        let in_process = analyzer.active_run(run_id);
        let records = analyzer.records();
        let stored = match records.run(run_id).await {
            Ok(stored) => stored,
            Err(err) => return unavailable(err),
        };
        let Some(run) = stored.or(in_process) else {
            return problem(Answer::NotFound, "no run with this id");
        };
        match records.summary_of_run(run_id).await {
            Ok(summary) => Answer::Ok(Json(RunWithSummary {
                run: run.into(),
                summary: summary.map(Into::into),
            })),
            Err(err) => unavailable(err),
        }
    }

    /// The runs of a day, newest first.
    #[oai(path = "/analyses", method = "get")]
    async fn runs(
        &self,
        analyzer: Data<&Arc<Analyzer>>,
        day: Query<NaiveDate>,
    ) -> Answer<Vec<RunView>> {
        let in_process = analyzer.active_run_of(day.0);
        let mut runs = match analyzer.records().runs_of(day.0).await {
            Ok(runs) => runs,
            Err(err) => return unavailable(err),
        };
        let unstored =
            in_process.filter(|active| !runs.iter().any(|run| run.run_id == active.run_id));
        if let Some(active) = unstored {
            runs.insert(0, active);
        }
        Answer::Ok(Json(runs.into_iter().map(Into::into).collect()))
    }

    /// A day's current report and the list of its versions.
    #[oai(path = "/summaries/:day", method = "get")]
    async fn summary(
        &self,
        analyzer: Data<&Arc<Analyzer>>,
        day: Path<NaiveDate>,
    ) -> Answer<DaySummaries> {
        let summaries = match analyzer.records().summaries_of(day.0).await {
            Ok(summaries) => summaries,
            Err(err) => return unavailable(err),
        };
        let versions = summaries
            .iter()
            .map(|s| VersionView {
                version: s.version,
                run_id: s.run_id.to_string(),
                generated_at: s.generated_at.to_rfc3339(),
                generator: s.generator.clone(),
                confidence: s.confidence.clone(),
            })
            .collect();
        match summaries.into_iter().next() {
            Some(current) => Answer::Ok(Json(DaySummaries {
                current: current.into(),
                versions,
            })),
            None => problem(Answer::NotFound, "no report for this day yet"),
        }
    }
}
