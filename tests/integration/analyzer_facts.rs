//! Facts computed by SQL over synthetic `lead_submissions` rows: three normal baseline
//! days and a day in Europe/Berlin with planted anomalies (an unauthorized cluster, a
//! source silent for six hours, a CRM outage), plus rows on both sides of local midnight.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Berlin;
use lead_lab::analyze::detect::detect;
use lead_lab::analyze::facts::{self, DayFacts, DayStatus, FactsQuery};
use lead_lab::analyze::{FindingKind, Severity};
use lead_lab::config::DetectorSettings;

use crate::support::TestDatabase;

const SERVICE: &str = "lead-lab";

#[derive(Debug, Clone, clickhouse::Row, serde::Serialize)]
struct Submission {
    #[serde(with = "clickhouse::serde::chrono::datetime64::nanos")]
    event_time: DateTime<Utc>,
    trace_id: String,
    span_id: String,
    service: String,
    instance: String,
    source: String,
    endpoint: String,
    page: String,
    form_id: String,
    outcome: String,
    reason: String,
    field: String,
    submitter_hash: String,
    client_id: String,
    lead_id: String,
    http_status: u16,
    delivery_attempts: u8,
    duration_ns: u64,
    replayed: u8,
}

/// Berlin local time on a day of June 2026.
fn at(day: u32, hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
    Berlin
        .with_ymd_and_hms(2026, 6, day, hour, minute, second)
        .single()
        .expect("an unambiguous local time")
        .with_timezone(&Utc)
}

/// Builds rows with unique ids and submitters; `kind` picks outcome, reason and timing.
struct Rows(Vec<Submission>);

#[derive(Clone, Copy)]
enum Kind {
    Accepted,
    InvalidEmail,
    Unauthorized,
    DownstreamError,
}

impl Rows {
    fn add(&mut self, when: DateTime<Utc>, source: &str, kind: Kind) {
        let n = self.0.len();
        let (outcome, reason, field, status, delivery, ms) = match kind {
            Kind::Accepted => ("accepted", "", "", 201, 1, 200),
            Kind::InvalidEmail => ("rejected", "invalid_field", "email", 422, 0, 5),
            Kind::Unauthorized => ("rejected", "unauthorized", "", 401, 0, 5),
            Kind::DownstreamError => ("failed", "downstream_error", "", 502, 3, 3_000),
        };
        let page = if source == "quiz" {
            "/quiz/start"
        } else {
            "/pricing"
        };
        let client_id = match kind {
            Kind::Unauthorized => String::new(),
            _ => format!("{source}-key"),
        };
        self.0.push(Submission {
            event_time: when,
            trace_id: format!("{n:032x}"),
            span_id: format!("{n:016x}"),
            service: SERVICE.into(),
            instance: String::new(),
            source: source.into(),
            endpoint: "leads".into(),
            page: page.into(),
            form_id: String::new(),
            outcome: outcome.into(),
            reason: reason.into(),
            field: field.into(),
            submitter_hash: format!("{:064x}", n + 1),
            client_id,
            lead_id: if outcome == "accepted" {
                format!("lead-{n}")
            } else {
                String::new()
            },
            http_status: status,
            delivery_attempts: delivery,
            duration_ns: ms * 1_000_000,
            replayed: 0,
        });
    }

    /// web: 4 attempts an hour (the :30 one of hours 3, 9, 15, 21 an invalid email);
    /// quiz: 2 an hour, except in `quiz_silent` hours.
    fn normal_day(&mut self, day: u32, quiz_silent: std::ops::Range<u32>) {
        for hour in 0..24 {
            for minute in [0, 15, 30, 45] {
                let typo = minute == 30 && hour % 6 == 3;
                let kind = if typo {
                    Kind::InvalidEmail
                } else {
                    Kind::Accepted
                };
                self.add(at(day, hour, minute, 7), "web", kind);
            }
            if !quiz_silent.contains(&hour) {
                for minute in [5, 35] {
                    self.add(at(day, hour, minute, 0), "quiz", Kind::Accepted);
                }
            }
        }
    }
}

async fn insert(db: &TestDatabase, rows: &[Submission]) {
    let client = db.bound_client();
    let mut insert = client
        .insert::<Submission>("lead_submissions")
        .await
        .expect("insert starts");
    for row in rows {
        insert.write(row).await.expect("row written");
    }
    insert.end().await.expect("insert ends");
}

fn planted() -> Vec<Submission> {
    let mut rows = Rows(Vec::new());
    for day in 7..=9 {
        rows.normal_day(day, 0..0);
    }
    rows.normal_day(10, 8..14);
    // Just before and at local midnight, at both ends of the day.
    rows.add(at(9, 23, 59, 59), "web", Kind::Accepted);
    rows.add(at(10, 0, 0, 0), "web", Kind::Accepted);
    rows.add(at(10, 23, 59, 59), "web", Kind::Accepted);
    rows.add(at(11, 0, 0, 0), "web", Kind::Accepted);
    // A rotated key on web: 25 unauthorized attempts from 10:00.
    for minute in 0..25 {
        rows.add(at(10, 10, minute, 30), "web", Kind::Unauthorized);
    }
    // The CRM down from 16:05 to 16:15: two failed deliveries a minute, between quiz's
    // delivery at 16:05:00 and web's at 16:15:07.
    for minute in 5..15 {
        for second in [10, 40] {
            rows.add(at(10, 16, minute, second), "web", Kind::DownstreamError);
        }
    }
    // Another service's attempt, which the service filter leaves out.
    let mut other = Rows(Vec::new());
    other.add(at(10, 12, 0, 0), "web", Kind::Accepted);
    other.0[0].service = "other-service".into();
    other.0[0].trace_id = "f".repeat(32);
    rows.0.extend(other.0);
    rows.0
}

fn query() -> FactsQuery {
    FactsQuery {
        day: NaiveDate::from_ymd_opt(2026, 6, 10).expect("valid date"),
        time_zone: Berlin,
        baseline_days: 3,
        service: Some(SERVICE.into()),
        burst_per_minute: DetectorSettings::default().burst_per_minute,
    }
}

async fn computed(now: DateTime<Utc>) -> DayFacts {
    let db = TestDatabase::migrated().await;
    insert(&db, &planted()).await;
    facts::compute(&db.bound_client(), &query(), now)
        .await
        .expect("facts compute")
}

/// The longest silence of `source` on the day; the test fails when it had none.
fn longest_silence(facts: &DayFacts, source: &str) -> facts::Silence {
    facts
        .source_activity
        .iter()
        .find(|a| a.source == source)
        .and_then(|a| a.longest_silence.clone())
        .unwrap_or_else(|| panic!("{source} was silent"))
}

#[tokio::test]
async fn facts_of_a_berlin_day_count_exactly_and_respect_local_midnight() {
    let facts = computed(at(12, 0, 0, 0)).await;

    // web: 96 normal + 2 at the day's edges + 25 unauthorized + 20 downstream errors;
    // quiz: 2 an hour for 18 hours. The row at the next midnight and the other service's
    // row are not part of the day.
    assert_eq!(facts.totals.attempts, 143 + 36, "{:#?}", facts.totals);
    assert_eq!(facts.totals.accepted, 94 + 36);
    assert_eq!(facts.totals.rejected, 4 + 25);
    assert_eq!(facts.totals.failed, 20);
    let source = |name: &str| facts.by_source.iter().find(|b| b.name == name).cloned();
    let web = source("web").expect("web has traffic");
    assert_eq!((web.attempts, web.rejected, web.failed), (143, 29, 20));
    assert_eq!(source("quiz").map(|b| b.attempts), Some(36));
    let unauthorized = facts
        .source_reasons
        .iter()
        .find(|r| r.source == "web" && r.reason == "unauthorized")
        .expect("unauthorized on web");
    assert_eq!(unauthorized.count, 25);
    assert_eq!(unauthorized.first_event, "2026-06-10T10:00:30+02:00");

    let c = &facts.completeness;
    assert_eq!(c.status, DayStatus::Complete);
    assert_eq!((c.day_hours, c.elapsed_hours), (24, 24));
    assert_eq!(c.day_start, "2026-06-10T00:00:00+02:00");
    assert_eq!(c.first_event.as_deref(), Some("2026-06-10T00:00:00+02:00"));
    assert_eq!(c.last_event.as_deref(), Some("2026-06-10T23:59:59+02:00"));
    assert!(c.hours_without_data.is_empty(), "web posts every hour");
    assert_eq!(facts.shape.hourly.len(), 24);
    assert_eq!(facts.shape.hourly[0].local_hour, 0);
    assert_eq!(
        facts.shape.hourly[0].attempts,
        4 + 1 + 2,
        "midnight's row is the day's"
    );

    let b = &facts.baseline;
    assert_eq!(b.days_with_data, 3);
    assert_eq!(
        b.first_day,
        NaiveDate::from_ymd_opt(2026, 6, 7).expect("valid date")
    );
    assert_eq!(
        b.source("web").map(|v| v.mean_attempts_per_day),
        Some(96.33),
        "{b:#?}"
    );
    assert_eq!(
        b.source("quiz").map(|v| v.mean_attempts_per_day),
        Some(48.0)
    );
    assert_eq!(b.source("web").map(|v| v.failure_share), Some(0.0415));
    assert_eq!(b.sources_on_every_day, ["quiz", "web"]);
    assert_eq!(b.pages_seen, ["/pricing", "/quiz/start"]);
    assert_eq!(b.latency_p95_ms, Some(200.0));

    let quiz = longest_silence(&facts, "quiz");
    assert_eq!((quiz.hours, quiz.expected_attempts), (6, 12.0));
    assert_eq!(quiz.start, "2026-06-10T08:00:00+02:00");

    // Each hourly cell knows its first and last attempt: web's unauthorized ones of
    // 10:00 came from 10:00:30 to 10:24:30.
    let unauthorized_at_ten = facts
        .cells
        .day
        .iter()
        .find(|c| c.hour == 10 && c.values.source == "web" && c.values.reason == "unauthorized")
        .expect("a cell of web's unauthorized attempts at 10:00");
    assert_eq!(unauthorized_at_ten.attempts, 25);
    assert_eq!(
        unauthorized_at_ten.span,
        Some((
            "2026-06-10T10:00:30+02:00".to_owned(),
            "2026-06-10T10:24:30+02:00".to_owned()
        ))
    );

    let windows = &facts.delivery.downstream_windows;
    assert_eq!(windows.len(), 1, "{windows:#?}");
    assert_eq!((windows[0].span_minutes, windows[0].errors), (10, 20));
    assert_eq!(windows[0].start, "2026-06-10T16:05:10+02:00");
    assert_eq!(windows[0].end, "2026-06-10T16:14:40+02:00");
    assert_eq!(
        windows[0].last_delivery_before.as_deref(),
        Some("2026-06-10T16:05:00+02:00")
    );
    assert_eq!(
        windows[0].next_delivery_after.as_deref(),
        Some("2026-06-10T16:15:07+02:00")
    );
    assert_eq!(windows[0].uncertainty_minutes, Some(1));
    assert!(!windows[0].from_previous_day && !windows[0].into_next_day);
    assert_eq!(facts.submitters.distinct_submitters, 179);
    assert!(serde_json::to_string(&facts).is_ok());
}

#[tokio::test]
async fn the_planted_anomalies_are_found() {
    let facts = computed(at(12, 0, 0, 0)).await;
    let findings = detect(&facts, &DetectorSettings::default());
    let found = |kind: FindingKind, source: Option<&str>| {
        findings
            .iter()
            .find(|f| f.kind == kind && f.subject.source.as_deref() == source)
            .unwrap_or_else(|| panic!("no {kind:?} on {source:?} in {findings:#?}"))
    };
    assert_eq!(
        found(FindingKind::UnauthorizedCluster, Some("web")).severity,
        Severity::High
    );
    assert_eq!(
        found(FindingKind::DownstreamOutage, None).severity,
        Severity::High
    );
    let silent = found(FindingKind::SilentSource, Some("quiz"));
    assert_eq!(
        silent.window,
        Some((
            "2026-06-10T08:00:00+02:00".into(),
            "2026-06-10T14:00:00+02:00".into()
        ))
    );
    assert!(
        !findings
            .iter()
            .any(|f| f.subject.source.as_deref() == Some("quiz") && f.severity == Severity::High),
        "{findings:#?}"
    );
}

#[tokio::test]
async fn an_in_progress_day_counts_only_elapsed_hours() {
    let facts = computed(at(10, 12, 30, 0)).await;
    assert_eq!(facts.completeness.status, DayStatus::InProgress);
    assert_eq!(facts.completeness.elapsed_hours, 12);
    let quiz = longest_silence(&facts, "quiz");
    assert_eq!(quiz.hours, 4, "08:00 to 12:00, the hours elapsed so far");
}

#[tokio::test]
async fn the_days_latency_quantiles_are_exact() {
    let db = TestDatabase::migrated().await;
    let mut rows = Rows(Vec::new());
    for (minute, ms) in [(0, 100), (1, 200), (2, 300), (3, 1_000)] {
        rows.add(at(10, 12, minute, 0), "web", Kind::Accepted);
        if let Some(row) = rows.0.last_mut() {
            row.duration_ns = ms * 1_000_000;
        }
    }
    insert(&db, &rows.0).await;
    let facts = facts::compute(&db.bound_client(), &query(), at(12, 0, 0, 0))
        .await
        .expect("facts compute");
    let overall = facts.latency.overall.expect("the day has attempts");
    assert_eq!(
        (overall.p50_ms, overall.p95_ms),
        (300.0, 1_000.0),
        "quantileExact over 100, 200, 300, 1000 ms (a t-digest's p50 is 200)"
    );
}
