//! SQL: every query gets its time filter (and the service filter) from a SqlScope.

use super::*;

/// A UTC range [from, to) and the optional service, as a WHERE clause.
pub(super) struct SqlScope<'a> {
    pub(super) from: i64,
    pub(super) to: i64,
    pub(super) service: Option<&'a str>,
    pub(super) tz: &'static str,
}

impl<'a> SqlScope<'a> {
    pub(super) fn new(
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
    pub(super) fn query(&self, client: &clickhouse::Client, sql: &str) -> clickhouse::query::Query {
        self.query_on("event_time", client, sql)
    }

    /// [`SqlScope::query`] for the quarter-hour rollups: scopes start and end on local
    /// midnights, which are always bucket boundaries.
    pub(super) fn rollup_query(
        &self,
        client: &clickhouse::Client,
        sql: &str,
    ) -> clickhouse::query::Query {
        self.query_on("bucket", client, sql)
    }

    pub(super) fn query_on(
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

pub(super) async fn fetch<T>(
    query: clickhouse::query::Query,
    what: &'static str,
) -> Result<Vec<T>, FactsError>
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
pub(super) struct GroupRow {
    pub(super) source: String,
    pub(super) endpoint: String,
    pub(super) page: String,
    pub(super) form_id: String,
    pub(super) client_id: String,
    pub(super) outcome: String,
    pub(super) reason: String,
    pub(super) field: String,
    pub(super) attempts: u64,
    pub(super) first_ms: i64,
    pub(super) last_ms: i64,
}

pub(super) async fn fetch_groups(
    client: &clickhouse::Client,
    day: &SqlScope<'_>,
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
pub(super) struct LatencyRow {
    pub(super) in_day: u8,
    pub(super) scope: String,
    pub(super) attempts: u64,
    pub(super) quantiles_ms: Vec<f64>,
}

/// Marks the all-sources scope in the latency query (source names are identifiers).
pub(super) const ALL_SOURCES: &str = "*";

/// p50/p95/p99 per source and overall: the day's exact, from its submissions; the
/// baseline's merged from the quarter-hour t-digests (within about 1 % on samples that
/// large), so a week of busy days is not sorted again.
pub(super) async fn fetch_latency(
    client: &clickhouse::Client,
    day: &SqlScope<'_>,
    base: &SqlScope<'_>,
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
pub(super) struct MinuteRow {
    pub(super) minute: i64,
    pub(super) attempts: u64,
    pub(super) failures: u64,
    pub(super) downstream_timeouts: u64,
    pub(super) downstream_errors: u64,
    pub(super) first_ms: i64,
    pub(super) last_ms: i64,
    /// Attempts accepted after a successful delivery: the evidence the CRM answered.
    pub(super) delivered: u64,
    /// First and last downstream failure and delivery of the minute (0 when none).
    pub(super) downstream_first_ms: i64,
    pub(super) downstream_last_ms: i64,
    pub(super) delivered_first_ms: i64,
    pub(super) delivered_last_ms: i64,
}

/// An attempt that reached the CRM and was delivered.
const DELIVERED: &str = "outcome = 'accepted' AND delivery_attempts > 0";
/// An attempt whose delivery failed or timed out.
const DOWNSTREAM_FAILED: &str = "reason IN ('downstream_timeout', 'downstream_error')";

pub(super) async fn fetch_minutes(
    client: &clickhouse::Client,
    day: &SqlScope<'_>,
) -> Result<Vec<MinuteRow>, FactsError> {
    let sql = format!(
        "SELECT toInt64(intDiv(toUnixTimestamp64Milli(event_time), 60000) * 60) AS minute, \
         toUInt64(count()) AS attempts, toUInt64(countIf(outcome != 'accepted')) AS failures, \
         toUInt64(countIf(reason = 'downstream_timeout')) AS downstream_timeouts, \
         toUInt64(countIf(reason = 'downstream_error')) AS downstream_errors, \
         toInt64(min(toUnixTimestamp64Milli(event_time))) AS first_ms, \
         toInt64(max(toUnixTimestamp64Milli(event_time))) AS last_ms, \
         toUInt64(countIf({DELIVERED})) AS delivered, \
         toInt64(minIf(toUnixTimestamp64Milli(event_time), {DOWNSTREAM_FAILED})) AS downstream_first_ms, \
         toInt64(maxIf(toUnixTimestamp64Milli(event_time), {DOWNSTREAM_FAILED})) AS downstream_last_ms, \
         toInt64(minIf(toUnixTimestamp64Milli(event_time), {DELIVERED})) AS delivered_first_ms, \
         toInt64(maxIf(toUnixTimestamp64Milli(event_time), {DELIVERED})) AS delivered_last_ms \
         FROM lead_submissions WHERE {{filter}} GROUP BY minute ORDER BY minute"
    );
    fetch(day.query(client, &sql), "attempts per minute").await
}

/// The delivery nearest to one edge of the day, outside it: whether the CRM was failing
/// when the day began or when it ended.
#[derive(Debug, Clone, Copy, clickhouse::Row, Deserialize)]
pub(super) struct EdgeRow {
    pub(super) at_ms: i64,
    pub(super) failed: u8,
}

/// How far outside the day the edge deliveries are looked for.
const EDGE_HOURS: i64 = 24;

/// The last delivery outcome before the day and the first after it, each one row at most.
pub(super) async fn fetch_delivery_edges(
    client: &clickhouse::Client,
    clock: &DayClock,
    service: Option<&str>,
) -> Result<(Option<EdgeRow>, Option<EdgeRow>), FactsError> {
    let edge = TimeDelta::hours(EDGE_HOURS);
    let before = SqlScope::new(clock, clock.start - edge, clock.start, service);
    let after = SqlScope::new(clock, clock.end, clock.end + edge, service);
    let sql = |order: &str| {
        format!(
            "SELECT toInt64(toUnixTimestamp64Milli(event_time)) AS at_ms, \
             toUInt8({DOWNSTREAM_FAILED}) AS failed FROM lead_submissions \
             WHERE {{filter}} AND (({DELIVERED}) OR {DOWNSTREAM_FAILED}) \
             ORDER BY event_time {order} LIMIT 1"
        )
    };
    let (before, after) = tokio::try_join!(
        fetch::<EdgeRow>(
            before.query(client, &sql("DESC")),
            "the last delivery before the day"
        ),
        fetch::<EdgeRow>(
            after.query(client, &sql("ASC")),
            "the first delivery after the day"
        ),
    )?;
    Ok((before.into_iter().next(), after.into_iter().next()))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
pub(super) struct ClientRow {
    pub(super) client_id: String,
    pub(super) attempts: u64,
    pub(super) max_per_minute: u64,
    pub(super) busiest_minute: i64,
    pub(super) burst_minutes: u64,
    pub(super) rate_limited: u64,
    pub(super) rate_limited_first: i64,
    pub(super) rate_limited_last: i64,
}

pub(super) async fn fetch_clients(
    client: &clickhouse::Client,
    day: &SqlScope<'_>,
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
pub(super) struct SourceHourRow {
    pub(super) source: String,
    pub(super) hour_index: i64,
    pub(super) attempts: u64,
}

pub(super) async fn fetch_source_hours(
    client: &clickhouse::Client,
    day: &SqlScope<'_>,
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
pub(super) struct SubmitterRow {
    pub(super) distinct_submitters: u64,
    pub(super) repeat_submitters: u64,
    pub(super) retries_after_failure: u64,
    pub(super) submitters_with_duplicates: u64,
    pub(super) high_activity_submitters: u64,
    pub(super) high_activity: Vec<(String, u64, u64)>,
}

/// One row: per-submitter aggregates folded in ClickHouse; only the busiest are listed.
pub(super) async fn fetch_submitters(
    client: &clickhouse::Client,
    day: &SqlScope<'_>,
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
pub(super) struct DeliveryRow {
    pub(super) delivery_attempts: u8,
    pub(super) count: u64,
}

pub(super) async fn fetch_delivery(
    client: &clickhouse::Client,
    day: &SqlScope<'_>,
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
pub(super) struct BaselineVolumeRow {
    pub(super) day: String,
    pub(super) source: String,
    pub(super) endpoint: String,
    pub(super) attempts: u64,
    pub(super) failures: u64,
    pub(super) duplicates: u64,
}

pub(super) async fn fetch_baseline_volume(
    client: &clickhouse::Client,
    base: &SqlScope<'_>,
) -> Result<Vec<BaselineVolumeRow>, FactsError> {
    let sql = "SELECT toString(toDate(bucket, {tz})) AS day, toString(source) AS source, \
               toString(endpoint) AS endpoint, toUInt64(sum(submissions)) AS attempts, \
               toUInt64(sumIf(submissions, outcome != 'accepted')) AS failures, \
               toUInt64(sumIf(submissions, reason = 'duplicate')) AS duplicates \
               FROM lead_submissions_15m WHERE {filter} GROUP BY day, source, endpoint";
    fetch(base.rollup_query(client, sql), "the baseline's volume").await
}

#[derive(Debug, clickhouse::Row, Deserialize)]
pub(super) struct BaselineHourRow {
    pub(super) source: String,
    pub(super) local_hour: u8,
    pub(super) attempts: u64,
}

pub(super) async fn fetch_baseline_hourly(
    client: &clickhouse::Client,
    base: &SqlScope<'_>,
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
pub(super) struct BaselinePageRow {
    pub(super) page: String,
    pub(super) form_id: String,
}

pub(super) async fn fetch_baseline_pages(
    client: &clickhouse::Client,
    base: &SqlScope<'_>,
) -> Result<Vec<BaselinePageRow>, FactsError> {
    let sql = "SELECT toString(page) AS page, toString(form_id) AS form_id \
               FROM lead_submissions_15m WHERE {filter} GROUP BY page, form_id";
    fetch(base.rollup_query(client, sql), "the baseline's pages").await
}

/// Attempts per hour of the day and every closed-set column but the client: the series
/// the gradual-change and what-changed detectors fold per subject.
#[derive(Debug, clickhouse::Row, Deserialize)]
pub(super) struct HourCellRow {
    pub(super) hour_index: i64,
    pub(super) source: String,
    pub(super) endpoint: String,
    pub(super) page: String,
    pub(super) form_id: String,
    pub(super) outcome: String,
    pub(super) reason: String,
    pub(super) field: String,
    pub(super) attempts: u64,
    pub(super) first_ms: i64,
    pub(super) last_ms: i64,
}

pub(super) async fn fetch_hour_cells(
    client: &clickhouse::Client,
    day: &SqlScope<'_>,
    day_start: DateTime<Utc>,
) -> Result<Vec<HourCellRow>, FactsError> {
    let sql = format!(
        "SELECT toInt64(intDiv(toUnixTimestamp64Milli(event_time) - {}, 3600000)) AS hour_index, \
         toString(source) AS source, toString(endpoint) AS endpoint, toString(page) AS page, \
         toString(form_id) AS form_id, toString(outcome) AS outcome, toString(reason) AS reason, \
         toString(field) AS field, toUInt64(count()) AS attempts, \
         toInt64(min(toUnixTimestamp64Milli(event_time))) AS first_ms, \
         toInt64(max(toUnixTimestamp64Milli(event_time))) AS last_ms \
         FROM lead_submissions WHERE {{filter}} \
         GROUP BY hour_index, source, endpoint, page, form_id, outcome, reason, field",
        day_start.timestamp_millis()
    );
    fetch(day.query(client, &sql), "attempts per hour and subject").await
}

/// The baseline's attempts per local clock hour and closed-set column (the rollup has
/// no field).
#[derive(Debug, clickhouse::Row, Deserialize)]
pub(super) struct BaselineCellRow {
    pub(super) local_hour: u8,
    pub(super) source: String,
    pub(super) endpoint: String,
    pub(super) page: String,
    pub(super) form_id: String,
    pub(super) outcome: String,
    pub(super) reason: String,
    pub(super) attempts: u64,
}

pub(super) async fn fetch_baseline_cells(
    client: &clickhouse::Client,
    base: &SqlScope<'_>,
) -> Result<Vec<BaselineCellRow>, FactsError> {
    let sql = "SELECT toUInt8(toHour(bucket, {tz})) AS local_hour, toString(source) AS source, \
               toString(endpoint) AS endpoint, toString(page) AS page, \
               toString(form_id) AS form_id, toString(outcome) AS outcome, \
               toString(reason) AS reason, toUInt64(sum(submissions)) AS attempts \
               FROM lead_submissions_15m WHERE {filter} \
               GROUP BY local_hour, source, endpoint, page, form_id, outcome, reason";
    fetch(
        base.rollup_query(client, sql),
        "the baseline's attempts per hour and subject",
    )
    .await
}
