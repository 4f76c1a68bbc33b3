//! Is the record complete? The service counts every attempt it ends in its
//! `leads.submissions` counter; the record is the `lead_submissions` rows its
//! `lead.submit` spans became. The two travel separately (metrics and traces), so a
//! span lost in transit — a collector outage past its retry budget, a full export
//! queue — shows up as attempts counted but not recorded.
//!
//! Counts are compared per service instance (`service.instance.id`, new at every start)
//! and source, over the window the counter itself covers: from its last point before
//! the day (or the instance's start) to its last point within the day. Cumulative
//! counters are read as last minus base, delta ones summed. Replayed history (stated
//! event times) is left out: its rows land on the simulated day, its counts on today.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::report::{ConfidenceLevel, MAX_COMPLETENESS_CHARS, Report};

/// Missing share above which the record is called incomplete (0.1 %).
pub const INCOMPLETE_SHARE: f64 = 0.001;

/// How far before the day the base point of a cumulative counter is looked for: the
/// service exports every few seconds, so its last point before midnight is close by.
const BASE_LOOKBACK_SECS: i64 = 3600;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    /// Live attempts the service counted.
    pub counted: u64,
    /// Of those, the ones with a row in `lead_submissions`.
    pub recorded: u64,
    /// counted − recorded (never negative: rows without a count are not a loss).
    pub missing: u64,
    /// missing / counted.
    pub missing_share: f64,
    /// Per instance and source, largest loss first.
    pub instances: Vec<InstanceRecording>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecording {
    pub instance: String,
    pub source: String,
    pub counted: u64,
    pub recorded: u64,
    pub missing: u64,
}

impl Recording {
    pub fn is_incomplete(&self) -> bool {
        self.missing > 0 && self.missing_share > INCOMPLETE_SHARE
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct CountedRow {
    instance: String,
    source: String,
    counted: u64,
    window_start: i64,
    window_end: i64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct RecordedRow {
    source: String,
    recorded: u64,
}

/// The recording facts of [start, end), for one service or all.
pub async fn fetch(
    client: &clickhouse::Client,
    service: Option<&str>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> clickhouse::error::Result<Recording> {
    let counted = fetch_counted(client, service, start, end).await?;
    let mut instances = Vec::with_capacity(counted.len());
    for (instance, rows) in by_instance(&counted) {
        let window_start = rows.iter().map(|r| r.window_start).min().unwrap_or(0);
        let window_end = rows.iter().map(|r| r.window_end).max().unwrap_or(0);
        let recorded = fetch_recorded(client, service, instance, window_start, window_end).await?;
        for row in rows {
            let recorded = recorded
                .iter()
                .find(|r| r.source == row.source)
                .map_or(0, |r| r.recorded);
            instances.push(InstanceRecording {
                instance: instance.to_owned(),
                source: row.source.clone(),
                counted: row.counted,
                recorded: recorded.min(row.counted),
                missing: row.counted.saturating_sub(recorded),
            });
        }
    }
    Ok(summarise(instances))
}

fn by_instance(rows: &[CountedRow]) -> Vec<(&str, Vec<&CountedRow>)> {
    let mut grouped: Vec<(&str, Vec<&CountedRow>)> = Vec::new();
    for row in rows {
        match grouped
            .iter_mut()
            .find(|(instance, _)| *instance == row.instance)
        {
            Some((_, rows)) => rows.push(row),
            None => grouped.push((&row.instance, vec![row])),
        }
    }
    grouped
}

fn summarise(mut instances: Vec<InstanceRecording>) -> Recording {
    instances.sort_by(|a, b| {
        b.missing
            .cmp(&a.missing)
            .then_with(|| a.instance.cmp(&b.instance))
            .then_with(|| a.source.cmp(&b.source))
    });
    let counted = instances.iter().map(|i| i.counted).sum::<u64>();
    let recorded = instances.iter().map(|i| i.recorded).sum::<u64>();
    let missing = counted.saturating_sub(recorded);
    Recording {
        counted,
        recorded,
        missing,
        missing_share: super::facts::round_to(super::facts::rate(missing, counted), 6),
        instances,
    }
}

/// Counted attempts per instance and source, with the window each count covers (ns).
async fn fetch_counted(
    client: &clickhouse::Client,
    service: Option<&str>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> clickhouse::error::Result<Vec<CountedRow>> {
    let (start, end) = (start.timestamp(), end.timestamp());
    let lookback = start - BASE_LOOKBACK_SECS;
    let service_filter = if service.is_some() {
        "AND ServiceName = ?"
    } else {
        ""
    };
    // One series per attribute set and process start; a series whose counter started
    // within the day counts from zero.
    let sql = format!(
        "SELECT instance, source, sum(counted) AS counted, \
                toInt64(min(window_start)) AS window_start, toInt64(max(window_end)) AS window_end \
         FROM ( \
           SELECT ResourceAttributes['service.instance.id'] AS instance, \
                  Attributes['lead.source'] AS source, \
                  StartTimeUnix AS started, \
                  toUnixTimestamp64Nano(StartTimeUnix) >= {start} * 1000000000 AS started_in_day, \
                  any(AggregationTemporality) AS temporality, \
                  if(temporality = 1, \
                     sumIf(Value, TimeUnix >= toDateTime64({start}, 0, 'UTC')), \
                     argMaxIf(Value, TimeUnix, TimeUnix < toDateTime64({end}, 0, 'UTC')) \
                       - if(started_in_day, 0, \
                            argMaxIf(Value, TimeUnix, TimeUnix < toDateTime64({start}, 0, 'UTC')))) \
                    AS counted_f, \
                  toUInt64(greatest(counted_f, 0)) AS counted, \
                  if(started_in_day OR temporality = 1, toUnixTimestamp64Nano(started), \
                     toUnixTimestamp64Nano(maxIf(TimeUnix, TimeUnix < toDateTime64({start}, 0, 'UTC')))) \
                    AS window_start, \
                  toUnixTimestamp64Nano(max(TimeUnix)) AS window_end \
           FROM otel_metrics_sum \
           WHERE MetricName = 'leads.submissions' {service_filter} \
             AND Attributes['lead.replayed'] != 'true' \
             AND TimeUnix >= toDateTime64({lookback}, 0, 'UTC') \
             AND TimeUnix < toDateTime64({end}, 0, 'UTC') \
           GROUP BY instance, source, Attributes, started \
           HAVING countIf(TimeUnix >= toDateTime64({start}, 0, 'UTC')) > 0 \
         ) \
         WHERE instance != '' \
         GROUP BY instance, source \
         ORDER BY instance, source"
    );
    let query = client.query(&sql);
    let query = match service {
        Some(service) => query.bind(service),
        None => query,
    };
    query.fetch_all().await
}

/// Rows per source of one instance whose event time lies in (from, to] (ns).
async fn fetch_recorded(
    client: &clickhouse::Client,
    service: Option<&str>,
    instance: &str,
    from: i64,
    to: i64,
) -> clickhouse::error::Result<Vec<RecordedRow>> {
    let service_filter = if service.is_some() {
        "AND service = ?"
    } else {
        ""
    };
    let sql = format!(
        "SELECT source, count() AS recorded FROM lead_submissions \
         WHERE instance = ? AND replayed = 0 {service_filter} \
           AND event_time > fromUnixTimestamp64Nano(toInt64(?), 'UTC') \
           AND event_time <= fromUnixTimestamp64Nano(toInt64(?), 'UTC') \
         GROUP BY source"
    );
    let mut query = client.query(&sql).bind(instance);
    if let Some(service) = service {
        query = query.bind(service);
    }
    query.bind(from).bind(to).fetch_all().await
}

/// Says in the report, whoever wrote it, that the record of the day is incomplete: in
/// its data completeness and by lowering its confidence to at most medium.
pub fn qualify(report: &mut Report, recording: &Recording) {
    if !recording.is_incomplete() {
        return;
    }
    let note = format!(
        "{} of {} counted attempts ({:.2} %) are missing from the record.",
        recording.missing,
        recording.counted,
        recording.missing_share * 100.0
    );
    let completeness = &mut report.scope.data_completeness;
    let joined = if completeness.is_empty() {
        note.clone()
    } else {
        format!("{completeness} {note}")
    };
    if joined.chars().count() <= MAX_COMPLETENESS_CHARS {
        *completeness = joined;
    } else {
        *completeness = note.clone();
    }
    report.confidence.qualify(ConfidenceLevel::Medium, note);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, source: &str, counted: u64, recorded: u64) -> InstanceRecording {
        InstanceRecording {
            instance: name.into(),
            source: source.into(),
            counted,
            recorded,
            missing: counted - recorded,
        }
    }

    #[test]
    fn the_loss_is_summed_over_instances_and_sources() {
        let recording = summarise(vec![
            instance("a", "quiz", 1_000, 1_000),
            instance("b", "quiz", 500, 480),
            instance("b", "web_form", 500, 500),
        ]);
        assert_eq!(
            (recording.counted, recording.recorded, recording.missing),
            (2_000, 1_980, 20)
        );
        assert_eq!(recording.missing_share, 0.01);
        assert_eq!(recording.instances[0].instance, "b", "largest loss first");
        assert!(recording.is_incomplete());
    }

    fn a_report() -> Report {
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let facts = crate::analyze::facts::fixture();
        super::super::rules::report_from_rules(&facts, &[], day, "UTC")
    }

    #[test]
    fn an_incomplete_record_is_named_in_the_report_and_caps_its_confidence() {
        let mut report = a_report();
        assert_eq!(report.confidence.level, ConfidenceLevel::High);
        let recording = summarise(vec![instance("a", "quiz", 1_000, 900)]);
        qualify(&mut report, &recording);
        let note = "100 of 1000 counted attempts (10.00 %) are missing from the record.";
        assert!(
            report.scope.data_completeness.ends_with(note),
            "{}",
            report.scope.data_completeness
        );
        assert_eq!(report.confidence.level, ConfidenceLevel::Medium);
        assert_eq!(
            report.confidence.reasons.last().map(String::as_str),
            Some(note)
        );
        report.validate().expect("still within the report's bounds");
    }

    #[test]
    fn a_complete_record_leaves_the_report_alone() {
        let mut report = a_report();
        let before = report.clone();
        qualify(
            &mut report,
            &summarise(vec![instance("a", "quiz", 1_000, 1_000)]),
        );
        assert_eq!(report, before);
    }

    #[test]
    fn a_loss_up_to_a_tenth_of_a_percent_is_not_incomplete() {
        let recording = summarise(vec![instance("a", "quiz", 10_000, 9_990)]);
        assert_eq!(recording.missing, 10);
        assert!(!recording.is_incomplete());
        assert!(!summarise(vec![]).is_incomplete());
    }
}
