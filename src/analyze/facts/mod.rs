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

mod cells;
mod clock;
mod fold;
mod outage;
mod sql;
#[cfg(test)]
mod tests;

pub use cells::{Cell, CellValues, Cells};
use clock::*;
use fold::*;
pub use fold::{rate, round_to};
use outage::downstream_windows;
use sql::*;

/// Attempts from one submitter in a day from which it counts as high activity.
pub const HIGH_ACTIVITY_ATTEMPTS: u64 = 10;
/// High-activity submitters listed at most (the busiest first).
const HIGH_ACTIVITY_LISTED: u32 = 20;
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
    /// Per-hour cells of every column, for the generic detectors; not serialised.
    #[serde(skip)]
    pub cells: Cells,
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

impl DayStatus {
    /// Its name as the facts serialise it.
    pub fn as_str(self) -> &'static str {
        match self {
            DayStatus::Complete => "complete",
            DayStatus::InProgress => "in_progress",
            DayStatus::NotStarted => "not_started",
        }
    }
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

/// A run of failed deliveries (`downstream_timeout`/`downstream_error`) with no
/// successful delivery between them, however far apart: with sparse traffic an empty
/// quarter hour says nothing about the CRM being back, a delivered lead does. The day's
/// part of it when it crosses a local midnight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownstreamWindow {
    /// The first failed delivery (or the day's start when the CRM was already failing).
    pub start: String,
    /// The last failed delivery (or the day's end when it was still failing).
    pub end: String,
    /// Whole minutes from start to end, rounded up (at least 1).
    pub span_minutes: u64,
    pub minutes_with_failures: u64,
    pub timeouts: u64,
    pub errors: u64,
    /// All attempts in the window's minutes, whatever their outcome.
    pub attempts: u64,
    /// (timeouts + errors) / attempts.
    pub downstream_failure_share: f64,
    /// The last successful delivery before the window, if any (the day before included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_before: Option<String>,
    /// The first successful delivery after it, if any (the day after included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_delivery_after: Option<String>,
    /// Minutes from the last failure to the next delivery (rounded up): the CRM came back
    /// somewhere in that gap. Absent when no delivery followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty_minutes: Option<u64>,
    /// The CRM was already failing at the day's local midnight (the window began the day
    /// before; this is the day's part).
    #[serde(default)]
    pub from_previous_day: bool,
    /// The CRM was still failing at the day's end (it goes on the next day).
    #[serde(default)]
    pub into_next_day: bool,
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

/// The facts fixture the unit and integration tests share (tests/fixtures/
/// day_facts.json): a serialized `DayFacts` of a Berlin day with two sources.
#[cfg(test)]
pub(crate) fn fixture() -> DayFacts {
    serde_json::from_str(include_str!("../../../tests/fixtures/day_facts.json"))
        .expect("the facts fixture is a DayFacts")
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
    let day = SqlScope::new(&clock, clock.start, clock.end, query.service.as_deref());
    let base = SqlScope::new(
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
    let (base_volume, base_hourly, base_pages, recording, edges, hour_cells, base_cells) = tokio::try_join!(
        fetch_baseline_volume(client, &base),
        fetch_baseline_hourly(client, &base),
        fetch_baseline_pages(client, &base),
        recording,
        fetch_delivery_edges(client, &clock, query.service.as_deref()),
        fetch_hour_cells(client, &day, clock.start),
        fetch_baseline_cells(client, &base),
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
            downstream_windows: downstream_windows(&clock, &minutes, edges),
        },
        cells: cells::cells(&clock, &hour_cells, &base_cells, &groups),
        baseline,
        totals,
        recording,
    })
}
