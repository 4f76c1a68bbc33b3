//! Read-only statistics of `lead_submissions` for the console: overview cards, day-wise
//! counts, per-source and per-endpoint breakdowns and the most recent attempts, and the
//! log lines of one attempt's trace from `otel_logs`.
//!
//! Every query is scoped to this service (`otel.service_name`) and filtered on
//! `event_time` (the table's sort key starts with the hour), so a request reads only the
//! days it asks for. Answers are cached in memory for a few seconds, keyed by the
//! request, so a page refreshing every 5 s never costs more than one scan per period.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::config::Settings;

/// How long an answer is reused.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Longest window a caller may ask for, in days.
const MAX_DAYS: u32 = 90;
/// Rows in the recent-submissions list.
const RECENT_LIMIT: u32 = 50;
/// Log lines of one trace at most.
const TRACE_LOG_LIMIT: u32 = 50;

#[derive(Tags)]
enum ApiTags {
    /// Read-only submission statistics, as shown by the console.
    Stats,
}

/// Counts of one period.
#[derive(Debug, Clone, Default, Object, serde::Serialize)]
pub struct Counts {
    pub attempts: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// accepted / attempts, 0..1 (0 when there were no attempts).
    pub success_rate: f64,
    /// failed / attempts, 0..1 (0 when there were no attempts): the outcome `failed`,
    /// the service's or the CRM's fault. Not the analyzer's `failure_rate`, which counts
    /// everything not accepted.
    pub failed_rate: f64,
}

impl Counts {
    fn new(attempts: u64, accepted: u64, rejected: u64, failed: u64) -> Self {
        let rate = |n: u64| {
            if attempts == 0 {
                0.0
            } else {
                n as f64 / attempts as f64
            }
        };
        Self {
            attempts,
            accepted,
            rejected,
            failed,
            success_rate: rate(accepted),
            failed_rate: rate(failed),
        }
    }
}

/// The overview cards.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct Overview {
    /// When the numbers were read (RFC 3339, UTC).
    pub as_of: String,
    /// Today (UTC) until now.
    pub today: Counts,
    /// Yesterday (UTC) from midnight until the same time of day as now.
    pub yesterday_same_time: Counts,
    /// Every row still in the table (bounded by `schema.submissions_ttl_days`).
    pub all_time: Counts,
    /// The window "all time" covers, in days.
    pub all_time_days: u32,
}

/// One day of the chart.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct DayCounts {
    pub day: NaiveDate,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct Daily {
    /// Oldest first; days without attempts are present with zeros.
    pub days: Vec<DayCounts>,
}

/// Counts of one source or endpoint.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct NamedCounts {
    pub name: String,
    pub counts: Counts,
}

// Named apart from the analyzer's per-subject `facts::Breakdown`; the spec keeps the
// name clients know.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(rename = "Breakdown")]
pub struct RecentBreakdown {
    /// The window, in days (today included).
    pub days: u32,
    /// Most attempts first.
    pub by_source: Vec<NamedCounts>,
    /// Most attempts first.
    pub by_endpoint: Vec<NamedCounts>,
}

/// One attempt, without any personal data.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct RecentSubmission {
    /// RFC 3339, UTC.
    pub time: String,
    pub outcome: String,
    pub reason: String,
    pub source: String,
    pub endpoint: String,
    pub page: String,
    pub trace_id: String,
}

#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct Recent {
    /// The window searched, in days.
    pub days: u32,
    /// Newest first, at most 50.
    pub submissions: Vec<RecentSubmission>,
}

/// One log line of a trace: the event's message and its closed-set attributes only
/// (other attributes are not read, so nothing personal can pass through).
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize, clickhouse::Row)]
pub struct TraceLogLine {
    /// RFC 3339, UTC.
    pub time: String,
    /// TRACE, DEBUG, INFO, WARN or ERROR.
    pub level: String,
    /// The module that logged it, e.g. `lead_lab::ingest::record`.
    pub target: String,
    pub message: String,
    pub outcome: String,
    pub reason: String,
}

#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct TraceLogs {
    pub trace_id: String,
    /// Oldest first, at most 50.
    pub lines: Vec<TraceLogLine>,
}

/// Is today's record complete? Live attempts this service counted (its
/// `leads.submissions` counter) against the rows their spans became.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct RecordingToday {
    /// When the numbers were read (RFC 3339, UTC).
    pub as_of: String,
    pub counted: u64,
    pub recorded: u64,
    /// counted − recorded: attempts lost in transit (collector outage, full queue).
    pub missing: u64,
    /// missing / counted, 0..1.
    pub missing_share: f64,
    /// More than 0.1 % missing.
    pub incomplete: bool,
}

#[derive(Debug, Object)]
pub struct StatsProblem {
    pub message: String,
}

#[derive(Debug, ApiResponse)]
pub enum StatsAnswer<T: poem_openapi::types::ToJSON + Send + Sync> {
    #[oai(status = 200)]
    Ok(Json<T>),
    /// A parameter is out of range.
    #[oai(status = 400)]
    BadRequest(Json<StatsProblem>),
    /// ClickHouse could not be read.
    #[oai(status = 503)]
    Unavailable(Json<StatsProblem>),
}

fn unavailable<T: poem_openapi::types::ToJSON + Send + Sync>(
    err: impl std::fmt::Display,
) -> StatsAnswer<T> {
    StatsAnswer::Unavailable(Json(StatsProblem {
        message: format!("lead_submissions unavailable: {err}"),
    }))
}

/// Answers reused for [`CACHE_TTL`], keyed by the request.
struct Cache<T> {
    entries: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T: Clone> Cache<T> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &str) -> Option<T> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, value)| value.clone())
    }

    /// The cached answer for `key`, or `read`'s, cached for the next CACHE_TTL.
    async fn answer(
        &self,
        key: String,
        read: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    ) -> StatsAnswer<T>
    where
        T: poem_openapi::types::ToJSON + Send + Sync,
    {
        if let Some(hit) = self.get(&key) {
            return StatsAnswer::Ok(Json(hit));
        }
        match read.await {
            Ok(value) => {
                self.put(key, value.clone());
                StatsAnswer::Ok(Json(value))
            }
            Err(err) => unavailable(err),
        }
    }

    /// [`Cache::answer`] for a window of `days` (400 when out of range), cached per
    /// endpoint and window.
    async fn answer_over_days<F, Fut>(
        &self,
        endpoint: &str,
        days: Option<u32>,
        read: F,
    ) -> StatsAnswer<T>
    where
        T: poem_openapi::types::ToJSON + Send + Sync,
        F: FnOnce(u32) -> Fut,
        Fut: std::future::Future<Output = clickhouse::error::Result<T>>,
    {
        match days_param(days, DEFAULT_DAYS) {
            Ok(days) => self.answer(format!("{endpoint}:{days}"), read(days)).await,
            Err(message) => bad(message),
        }
    }

    fn put(&self, key: String, value: T) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        entries.insert(key, (Instant::now(), value));
    }
}

pub struct StatsApi {
    client: clickhouse::Client,
    service: String,
    ttl_days: u32,
    overview: Cache<Overview>,
    daily: Cache<Daily>,
    breakdown: Cache<RecentBreakdown>,
    recent: Cache<Recent>,
    recording: Cache<RecordingToday>,
}

impl StatsApi {
    pub fn new(settings: &Settings) -> Self {
        Self {
            client: crate::store::client(&settings.clickhouse),
            service: settings.otel.service_name.clone(),
            ttl_days: settings.schema.submissions_ttl_days.max(1),
            overview: Cache::new(),
            daily: Cache::new(),
            breakdown: Cache::new(),
            recent: Cache::new(),
            recording: Cache::new(),
        }
    }
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// The window of the endpoints that take `days` when the request names none.
const DEFAULT_DAYS: u32 = 14;

fn days_param(days: Option<u32>, default: u32) -> Result<u32, String> {
    let days = days.unwrap_or(default);
    if (1..=MAX_DAYS).contains(&days) {
        Ok(days)
    } else {
        Err(format!("days must be between 1 and {MAX_DAYS}"))
    }
}

fn bad<T: poem_openapi::types::ToJSON + Send + Sync>(message: String) -> StatsAnswer<T> {
    StatsAnswer::BadRequest(Json(StatsProblem { message }))
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct OverviewRow {
    today_attempts: u64,
    today_accepted: u64,
    today_rejected: u64,
    today_failed: u64,
    yesterday_attempts: u64,
    yesterday_accepted: u64,
    yesterday_rejected: u64,
    yesterday_failed: u64,
    all_attempts: u64,
    all_accepted: u64,
    all_rejected: u64,
    all_failed: u64,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct DayRow {
    day: String,
    accepted: u64,
    rejected: u64,
    failed: u64,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct PairRow {
    source: String,
    endpoint: String,
    attempts: u64,
    accepted: u64,
    rejected: u64,
    failed: u64,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct RecentRow {
    time: String,
    outcome: String,
    reason: String,
    source: String,
    endpoint: String,
    page: String,
    trace_id: String,
}

impl StatsApi {
    async fn read_overview(&self, now: DateTime<Utc>) -> clickhouse::error::Result<Overview> {
        let today = midnight(now.date_naive());
        let yesterday = today - chrono::Duration::days(1);
        let yesterday_now = now - chrono::Duration::days(1);
        let first = today - chrono::Duration::days(i64::from(self.ttl_days) - 1);
        let period = |name: &str, condition: &str| {
            format!(
                "countIf({condition}) AS {name}_attempts, \
                 countIf({condition} AND outcome = 'accepted') AS {name}_accepted, \
                 countIf({condition} AND outcome = 'rejected') AS {name}_rejected, \
                 countIf({condition} AND outcome = 'failed') AS {name}_failed"
            )
        };
        let sql = format!(
            "SELECT {}, {}, {} FROM lead_submissions \
             WHERE service = ? AND event_time >= toDateTime(?, 'UTC') AND event_time < toDateTime(?, 'UTC')",
            period("today", "event_time >= toDateTime(?, 'UTC')"),
            period(
                "yesterday",
                "event_time >= toDateTime(?, 'UTC') AND event_time < toDateTime(?, 'UTC')"
            ),
            period("all", "1"),
        );
        let (t, y, yn) = (
            today.timestamp(),
            yesterday.timestamp(),
            yesterday_now.timestamp(),
        );
        let mut query = self.client.query(&sql);
        // Placeholders are bound in order: four per period, then the WHERE clause.
        for _ in 0..4 {
            query = query.bind(t);
        }
        for _ in 0..4 {
            query = query.bind(y).bind(yn);
        }
        let row: OverviewRow = query
            .bind(&self.service)
            .bind(first.timestamp())
            .bind(now.timestamp() + 1)
            .fetch_one()
            .await?;
        Ok(Overview {
            as_of: now.to_rfc3339(),
            today: Counts::new(
                row.today_attempts,
                row.today_accepted,
                row.today_rejected,
                row.today_failed,
            ),
            yesterday_same_time: Counts::new(
                row.yesterday_attempts,
                row.yesterday_accepted,
                row.yesterday_rejected,
                row.yesterday_failed,
            ),
            all_time: Counts::new(
                row.all_attempts,
                row.all_accepted,
                row.all_rejected,
                row.all_failed,
            ),
            all_time_days: self.ttl_days,
        })
    }

    async fn read_daily(&self, now: DateTime<Utc>, days: u32) -> clickhouse::error::Result<Daily> {
        let today = now.date_naive();
        let first = today - chrono::Duration::days(i64::from(days) - 1);
        let rows: Vec<DayRow> = self
            .client
            .query(
                "SELECT toString(toDate(event_time, 'UTC')) AS day, \
                 countIf(outcome = 'accepted') AS accepted, \
                 countIf(outcome = 'rejected') AS rejected, \
                 countIf(outcome = 'failed') AS failed \
                 FROM lead_submissions \
                 WHERE service = ? AND event_time >= toDateTime(?, 'UTC') \
                   AND event_time < toDateTime(?, 'UTC') \
                 GROUP BY day ORDER BY day",
            )
            .bind(&self.service)
            .bind(midnight(first).timestamp())
            .bind(midnight(today + chrono::Duration::days(1)).timestamp())
            .fetch_all()
            .await?;
        let by_day: HashMap<String, DayRow> =
            rows.into_iter().map(|r| (r.day.clone(), r)).collect();
        let days = first
            .iter_days()
            .take_while(|d| *d <= today)
            .map(|day| {
                let row = by_day.get(&day.to_string());
                DayCounts {
                    day,
                    accepted: row.map_or(0, |r| r.accepted),
                    rejected: row.map_or(0, |r| r.rejected),
                    failed: row.map_or(0, |r| r.failed),
                }
            })
            .collect();
        Ok(Daily { days })
    }

    async fn read_breakdown(
        &self,
        now: DateTime<Utc>,
        days: u32,
    ) -> clickhouse::error::Result<RecentBreakdown> {
        let first = now.date_naive() - chrono::Duration::days(i64::from(days) - 1);
        // One scan, grouped by both; each breakdown is summed from the pairs.
        let rows: Vec<PairRow> = self
            .client
            .query(
                "SELECT source, endpoint, count() AS attempts, \
                 countIf(outcome = 'accepted') AS accepted, \
                 countIf(outcome = 'rejected') AS rejected, \
                 countIf(outcome = 'failed') AS failed \
                 FROM lead_submissions \
                 WHERE service = ? AND event_time >= toDateTime(?, 'UTC') \
                   AND event_time < toDateTime(?, 'UTC') \
                 GROUP BY source, endpoint",
            )
            .bind(&self.service)
            .bind(midnight(first).timestamp())
            .bind(now.timestamp() + 1)
            .fetch_all()
            .await?;
        let sum = |key: fn(&PairRow) -> &str| {
            let mut totals: HashMap<String, [u64; 4]> = HashMap::new();
            for row in &rows {
                let t = totals.entry(key(row).to_owned()).or_default();
                t[0] += row.attempts;
                t[1] += row.accepted;
                t[2] += row.rejected;
                t[3] += row.failed;
            }
            let mut named: Vec<NamedCounts> = totals
                .into_iter()
                .map(|(name, [a, ok, rej, fail])| NamedCounts {
                    name,
                    counts: Counts::new(a, ok, rej, fail),
                })
                .collect();
            named.sort_by(|a, b| {
                b.counts
                    .attempts
                    .cmp(&a.counts.attempts)
                    .then_with(|| a.name.cmp(&b.name))
            });
            named
        };
        Ok(RecentBreakdown {
            days,
            by_source: sum(|r| &r.source),
            by_endpoint: sum(|r| &r.endpoint),
        })
    }

    async fn read_recent(
        &self,
        now: DateTime<Utc>,
        days: u32,
    ) -> clickhouse::error::Result<Recent> {
        let first = now.date_naive() - chrono::Duration::days(i64::from(days) - 1);
        let rows: Vec<RecentRow> = self
            .client
            .query(
                "SELECT formatDateTime(event_time, '%Y-%m-%dT%H:%i:%S.%fZ', 'UTC') AS time, \
                 toString(outcome) AS outcome, toString(reason) AS reason, \
                 toString(source) AS source, toString(endpoint) AS endpoint, \
                 toString(page) AS page, trace_id \
                 FROM lead_submissions \
                 WHERE service = ? AND event_time >= toDateTime(?, 'UTC') \
                   AND event_time < toDateTime(?, 'UTC') \
                 ORDER BY event_time DESC LIMIT ?",
            )
            .bind(&self.service)
            .bind(midnight(first).timestamp())
            .bind(now.timestamp() + 1)
            .bind(RECENT_LIMIT)
            .fetch_all()
            .await?;
        let submissions = rows
            .into_iter()
            .map(|r| RecentSubmission {
                time: r.time,
                outcome: r.outcome,
                reason: r.reason,
                source: r.source,
                endpoint: r.endpoint,
                page: r.page,
                trace_id: r.trace_id,
            })
            .collect();
        Ok(Recent { days, submissions })
    }
}

impl StatsApi {
    async fn read_trace_logs(
        &self,
        trace_id: String,
        days: u32,
    ) -> clickhouse::error::Result<TraceLogs> {
        let lines = self
            .client
            .query(
                "SELECT formatDateTime(Timestamp, '%Y-%m-%dT%H:%i:%S.%fZ', 'UTC') AS time, \
                 toString(SeverityText) AS level, ScopeName AS target, Body AS message, \
                 LogAttributes['outcome'] AS outcome, LogAttributes['reason'] AS reason \
                 FROM otel_logs \
                 WHERE ServiceName = ? AND TraceId = ? \
                   AND Timestamp >= now64(9) - toIntervalDay(?) \
                 ORDER BY Timestamp LIMIT ?",
            )
            .bind(&self.service)
            .bind(&trace_id)
            .bind(days)
            .bind(TRACE_LOG_LIMIT)
            .fetch_all()
            .await?;
        Ok(TraceLogs { trace_id, lines })
    }

    async fn read_recording(
        &self,
        now: DateTime<Utc>,
    ) -> clickhouse::error::Result<RecordingToday> {
        let today = midnight(now.date_naive());
        let tomorrow = today + chrono::Duration::days(1);
        let recording =
            crate::analyze::recording::fetch(&self.client, Some(&self.service), today, tomorrow)
                .await?;
        Ok(RecordingToday {
            as_of: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            counted: recording.counted,
            recorded: recording.recorded,
            missing: recording.missing,
            missing_share: recording.missing_share,
            incomplete: recording.is_incomplete(),
        })
    }
}

#[OpenApi(prefix_path = "/v1/stats", tag = "ApiTags::Stats")]
impl StatsApi {
    /// Overview cards: today, yesterday until the same time of day, and all time
    /// (the table's retention), with success and failed rates. Days are UTC.
    #[oai(path = "/overview", method = "get")]
    async fn overview(&self) -> StatsAnswer<Overview> {
        let read = self.read_overview(Utc::now());
        self.overview.answer("overview".into(), read).await
    }

    /// Accepted, rejected and failed attempts per UTC day, oldest first.
    #[oai(path = "/daily", method = "get")]
    async fn daily(
        &self,
        /// How many days, today included (default 14, at most 90).
        days: Query<Option<u32>>,
    ) -> StatsAnswer<Daily> {
        let read = |days| self.read_daily(Utc::now(), days);
        self.daily.answer_over_days("daily", days.0, read).await
    }

    /// Counts per source and per endpoint over the last days.
    #[oai(path = "/breakdown", method = "get")]
    async fn breakdown(
        &self,
        /// How many days, today included (default 14, at most 90).
        days: Query<Option<u32>>,
    ) -> StatsAnswer<RecentBreakdown> {
        let read = |days| self.read_breakdown(Utc::now(), days);
        self.breakdown
            .answer_over_days("breakdown", days.0, read)
            .await
    }

    /// Today's (UTC) record completeness: attempts counted by the service against
    /// attempts recorded in `lead_submissions`. Replayed history is left out.
    #[oai(path = "/recording", method = "get")]
    async fn recording(&self) -> StatsAnswer<RecordingToday> {
        let read = self.read_recording(Utc::now());
        self.recording.answer("recording".into(), read).await
    }

    /// The last 50 attempts of the window, newest first. No personal data: time,
    /// outcome, reason, source, endpoint, page and trace id only.
    #[oai(path = "/recent", method = "get")]
    async fn recent(
        &self,
        /// How many days to look back, today included (default 14, at most 90).
        days: Query<Option<u32>>,
    ) -> StatsAnswer<Recent> {
        let read = |days| self.read_recent(Utc::now(), days);
        self.recent.answer_over_days("recent", days.0, read).await
    }

    /// The log lines of one trace (an attempt's `trace_id`), oldest first, from
    /// `otel_logs`: time, level, target, message, outcome and reason. Not cached.
    #[oai(path = "/logs", method = "get")]
    async fn logs(
        &self,
        /// The trace id: 32 hex digits.
        trace_id: Query<String>,
        /// How many days to look back, today included (default 14, at most 90).
        days: Query<Option<u32>>,
    ) -> StatsAnswer<TraceLogs> {
        let days = match days_param(days.0, DEFAULT_DAYS) {
            Ok(days) => days,
            Err(message) => return bad(message),
        };
        let Some(trace_id) = trace_id_param(&trace_id.0) else {
            return bad("trace_id must be 32 hex digits".into());
        };
        match self.read_trace_logs(trace_id, days).await {
            Ok(logs) => StatsAnswer::Ok(Json(logs)),
            Err(err) => StatsAnswer::Unavailable(Json(StatsProblem {
                message: format!("otel_logs unavailable: {err}"),
            })),
        }
    }
}

/// A W3C trace id, lower-cased as the exporters write it; `None` unless 32 hex digits.
fn trace_id_param(raw: &str) -> Option<String> {
    (raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| raw.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_zero_without_attempts() {
        let c = Counts::new(0, 0, 0, 0);
        assert_eq!(c.success_rate, 0.0);
        assert_eq!(c.failed_rate, 0.0);
        let c = Counts::new(4, 2, 1, 1);
        assert_eq!(c.success_rate, 0.5);
        assert_eq!(c.failed_rate, 0.25);
    }

    #[test]
    fn days_are_bounded() {
        assert_eq!(days_param(None, 14), Ok(14));
        assert!(days_param(Some(0), 14).is_err());
        assert!(days_param(Some(MAX_DAYS + 1), 14).is_err());
    }

    #[test]
    fn trace_ids_are_32_hex_digits() {
        let id = "4BF92F3577B34DA6A3CE929D0E0E4736";
        assert_eq!(
            trace_id_param(id).as_deref(),
            Some(&*id.to_ascii_lowercase())
        );
        assert_eq!(trace_id_param("4bf92f35"), None);
        assert_eq!(trace_id_param(&"g".repeat(32)), None);
        assert_eq!(trace_id_param("' OR 1=1 --                     "), None);
    }

    #[test]
    fn the_cache_answers_by_key() {
        let cache = Cache::new();
        cache.put("k".into(), 1);
        assert_eq!(cache.get("k"), Some(1));
        assert_eq!(cache.get("other"), None);
    }
}
