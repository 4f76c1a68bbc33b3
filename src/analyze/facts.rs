//! The facts of one calendar day, computed with SQL over `lead_submissions`.
//!
//! Facts are the only input of the detectors and the narration, so they are numbers and
//! closed-set names only (sources, endpoints, pages, reasons, client ids, truncated
//! submitter hashes) — never personal data. Every query filters on `event_time` with the
//! day's (or the baseline's) UTC range, so the table's partitions prune the scan, and
//! aggregates in ClickHouse: Rust only folds a few hundred grouped rows.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{
    DateTime, Days, NaiveDate, NaiveTime, SecondsFormat, TimeDelta, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Attempts from one submitter in a day from which it counts as high activity.
pub const HIGH_ACTIVITY_ATTEMPTS: u64 = 10;
/// High-activity submitters listed at most (the busiest first).
const HIGH_ACTIVITY_LISTED: u32 = 20;
/// Minutes without downstream failures that may sit inside one downstream window: with
/// sparse traffic a minute without any attempt says nothing about the CRM being back.
pub const DOWNSTREAM_GAP_MINUTES: i64 = 1;
/// Reasons listed per breakdown entry.
const TOP_REASONS: usize = 3;

/// Which day to compute, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct FactsQuery {
    pub day: NaiveDate,
    pub time_zone: Tz,
    pub baseline_days: u32,
    /// Only attempts of this service (`service` column) when set.
    pub service: Option<String>,
    /// `detectors.burst_per_minute`: the shape facts count minutes at or above it.
    pub burst_per_minute: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("{day} has no local midnight in time zone {time_zone}")]
    NoLocalMidnight { day: NaiveDate, time_zone: String },
    #[error("{day} minus {baseline_days} baseline days is out of the calendar's range")]
    DayOutOfRange { day: NaiveDate, baseline_days: u32 },
    #[error("cannot read {what} from ClickHouse: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
}

/// Everything the analyzer knows about one day and its baseline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DayFacts {
    pub day: NaiveDate,
    pub time_zone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub completeness: Completeness,
    pub totals: Totals,
    /// accepted, rejected, failed — always all three.
    pub by_outcome: Vec<NamedCount>,
    /// Every non-empty reason seen, most frequent first.
    pub by_reason: Vec<NamedCount>,
    pub by_source: Vec<Breakdown>,
    pub by_endpoint: Vec<Breakdown>,
    pub by_page: Vec<Breakdown>,
    pub by_form: Vec<Breakdown>,
    pub by_client: Vec<Breakdown>,
    pub source_reasons: Vec<SourceReason>,
    /// `invalid_field` rejections per (page, field).
    pub invalid_fields_by_page: Vec<PageField>,
    pub latency: Latency,
    pub shape: Shape,
    /// Per source seen today or with traffic on every baseline day: when it was quiet.
    pub source_activity: Vec<SourceActivity>,
    pub submitters: Submitters,
    pub delivery: Delivery,
    pub baseline: Baseline,
    /// Attempts the service counted against the rows recorded (absent in facts stored
    /// before the reconciliation existed).
    #[serde(default)]
    pub recording: super::recording::Recording,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayStatus {
    /// `now` is at or after the end of the day.
    Complete,
    /// The day has started and not ended: only elapsed hours count.
    InProgress,
    /// The day lies in the future.
    NotStarted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completeness {
    pub status: DayStatus,
    /// Local midnight that starts the day (RFC 3339 with the zone's offset).
    pub day_start: String,
    /// Local midnight that ends it (exclusive).
    pub day_end: String,
    /// 24, or 23/25 on daylight-saving changes.
    pub day_hours: u32,
    /// Whole hours of the day that have passed at `now`.
    pub elapsed_hours: u32,
    /// Local clock hours, among the elapsed ones, without a single attempt.
    pub hours_without_data: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub attempts: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// accepted / attempts.
    pub success_rate: f64,
    /// (rejected + failed) / attempts.
    pub failure_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedCount {
    pub name: String,
    pub count: u64,
    /// count / the attempts of the enclosing scope (the day, or the breakdown entry).
    pub share_of_attempts: f64,
}

/// One source, endpoint, page, form or client of the day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    pub name: String,
    pub attempts: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// (rejected + failed) / attempts of this entry.
    pub failure_share: f64,
    /// This entry's failures / all failures of the day.
    pub share_of_day_failures: f64,
    pub top_reasons: Vec<NamedCount>,
}

impl Breakdown {
    pub fn failures(&self) -> u64 {
        self.rejected + self.failed
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceReason {
    pub source: String,
    pub reason: String,
    pub count: u64,
    pub share_of_source_attempts: f64,
    pub first_event: String,
    pub last_event: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageField {
    pub page: String,
    pub field: String,
    pub count: u64,
    pub share_of_page_attempts: f64,
    pub share_of_page_failures: f64,
    pub first_event: String,
    pub last_event: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub attempts: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceQuantiles {
    pub source: String,
    #[serde(flatten)]
    pub quantiles: Quantiles,
}

/// Exact quantiles of `duration_ns`, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overall: Option<Quantiles>,
    pub by_source: Vec<SourceQuantiles>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HourSlot {
    /// Hours since local midnight (0-based; differs from `local_hour` on DST days).
    pub hour_index: u32,
    /// The clock hour in the analysed time zone.
    pub local_hour: u32,
    pub start: String,
    pub attempts: u64,
    pub failures: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientShape {
    pub client_id: String,
    pub attempts: u64,
    pub max_attempts_per_minute: u64,
    pub busiest_minute: String,
    /// Minutes with at least `burst_threshold_per_minute` attempts of this client.
    pub burst_minutes: u64,
    /// Attempts of this client rejected with `rate_limited`.
    pub rate_limited: u64,
    /// First and last minute with a `rate_limited` attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limited_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limited_until: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    /// One slot per hour of the local day.
    pub hourly: Vec<HourSlot>,
    pub max_attempts_per_minute: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busiest_minute: Option<String>,
    pub burst_threshold_per_minute: u64,
    /// Minutes with at least `burst_threshold_per_minute` attempts (all clients).
    pub burst_minutes: u64,
    /// Per client id, busiest first.
    pub clients: Vec<ClientShape>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub start: String,
    pub end: String,
    pub hours: u32,
    /// What the baseline's hourly profile had in those local hours, per day on average.
    pub expected_attempts: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceActivity {
    pub source: String,
    pub attempts: u64,
    /// Elapsed hours with at least one attempt.
    pub active_hours: u32,
    pub traffic_on_every_baseline_day: bool,
    /// The longest run of elapsed hours without any attempt (earliest on ties).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longest_silence: Option<Silence>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HighActivitySubmitter {
    /// The first 12 characters of the submitter hash: an id, not a person.
    pub submitter_id: String,
    pub attempts: u64,
    pub failures: u64,
    pub failure_share: f64,
}

/// Behaviour of submitters, from `submitter_hash` alone (empty hashes are left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitters {
    pub distinct_submitters: u64,
    /// Submitters with more than one attempt.
    pub repeat_submitters: u64,
    /// Submitters with an accepted attempt after a rejected or failed one.
    pub retries_after_failure: u64,
    /// Attempts rejected as `duplicate`.
    pub duplicate_attempts: u64,
    pub submitters_with_duplicates: u64,
    pub high_activity_threshold: u64,
    pub high_activity_submitters: u64,
    /// The busiest of them (at most 20).
    pub high_activity: Vec<HighActivitySubmitter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryCount {
    pub delivery_attempts: u8,
    pub count: u64,
}

/// Minutes with `downstream_timeout`/`downstream_error`, merged when at most
/// `DOWNSTREAM_GAP_MINUTES` quiet minutes lie between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownstreamWindow {
    /// Start of the first minute with a downstream failure.
    pub start: String,
    /// End of the last such minute (exclusive).
    pub end: String,
    pub span_minutes: u64,
    pub minutes_with_failures: u64,
    pub timeouts: u64,
    pub errors: u64,
    /// All attempts in the window, whatever their outcome.
    pub attempts: u64,
    /// (timeouts + errors) / attempts.
    pub downstream_failure_share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub attempts_distribution: Vec<DeliveryCount>,
    pub downstream_windows: Vec<DownstreamWindow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineVolume {
    pub name: String,
    pub days_with_traffic: u32,
    /// Attempts / baseline days with data (a day without this name counts as 0).
    pub mean_attempts_per_day: f64,
    /// Failures / attempts over all baseline days together.
    pub failure_share: f64,
    /// Attempts rejected as duplicate / baseline days with data.
    pub mean_duplicates_per_day: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineLatency {
    pub source: String,
    pub p95_ms: f64,
}

/// The `requested_days` local days before the day. Means divide by `days_with_data`, so
/// a young database is compared with the days it has rather than with zeros.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub requested_days: u32,
    pub days_with_data: u32,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub by_source: Vec<BaselineVolume>,
    pub by_endpoint: Vec<BaselineVolume>,
    pub mean_duplicates_per_day: f64,
    /// Over all baseline attempts together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p95_ms: Option<f64>,
    pub latency_p95_ms_by_source: Vec<BaselineLatency>,
    /// Sources with traffic on every baseline day that had data.
    pub sources_on_every_day: Vec<String>,
    pub pages_seen: Vec<String>,
    pub forms_seen: Vec<String>,
}

impl Baseline {
    pub fn source(&self, name: &str) -> Option<&BaselineVolume> {
        self.by_source.iter().find(|v| v.name == name)
    }

    pub fn endpoint(&self, name: &str) -> Option<&BaselineVolume> {
        self.by_endpoint.iter().find(|v| v.name == name)
    }
}

impl DayFacts {
    /// Share of the day that has elapsed (1 for a complete day): scales baseline means.
    pub fn elapsed_fraction(&self) -> f64 {
        let c = &self.completeness;
        if c.day_hours == 0 {
            return 0.0;
        }
        f64::from(c.elapsed_hours) / f64::from(c.day_hours)
    }
}

/// Computes the facts of `query.day`; `now` decides whether the day is complete.
pub async fn compute(
    client: &clickhouse::Client,
    query: &FactsQuery,
    now: DateTime<Utc>,
) -> Result<DayFacts, FactsError> {
    let clock = DayClock::new(query, now)?;
    let day = Scope::new(&clock, clock.start, clock.end, query.service.as_deref());
    let base = Scope::new(
        &clock,
        clock.baseline_start,
        clock.start,
        query.service.as_deref(),
    );
    let (groups, latency, minutes, clients, source_hours, submitters, delivery) = tokio::try_join!(
        fetch_groups(client, &day),
        fetch_latency(client, &day, &base),
        fetch_minutes(client, &day),
        fetch_clients(client, &day, query.burst_per_minute),
        fetch_source_hours(client, &day, clock.start),
        fetch_submitters(client, &day),
        fetch_delivery(client, &day),
    )?;
    let recording = async {
        super::recording::fetch(client, query.service.as_deref(), clock.start, clock.end)
            .await
            .map_err(|source| FactsError::Query {
                what: "the recording reconciliation",
                source,
            })
    };
    let (base_volume, base_hourly, base_pages, recording) = tokio::try_join!(
        fetch_baseline_volume(client, &base),
        fetch_baseline_hourly(client, &base),
        fetch_baseline_pages(client, &base),
        recording,
    )?;
    let baseline = build_baseline(query, &clock, &base_volume, &base_pages, &latency);
    let totals = totals(&groups);
    let day_failures = totals.rejected + totals.failed;
    Ok(DayFacts {
        day: query.day,
        time_zone: query.time_zone.name().to_owned(),
        service: query.service.clone(),
        completeness: completeness(&clock, &minutes),
        by_outcome: by_outcome(&totals),
        by_reason: by_reason(&groups, totals.attempts),
        by_source: breakdown(&groups, |r| &r.source, day_failures),
        by_endpoint: breakdown(&groups, |r| &r.endpoint, day_failures),
        by_page: breakdown(&groups, |r| &r.page, day_failures),
        by_form: breakdown(&groups, |r| &r.form_id, day_failures),
        by_client: breakdown(&groups, |r| &r.client_id, day_failures),
        source_reasons: source_reasons(&clock, &groups),
        invalid_fields_by_page: invalid_fields_by_page(&clock, &groups),
        latency: day_latency(&latency),
        shape: shape(&clock, &minutes, &clients, query.burst_per_minute),
        source_activity: source_activity(&clock, &groups, &source_hours, &base_hourly, &baseline),
        submitters: submitters_facts(submitters, &groups),
        delivery: Delivery {
            attempts_distribution: delivery,
            downstream_windows: downstream_windows(&clock, &minutes),
        },
        baseline,
        totals,
        recording,
    })
}

// ---------------------------------------------------------------------------------------
// Time: the local day as UTC instants, and how instants are shown.

/// The day's and the baseline's boundaries, and the local clock to show instants in.
struct DayClock {
    tz: Tz,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    baseline_start: DateTime<Utc>,
    first_baseline_day: NaiveDate,
    last_baseline_day: NaiveDate,
    now: DateTime<Utc>,
}

impl DayClock {
    fn new(query: &FactsQuery, now: DateTime<Utc>) -> Result<Self, FactsError> {
        let out_of_range = || FactsError::DayOutOfRange {
            day: query.day,
            baseline_days: query.baseline_days,
        };
        let next = query.day.succ_opt().ok_or_else(out_of_range)?;
        let first_baseline_day = query
            .day
            .checked_sub_days(Days::new(u64::from(query.baseline_days)))
            .ok_or_else(out_of_range)?;
        let tz = query.time_zone;
        Ok(Self {
            tz,
            start: local_midnight(tz, query.day)?,
            end: local_midnight(tz, next)?,
            baseline_start: local_midnight(tz, first_baseline_day)?,
            first_baseline_day,
            last_baseline_day: query.day.pred_opt().unwrap_or(query.day),
            now,
        })
    }

    fn day_hours(&self) -> u32 {
        hours_between(self.start, self.end)
    }

    /// Whole hours passed at `now`: partial hours would look like silence.
    fn elapsed_hours(&self) -> u32 {
        if self.now >= self.end {
            self.day_hours()
        } else if self.now <= self.start {
            0
        } else {
            hours_between(self.start, self.now)
        }
    }

    fn status(&self) -> DayStatus {
        if self.now >= self.end {
            DayStatus::Complete
        } else if self.now > self.start {
            DayStatus::InProgress
        } else {
            DayStatus::NotStarted
        }
    }

    fn hour_start(&self, index: u32) -> DateTime<Utc> {
        self.start + TimeDelta::hours(i64::from(index))
    }

    fn local_hour(&self, index: u32) -> u32 {
        self.hour_start(index).with_timezone(&self.tz).hour()
    }

    fn show(&self, instant: DateTime<Utc>) -> String {
        instant
            .with_timezone(&self.tz)
            .to_rfc3339_opts(SecondsFormat::Secs, false)
    }

    fn show_secs(&self, secs: i64) -> String {
        self.show(DateTime::from_timestamp(secs, 0).unwrap_or_default())
    }

    fn show_millis(&self, millis: i64) -> String {
        self.show(DateTime::from_timestamp_millis(millis).unwrap_or_default())
    }

    /// Index of the local hour slot an instant (seconds) falls in.
    fn slot_of(&self, secs: i64) -> Option<usize> {
        let offset = secs - self.start.timestamp();
        usize::try_from(offset.div_euclid(3600)).ok()
    }
}

fn hours_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u32 {
    u32::try_from((to - from).num_hours()).unwrap_or(0)
}

/// The first instant of `day` in `tz`; where midnight falls into a DST gap, the first
/// local time after it.
fn local_midnight(tz: Tz, day: NaiveDate) -> Result<DateTime<Utc>, FactsError> {
    let midnight = day.and_time(NaiveTime::MIN);
    (0..=2)
        .find_map(|h| {
            tz.from_local_datetime(&(midnight + TimeDelta::hours(h)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| FactsError::NoLocalMidnight {
            day,
            time_zone: tz.name().to_owned(),
        })
}

// ---------------------------------------------------------------------------------------
// SQL: every query gets its time filter (and the service filter) from a Scope.

/// A UTC range [from, to) and the optional service, as a WHERE clause.
struct Scope<'a> {
    from: i64,
    to: i64,
    service: Option<&'a str>,
    tz: &'static str,
}

impl<'a> Scope<'a> {
    fn new(
        clock: &DayClock,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        service: Option<&'a str>,
    ) -> Self {
        Self {
            from: from.timestamp(),
            to: to.timestamp(),
            service,
            tz: clock.tz.name(),
        }
    }

    /// Builds the query: `{filter}` becomes the time (and service) condition and `{tz}`
    /// the zone's literal. Numbers and the zone name (from the closed IANA set of
    /// chrono-tz) are spliced; the service, the one free string, is bound.
    fn query(&self, client: &clickhouse::Client, sql: &str) -> clickhouse::query::Query {
        self.query_on("event_time", client, sql)
    }

    /// [`Scope::query`] for the quarter-hour rollups: scopes start and end on local
    /// midnights, which are always bucket boundaries.
    fn rollup_query(&self, client: &clickhouse::Client, sql: &str) -> clickhouse::query::Query {
        self.query_on("bucket", client, sql)
    }

    fn query_on(
        &self,
        time_column: &str,
        client: &clickhouse::Client,
        sql: &str,
    ) -> clickhouse::query::Query {
        let mut filter = format!(
            "{time_column} >= toDateTime64({}, 0, 'UTC') AND {time_column} < toDateTime64({}, 0, 'UTC')",
            self.from, self.to
        );
        if self.service.is_some() {
            filter.push_str(" AND service = ?");
        }
        let sql = sql
            .replace("{filter}", &filter)
            .replace("{tz}", &format!("'{}'", self.tz));
        let query = client.query(&sql);
        match self.service {
            Some(service) => query.bind(service),
            None => query,
        }
    }
}

async fn fetch<T>(query: clickhouse::query::Query, what: &'static str) -> Result<Vec<T>, FactsError>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    query
        .fetch_all::<T>()
        .await
        .map_err(|source| FactsError::Query { what, source })
}

/// Attempts of the day grouped by every closed-set column: all breakdowns fold these.
#[derive(Debug, clickhouse::Row, Deserialize)]
struct GroupRow {
    source: String,
    endpoint: String,
    page: String,
    form_id: String,
    client_id: String,
    outcome: String,
    reason: String,
    field: String,
    attempts: u64,
    first_ms: i64,
    last_ms: i64,
}

async fn fetch_groups(
    client: &clickhouse::Client,
    day: &Scope<'_>,
) -> Result<Vec<GroupRow>, FactsError> {
    let sql = "SELECT toString(source) AS source, toString(endpoint) AS endpoint, \
               toString(page) AS page, toString(form_id) AS form_id, \
               toString(client_id) AS client_id, toString(outcome) AS outcome, \
               toString(reason) AS reason, toString(field) AS field, \
               toUInt64(count()) AS attempts, \
               toInt64(min(toUnixTimestamp64Milli(event_time))) AS first_ms, \
               toInt64(max(toUnixTimestamp64Milli(event_time))) AS last_ms \
               FROM lead_submissions WHERE {filter} \
               GROUP BY source, endpoint, page, form_id, client_id, outcome, reason, field";
    fetch(day.query(client, sql), "the day's breakdown").await
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct LatencyRow {
    in_day: u8,
    scope: String,
    attempts: u64,
    quantiles_ms: Vec<f64>,
}

/// Marks the all-sources scope in the latency query (source names are identifiers).
const ALL_SOURCES: &str = "*";

/// p50/p95/p99 per source and overall: the day's exact, from its submissions; the
/// baseline's merged from the quarter-hour t-digests (within about 1 % on samples that
/// large), so a week of busy days is not sorted again.
async fn fetch_latency(
    client: &clickhouse::Client,
    day: &Scope<'_>,
    base: &Scope<'_>,
) -> Result<Vec<LatencyRow>, FactsError> {
    let day_sql = format!(
        "SELECT toUInt8(1) AS in_day, \
         arrayJoin([toString(source), '{ALL_SOURCES}']) AS scope, toUInt64(count()) AS attempts, \
         arrayMap(x -> round(toFloat64(x) / 1000000, 3), \
                  quantilesExact(0.5, 0.95, 0.99)(duration_ns)) AS quantiles_ms \
         FROM lead_submissions WHERE {{filter}} GROUP BY scope"
    );
    let base_sql = format!(
        "SELECT toUInt8(0) AS in_day, \
         arrayJoin([toString(source), '{ALL_SOURCES}']) AS scope, toUInt64(sum(submissions)) AS attempts, \
         arrayMap(x -> round(toFloat64(x) / 1000000, 3), \
                  quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_ns)) AS quantiles_ms \
         FROM lead_latency_15m WHERE {{filter}} GROUP BY scope"
    );
    let (mut rows, base_rows) = tokio::try_join!(
        fetch(day.query(client, &day_sql), "the day's latency quantiles"),
        fetch(
            base.rollup_query(client, &base_sql),
            "the baseline's latency quantiles"
        ),
    )?;
    rows.extend(base_rows);
    Ok(rows)
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct MinuteRow {
    minute: i64,
    attempts: u64,
    failures: u64,
    downstream_timeouts: u64,
    downstream_errors: u64,
    first_ms: i64,
    last_ms: i64,
}

async fn fetch_minutes(
    client: &clickhouse::Client,
    day: &Scope<'_>,
) -> Result<Vec<MinuteRow>, FactsError> {
    let sql = "SELECT toInt64(intDiv(toUnixTimestamp64Milli(event_time), 60000) * 60) AS minute, \
               toUInt64(count()) AS attempts, toUInt64(countIf(outcome != 'accepted')) AS failures, \
               toUInt64(countIf(reason = 'downstream_timeout')) AS downstream_timeouts, \
               toUInt64(countIf(reason = 'downstream_error')) AS downstream_errors, \
               toInt64(min(toUnixTimestamp64Milli(event_time))) AS first_ms, \
               toInt64(max(toUnixTimestamp64Milli(event_time))) AS last_ms \
               FROM lead_submissions WHERE {filter} GROUP BY minute ORDER BY minute";
    fetch(day.query(client, sql), "attempts per minute").await
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ClientRow {
    client_id: String,
    attempts: u64,
    max_per_minute: u64,
    busiest_minute: i64,
    burst_minutes: u64,
    rate_limited: u64,
    rate_limited_first: i64,
    rate_limited_last: i64,
}

async fn fetch_clients(
    client: &clickhouse::Client,
    day: &Scope<'_>,
    burst_per_minute: u64,
) -> Result<Vec<ClientRow>, FactsError> {
    let sql = format!(
        "SELECT client_id, toUInt64(sum(n)) AS attempts, toUInt64(max(n)) AS max_per_minute, \
         toInt64(argMax(minute, (n, -minute))) AS busiest_minute, \
         toUInt64(countIf(n >= {burst_per_minute})) AS burst_minutes, \
         toUInt64(sum(limited)) AS rate_limited, \
         toInt64(minIf(minute, limited > 0)) AS rate_limited_first, \
         toInt64(maxIf(minute, limited > 0)) AS rate_limited_last \
         FROM (SELECT toString(client_id) AS client_id, \
                      toInt64(intDiv(toUnixTimestamp64Milli(event_time), 60000) * 60) AS minute, \
                      count() AS n, countIf(reason = 'rate_limited') AS limited \
               FROM lead_submissions WHERE {{filter}} GROUP BY client_id, minute) \
         GROUP BY client_id"
    );
    fetch(day.query(client, &sql), "attempts per client and minute").await
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct SourceHourRow {
    source: String,
    hour_index: i64,
    attempts: u64,
}

async fn fetch_source_hours(
    client: &clickhouse::Client,
    day: &Scope<'_>,
    day_start: DateTime<Utc>,
) -> Result<Vec<SourceHourRow>, FactsError> {
    let sql = format!(
        "SELECT toString(source) AS source, \
         toInt64(intDiv(toUnixTimestamp64Milli(event_time) - {}, 3600000)) AS hour_index, \
         toUInt64(count()) AS attempts \
         FROM lead_submissions WHERE {{filter}} GROUP BY source, hour_index",
        day_start.timestamp_millis()
    );
    fetch(day.query(client, &sql), "attempts per source and hour").await
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct SubmitterRow {
    distinct_submitters: u64,
    repeat_submitters: u64,
    retries_after_failure: u64,
    submitters_with_duplicates: u64,
    high_activity_submitters: u64,
    high_activity: Vec<(String, u64, u64)>,
}

/// One row: per-submitter aggregates folded in ClickHouse; only the busiest are listed.
async fn fetch_submitters(
    client: &clickhouse::Client,
    day: &Scope<'_>,
) -> Result<SubmitterRow, FactsError> {
    let sql = format!(
        "SELECT toUInt64(count()) AS distinct_submitters, \
         toUInt64(countIf(n > 1)) AS repeat_submitters, \
         toUInt64(countIf(fails > 0 AND last_ok > first_fail)) AS retries_after_failure, \
         toUInt64(countIf(dups > 0)) AS submitters_with_duplicates, \
         toUInt64(countIf(n >= {HIGH_ACTIVITY_ATTEMPTS})) AS high_activity_submitters, \
         arraySlice(arraySort(x -> (-toInt64(x.2), x.1), \
             groupArrayIf((id, toUInt64(n), toUInt64(fails)), n >= {HIGH_ACTIVITY_ATTEMPTS})), \
             1, {HIGH_ACTIVITY_LISTED}) AS high_activity \
         FROM (SELECT substring(submitter_hash, 1, 12) AS id, count() AS n, \
                      countIf(outcome != 'accepted') AS fails, countIf(reason = 'duplicate') AS dups, \
                      minIf(toUnixTimestamp64Milli(event_time), outcome != 'accepted') AS first_fail, \
                      maxIf(toUnixTimestamp64Milli(event_time), outcome = 'accepted') AS last_ok \
               FROM lead_submissions WHERE {{filter}} AND submitter_hash != '' \
               GROUP BY submitter_hash)"
    );
    let rows: Vec<SubmitterRow> = fetch(day.query(client, &sql), "submitter behaviour").await?;
    Ok(rows.into_iter().next().unwrap_or(SubmitterRow {
        distinct_submitters: 0,
        repeat_submitters: 0,
        retries_after_failure: 0,
        submitters_with_duplicates: 0,
        high_activity_submitters: 0,
        high_activity: Vec::new(),
    }))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct DeliveryRow {
    delivery_attempts: u8,
    count: u64,
}

async fn fetch_delivery(
    client: &clickhouse::Client,
    day: &Scope<'_>,
) -> Result<Vec<DeliveryCount>, FactsError> {
    let sql = "SELECT delivery_attempts, toUInt64(count()) AS count \
               FROM lead_submissions WHERE {filter} \
               GROUP BY delivery_attempts ORDER BY delivery_attempts";
    let rows: Vec<DeliveryRow> = fetch(day.query(client, sql), "delivery attempts").await?;
    Ok(rows
        .into_iter()
        .map(|r| DeliveryCount {
            delivery_attempts: r.delivery_attempts,
            count: r.count,
        })
        .collect())
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct BaselineVolumeRow {
    day: String,
    source: String,
    endpoint: String,
    attempts: u64,
    failures: u64,
    duplicates: u64,
}

async fn fetch_baseline_volume(
    client: &clickhouse::Client,
    base: &Scope<'_>,
) -> Result<Vec<BaselineVolumeRow>, FactsError> {
    let sql = "SELECT toString(toDate(bucket, {tz})) AS day, toString(source) AS source, \
               toString(endpoint) AS endpoint, toUInt64(sum(submissions)) AS attempts, \
               toUInt64(sumIf(submissions, outcome != 'accepted')) AS failures, \
               toUInt64(sumIf(submissions, reason = 'duplicate')) AS duplicates \
               FROM lead_submissions_15m WHERE {filter} GROUP BY day, source, endpoint";
    fetch(base.rollup_query(client, sql), "the baseline's volume").await
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct BaselineHourRow {
    source: String,
    local_hour: u8,
    attempts: u64,
}

async fn fetch_baseline_hourly(
    client: &clickhouse::Client,
    base: &Scope<'_>,
) -> Result<Vec<BaselineHourRow>, FactsError> {
    let sql = "SELECT toString(source) AS source, toUInt8(toHour(bucket, {tz})) AS local_hour, \
               toUInt64(sum(submissions)) AS attempts \
               FROM lead_submissions_15m WHERE {filter} GROUP BY source, local_hour";
    fetch(
        base.rollup_query(client, sql),
        "the baseline's hourly profile",
    )
    .await
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct BaselinePageRow {
    page: String,
    form_id: String,
}

async fn fetch_baseline_pages(
    client: &clickhouse::Client,
    base: &Scope<'_>,
) -> Result<Vec<BaselinePageRow>, FactsError> {
    let sql = "SELECT toString(page) AS page, toString(form_id) AS form_id \
               FROM lead_submissions_15m WHERE {filter} GROUP BY page, form_id";
    fetch(base.rollup_query(client, sql), "the baseline's pages").await
}

// ---------------------------------------------------------------------------------------
// Folding grouped rows into facts.

/// A fraction rounded to 4 places; 0 when there is nothing to divide by.
pub fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    round_to(part as f64 / whole as f64, 4)
}

pub fn round_to(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// Counts of one key over grouped rows.
#[derive(Default)]
struct Tally {
    attempts: u64,
    accepted: u64,
    rejected: u64,
    failed: u64,
    reasons: BTreeMap<String, u64>,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

impl Tally {
    fn add(&mut self, row: &GroupRow) {
        self.attempts += row.attempts;
        match row.outcome.as_str() {
            "accepted" => self.accepted += row.attempts,
            "failed" => self.failed += row.attempts,
            _ => self.rejected += row.attempts,
        }
        if !row.reason.is_empty() {
            *self.reasons.entry(row.reason.clone()).or_default() += row.attempts;
        }
        self.first_ms = Some(self.first_ms.map_or(row.first_ms, |m| m.min(row.first_ms)));
        self.last_ms = Some(self.last_ms.map_or(row.last_ms, |m| m.max(row.last_ms)));
    }

    fn failures(&self) -> u64 {
        self.rejected + self.failed
    }
}

fn tally_by<K: Ord>(rows: &[GroupRow], key: impl Fn(&GroupRow) -> Option<K>) -> BTreeMap<K, Tally> {
    let mut tallies: BTreeMap<K, Tally> = BTreeMap::new();
    for row in rows {
        if let Some(k) = key(row) {
            tallies.entry(k).or_default().add(row);
        }
    }
    tallies
}

/// Most frequent first, then by name: the order is part of the facts' determinism.
fn named_counts(counts: &BTreeMap<String, u64>, whole: u64, limit: usize) -> Vec<NamedCount> {
    let mut list: Vec<NamedCount> = counts
        .iter()
        .map(|(name, &count)| NamedCount {
            name: name.clone(),
            count,
            share_of_attempts: rate(count, whole),
        })
        .collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    list.truncate(limit);
    list
}

fn totals(rows: &[GroupRow]) -> Totals {
    let all = tally_by(rows, |_| Some(())).remove(&()).unwrap_or_default();
    Totals {
        attempts: all.attempts,
        accepted: all.accepted,
        rejected: all.rejected,
        failed: all.failed,
        success_rate: rate(all.accepted, all.attempts),
        failure_rate: rate(all.failures(), all.attempts),
    }
}

fn by_outcome(totals: &Totals) -> Vec<NamedCount> {
    [
        ("accepted", totals.accepted),
        ("rejected", totals.rejected),
        ("failed", totals.failed),
    ]
    .into_iter()
    .map(|(name, count)| NamedCount {
        name: name.to_owned(),
        count,
        share_of_attempts: rate(count, totals.attempts),
    })
    .collect()
}

fn by_reason(rows: &[GroupRow], attempts: u64) -> Vec<NamedCount> {
    let all = tally_by(rows, |_| Some(())).remove(&()).unwrap_or_default();
    named_counts(&all.reasons, attempts, usize::MAX)
}

fn breakdown(
    rows: &[GroupRow],
    key: impl Fn(&GroupRow) -> &String,
    day_failures: u64,
) -> Vec<Breakdown> {
    let mut list: Vec<Breakdown> = tally_by(rows, |r| Some(key(r).clone()))
        .into_iter()
        .map(|(name, t)| Breakdown {
            name,
            attempts: t.attempts,
            accepted: t.accepted,
            rejected: t.rejected,
            failed: t.failed,
            failure_share: rate(t.failures(), t.attempts),
            share_of_day_failures: rate(t.failures(), day_failures),
            top_reasons: named_counts(&t.reasons, t.attempts, TOP_REASONS),
        })
        .collect();
    list.sort_by(|a, b| {
        b.attempts
            .cmp(&a.attempts)
            .then_with(|| a.name.cmp(&b.name))
    });
    list
}

fn source_reasons(clock: &DayClock, rows: &[GroupRow]) -> Vec<SourceReason> {
    let sources = tally_by(rows, |r| Some(r.source.clone()));
    let pairs = tally_by(rows, |r| {
        (!r.reason.is_empty()).then(|| (r.source.clone(), r.reason.clone()))
    });
    let mut list: Vec<SourceReason> = pairs
        .into_iter()
        .map(|((source, reason), t)| SourceReason {
            share_of_source_attempts: rate(
                t.attempts,
                sources.get(&source).map_or(0, |s| s.attempts),
            ),
            first_event: clock.show_millis(t.first_ms.unwrap_or_default()),
            last_event: clock.show_millis(t.last_ms.unwrap_or_default()),
            count: t.attempts,
            source,
            reason,
        })
        .collect();
    list.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.source, &a.reason).cmp(&(&b.source, &b.reason)))
    });
    list
}

fn invalid_fields_by_page(clock: &DayClock, rows: &[GroupRow]) -> Vec<PageField> {
    let pages = tally_by(rows, |r| Some(r.page.clone()));
    let pairs = tally_by(rows, |r| {
        (r.reason == "invalid_field").then(|| (r.page.clone(), r.field.clone()))
    });
    let mut list: Vec<PageField> = pairs
        .into_iter()
        .map(|((page, field), t)| {
            let page_tally = pages.get(&page);
            PageField {
                share_of_page_attempts: rate(t.attempts, page_tally.map_or(0, |p| p.attempts)),
                share_of_page_failures: rate(t.attempts, page_tally.map_or(0, Tally::failures)),
                first_event: clock.show_millis(t.first_ms.unwrap_or_default()),
                last_event: clock.show_millis(t.last_ms.unwrap_or_default()),
                count: t.attempts,
                page,
                field,
            }
        })
        .collect();
    list.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.page, &a.field).cmp(&(&b.page, &b.field)))
    });
    list
}

fn quantiles(row: &LatencyRow) -> Quantiles {
    let at = |i: usize| row.quantiles_ms.get(i).copied().unwrap_or_default();
    Quantiles {
        attempts: row.attempts,
        p50_ms: at(0),
        p95_ms: at(1),
        p99_ms: at(2),
    }
}

fn day_latency(rows: &[LatencyRow]) -> Latency {
    let day = rows.iter().filter(|r| r.in_day == 1);
    let mut by_source: Vec<SourceQuantiles> = day
        .clone()
        .filter(|r| r.scope != ALL_SOURCES)
        .map(|r| SourceQuantiles {
            source: r.scope.clone(),
            quantiles: quantiles(r),
        })
        .collect();
    by_source.sort_by(|a, b| a.source.cmp(&b.source));
    Latency {
        overall: day.clone().find(|r| r.scope == ALL_SOURCES).map(quantiles),
        by_source,
    }
}

fn completeness(clock: &DayClock, minutes: &[MinuteRow]) -> Completeness {
    let hourly = hour_counts(clock, minutes);
    let elapsed = clock.elapsed_hours();
    Completeness {
        status: clock.status(),
        day_start: clock.show(clock.start),
        day_end: clock.show(clock.end),
        day_hours: clock.day_hours(),
        elapsed_hours: elapsed,
        hours_without_data: (0..elapsed)
            .filter(|&h| {
                hourly
                    .get(h as usize)
                    .is_none_or(|&(attempts, _)| attempts == 0)
            })
            .map(|h| clock.local_hour(h))
            .collect(),
        first_event: minutes
            .iter()
            .map(|m| m.first_ms)
            .min()
            .map(|ms| clock.show_millis(ms)),
        last_event: minutes
            .iter()
            .map(|m| m.last_ms)
            .max()
            .map(|ms| clock.show_millis(ms)),
    }
}

/// (attempts, failures) per local hour slot of the day.
fn hour_counts(clock: &DayClock, minutes: &[MinuteRow]) -> Vec<(u64, u64)> {
    let mut slots = vec![(0, 0); clock.day_hours() as usize];
    for m in minutes {
        if let Some(slot) = clock.slot_of(m.minute).and_then(|i| slots.get_mut(i)) {
            slot.0 += m.attempts;
            slot.1 += m.failures;
        }
    }
    slots
}

fn shape(clock: &DayClock, minutes: &[MinuteRow], clients: &[ClientRow], burst: u64) -> Shape {
    let hourly = hour_counts(clock, minutes)
        .into_iter()
        .zip(0u32..)
        .map(|((attempts, failures), h)| HourSlot {
            hour_index: h,
            local_hour: clock.local_hour(h),
            start: clock.show(clock.hour_start(h)),
            attempts,
            failures,
        })
        .collect();
    // Earliest minute wins ties, so the facts do not depend on row order.
    let busiest = minutes.iter().max_by(|a, b| {
        a.attempts
            .cmp(&b.attempts)
            .then_with(|| b.minute.cmp(&a.minute))
    });
    let mut clients: Vec<ClientShape> = clients.iter().map(|c| client_shape(clock, c)).collect();
    clients.sort_by(|a, b| {
        b.max_attempts_per_minute
            .cmp(&a.max_attempts_per_minute)
            .then_with(|| a.client_id.cmp(&b.client_id))
    });
    Shape {
        hourly,
        max_attempts_per_minute: busiest.map_or(0, |m| m.attempts),
        busiest_minute: busiest.map(|m| clock.show_secs(m.minute)),
        burst_threshold_per_minute: burst,
        burst_minutes: minutes.iter().filter(|m| m.attempts >= burst).count() as u64,
        clients,
    }
}

fn client_shape(clock: &DayClock, c: &ClientRow) -> ClientShape {
    let limited = c.rate_limited > 0;
    ClientShape {
        client_id: c.client_id.clone(),
        attempts: c.attempts,
        max_attempts_per_minute: c.max_per_minute,
        busiest_minute: clock.show_secs(c.busiest_minute),
        burst_minutes: c.burst_minutes,
        rate_limited: c.rate_limited,
        rate_limited_from: limited.then(|| clock.show_secs(c.rate_limited_first)),
        rate_limited_until: limited.then(|| clock.show_secs(c.rate_limited_last + 60)),
    }
}

fn downstream_windows(clock: &DayClock, minutes: &[MinuteRow]) -> Vec<DownstreamWindow> {
    let failing: Vec<&MinuteRow> = minutes
        .iter()
        .filter(|m| m.downstream_timeouts + m.downstream_errors > 0)
        .collect();
    let mut runs: Vec<Vec<&MinuteRow>> = Vec::new();
    for m in failing {
        match runs.last_mut() {
            Some(run)
                if run.last().is_some_and(|prev| {
                    m.minute - prev.minute <= 60 * (DOWNSTREAM_GAP_MINUTES + 1)
                }) =>
            {
                run.push(m)
            }
            _ => runs.push(vec![m]),
        }
    }
    runs.iter()
        .filter_map(|run| {
            Some(downstream_window(
                clock,
                minutes,
                run.first()?.minute,
                run.last()?.minute,
                run,
            ))
        })
        .collect()
}

fn downstream_window(
    clock: &DayClock,
    minutes: &[MinuteRow],
    first: i64,
    last: i64,
    run: &[&MinuteRow],
) -> DownstreamWindow {
    let timeouts = run.iter().map(|m| m.downstream_timeouts).sum();
    let errors = run.iter().map(|m| m.downstream_errors).sum();
    let attempts = minutes
        .iter()
        .filter(|m| (first..=last).contains(&m.minute))
        .map(|m| m.attempts)
        .sum();
    DownstreamWindow {
        start: clock.show_secs(first),
        end: clock.show_secs(last + 60),
        span_minutes: u64::try_from((last - first) / 60 + 1).unwrap_or(0),
        minutes_with_failures: run.len() as u64,
        timeouts,
        errors,
        attempts,
        downstream_failure_share: rate(timeouts + errors, attempts),
    }
}

fn source_activity(
    clock: &DayClock,
    groups: &[GroupRow],
    hours: &[SourceHourRow],
    base_hourly: &[BaselineHourRow],
    baseline: &Baseline,
) -> Vec<SourceActivity> {
    let today = tally_by(groups, |r| Some(r.source.clone()));
    let every_day: BTreeSet<&String> = baseline.sources_on_every_day.iter().collect();
    let sources: BTreeSet<&String> = today.keys().chain(every_day.iter().copied()).collect();
    let elapsed = clock.elapsed_hours() as usize;
    sources
        .into_iter()
        .map(|source| {
            let mut slots = vec![0u64; elapsed];
            for row in hours.iter().filter(|r| &r.source == source) {
                if let Some(slot) = usize::try_from(row.hour_index)
                    .ok()
                    .and_then(|i| slots.get_mut(i))
                {
                    *slot += row.attempts;
                }
            }
            let profile = hourly_profile(base_hourly, source, baseline.days_with_data);
            SourceActivity {
                source: source.clone(),
                attempts: today.get(source).map_or(0, |t| t.attempts),
                active_hours: slots.iter().filter(|&&n| n > 0).count() as u32,
                traffic_on_every_baseline_day: every_day.contains(source),
                longest_silence: longest_silence(clock, &slots, &profile),
            }
        })
        .collect()
}

/// Mean attempts of a source per local clock hour over the baseline days with data.
fn hourly_profile(rows: &[BaselineHourRow], source: &str, days: u32) -> [f64; 24] {
    let mut profile = [0.0; 24];
    if days == 0 {
        return profile;
    }
    for row in rows.iter().filter(|r| r.source == source) {
        if let Some(slot) = profile.get_mut(usize::from(row.local_hour)) {
            *slot += row.attempts as f64 / f64::from(days);
        }
    }
    profile
}

fn longest_silence(clock: &DayClock, slots: &[u64], profile: &[f64; 24]) -> Option<Silence> {
    let mut best: Option<(usize, usize)> = None;
    let mut run_start = None;
    for (i, &n) in slots
        .iter()
        .enumerate()
        .chain(std::iter::once((slots.len(), &1)))
    {
        match (n == 0, run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(start)) => {
                if best.is_none_or(|(s, e)| i - start > e - s) {
                    best = Some((start, i));
                }
                run_start = None;
            }
            _ => {}
        }
    }
    let (start, end) = best?;
    let expected: f64 = (start..end)
        .map(|h| {
            profile
                .get(clock.local_hour(h as u32) as usize)
                .copied()
                .unwrap_or_default()
        })
        .sum();
    Some(Silence {
        start: clock.show(clock.hour_start(start as u32)),
        end: clock.show(clock.hour_start(end as u32)),
        hours: (end - start) as u32,
        expected_attempts: round_to(expected, 2),
    })
}

fn submitters_facts(row: SubmitterRow, groups: &[GroupRow]) -> Submitters {
    Submitters {
        distinct_submitters: row.distinct_submitters,
        repeat_submitters: row.repeat_submitters,
        retries_after_failure: row.retries_after_failure,
        duplicate_attempts: groups
            .iter()
            .filter(|g| g.reason == "duplicate")
            .map(|g| g.attempts)
            .sum(),
        submitters_with_duplicates: row.submitters_with_duplicates,
        high_activity_threshold: HIGH_ACTIVITY_ATTEMPTS,
        high_activity_submitters: row.high_activity_submitters,
        high_activity: row
            .high_activity
            .into_iter()
            .map(|(submitter_id, attempts, failures)| HighActivitySubmitter {
                submitter_id,
                attempts,
                failures,
                failure_share: rate(failures, attempts),
            })
            .collect(),
    }
}

/// Per-name sums of the baseline rows: attempts, failures, and the days with traffic.
#[derive(Default)]
struct BaselineTally {
    attempts: u64,
    failures: u64,
    duplicates: u64,
    days: BTreeSet<String>,
}

fn baseline_volumes(
    rows: &[BaselineVolumeRow],
    key: impl Fn(&BaselineVolumeRow) -> &String,
    days_with_data: u32,
) -> Vec<BaselineVolume> {
    let mut tallies: BTreeMap<String, BaselineTally> = BTreeMap::new();
    for row in rows {
        let t = tallies.entry(key(row).clone()).or_default();
        t.attempts += row.attempts;
        t.failures += row.failures;
        t.duplicates += row.duplicates;
        t.days.insert(row.day.clone());
    }
    tallies
        .into_iter()
        .map(|(name, t)| BaselineVolume {
            name,
            days_with_traffic: t.days.len() as u32,
            mean_attempts_per_day: per_day(t.attempts, days_with_data),
            failure_share: rate(t.failures, t.attempts),
            mean_duplicates_per_day: per_day(t.duplicates, days_with_data),
        })
        .collect()
}

fn per_day(total: u64, days: u32) -> f64 {
    if days == 0 {
        return 0.0;
    }
    round_to(total as f64 / f64::from(days), 2)
}

fn build_baseline(
    query: &FactsQuery,
    clock: &DayClock,
    volume: &[BaselineVolumeRow],
    pages: &[BaselinePageRow],
    latency: &[LatencyRow],
) -> Baseline {
    let days_with_data = volume.iter().map(|r| &r.day).collect::<BTreeSet<_>>().len() as u32;
    let by_source = baseline_volumes(volume, |r| &r.source, days_with_data);
    let baseline_latency = latency.iter().filter(|r| r.in_day == 0);
    let nonempty = |values: BTreeSet<&String>| -> Vec<String> {
        values
            .into_iter()
            .filter(|v| !v.is_empty())
            .cloned()
            .collect()
    };
    Baseline {
        requested_days: query.baseline_days,
        days_with_data,
        first_day: clock.first_baseline_day,
        last_day: clock.last_baseline_day,
        sources_on_every_day: by_source
            .iter()
            .filter(|v| days_with_data > 0 && v.days_with_traffic == days_with_data)
            .map(|v| v.name.clone())
            .collect(),
        by_endpoint: baseline_volumes(volume, |r| &r.endpoint, days_with_data),
        by_source,
        mean_duplicates_per_day: per_day(volume.iter().map(|r| r.duplicates).sum(), days_with_data),
        latency_p95_ms: baseline_latency
            .clone()
            .find(|r| r.scope == ALL_SOURCES)
            .map(|r| quantiles(r).p95_ms),
        latency_p95_ms_by_source: {
            let mut list: Vec<BaselineLatency> = baseline_latency
                .filter(|r| r.scope != ALL_SOURCES)
                .map(|r| BaselineLatency {
                    source: r.scope.clone(),
                    p95_ms: quantiles(r).p95_ms,
                })
                .collect();
            list.sort_by(|a, b| a.source.cmp(&b.source));
            list
        },
        pages_seen: nonempty(pages.iter().map(|p| &p.page).collect()),
        forms_seen: nonempty(pages.iter().map(|p| &p.form_id).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(day: (i32, u32, u32), tz: Tz, now: DateTime<Utc>) -> DayClock {
        let query = FactsQuery {
            day: NaiveDate::from_ymd_opt(day.0, day.1, day.2).expect("valid date"),
            time_zone: tz,
            baseline_days: 7,
            service: None,
            burst_per_minute: 20,
        };
        DayClock::new(&query, now).expect("day in range")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn a_berlin_day_is_its_local_midnights_in_utc() {
        let c = clock(
            (2025, 6, 10),
            chrono_tz::Europe::Berlin,
            utc("2025-06-12T00:00:00Z"),
        );
        assert_eq!(c.start, utc("2025-06-09T22:00:00Z"));
        assert_eq!(c.end, utc("2025-06-10T22:00:00Z"));
        assert_eq!(c.baseline_start, utc("2025-06-02T22:00:00Z"));
        assert_eq!(c.status(), DayStatus::Complete);
        assert_eq!(c.day_hours(), 24);
    }

    #[test]
    fn daylight_saving_days_have_23_and_25_hours() {
        let spring = clock(
            (2025, 3, 30),
            chrono_tz::Europe::Berlin,
            utc("2025-04-01T00:00:00Z"),
        );
        let autumn = clock(
            (2025, 10, 26),
            chrono_tz::Europe::Berlin,
            utc("2025-11-01T00:00:00Z"),
        );
        assert_eq!(spring.day_hours(), 23);
        assert_eq!(autumn.day_hours(), 25);
        assert_eq!(spring.local_hour(2), 3, "02:00 does not exist on that day");
    }

    #[test]
    fn an_in_progress_day_counts_only_whole_elapsed_hours() {
        let c = clock(
            (2025, 6, 10),
            chrono_tz::Europe::Berlin,
            utc("2025-06-10T08:30:00Z"),
        );
        assert_eq!(c.status(), DayStatus::InProgress);
        assert_eq!(c.elapsed_hours(), 10, "22:00Z to 08:30Z is 10 whole hours");
    }

    #[test]
    fn silence_is_the_longest_run_of_empty_elapsed_hours() {
        let c = clock((2025, 6, 10), Tz::UTC, utc("2025-06-12T00:00:00Z"));
        let profile = [2.0; 24];
        let silence = longest_silence(&c, &[3, 0, 0, 4, 0, 0, 0, 1], &profile).expect("a silence");
        assert_eq!(silence.hours, 3);
        assert_eq!(silence.start, "2025-06-10T04:00:00+00:00");
        assert_eq!(silence.expected_attempts, 6.0);
        assert!(longest_silence(&c, &[1, 2], &profile).is_none());
    }

    #[test]
    fn rates_are_fractions_rounded_to_four_places() {
        assert_eq!(rate(1, 3), 0.3333);
        assert_eq!(rate(5, 0), 0.0);
    }
}
