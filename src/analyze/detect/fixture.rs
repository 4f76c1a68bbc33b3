//! A hand-built normal day (four sources, 5% failures, a week of similar baseline) and
//! helpers that plant one anomaly each, for the detectors' unit tests.

use chrono::NaiveDate;

use crate::analyze::facts::{
    Baseline, BaselineLatency, BaselineVolume, Breakdown, Cell, CellValues, ClientShape,
    Completeness, DayFacts, DayStatus, Delivery, DownstreamWindow, Latency, PageField, Quantiles,
    Shape, Silence, SourceActivity, SourceQuantiles, SourceReason, Submitters, Totals, rate,
};
use crate::domain::{Outcome, Reason};

const START: &str = "2025-06-10T00:00:00+02:00";
/// The day's sources: (name, attempts, failures).
const SOURCES: [(&str, u64, u64); 4] = [
    ("web", 400, 20),
    ("quiz", 200, 10),
    ("partner", 120, 6),
    ("ads", 80, 4),
];
const END: &str = "2025-06-11T00:00:00+02:00";

fn entry(name: &str, attempts: u64, failures: u64) -> Breakdown {
    Breakdown {
        name: name.to_owned(),
        attempts,
        accepted: attempts - failures,
        rejected: failures,
        failed: 0,
        failure_share: 0.0,
        share_of_day_failures: 0.0,
        top_reasons: Vec::new(),
    }
}

fn base(name: &str, mean: f64) -> BaselineVolume {
    BaselineVolume {
        name: name.to_owned(),
        days_with_traffic: 7,
        mean_attempts_per_day: mean,
        failure_share: 0.05,
        mean_duplicates_per_day: (mean * 0.01).round(),
    }
}

fn reason(source: &str, reason: Reason, count: u64) -> SourceReason {
    SourceReason {
        source: source.to_owned(),
        reason: reason.as_str().to_owned(),
        count,
        share_of_source_attempts: 0.0,
        first_event: "2025-06-10T08:00:00+02:00".into(),
        last_event: "2025-06-10T20:00:00+02:00".into(),
    }
}

fn field(page: &str, field: &str, count: u64) -> PageField {
    PageField {
        page: page.to_owned(),
        field: field.to_owned(),
        count,
        share_of_page_attempts: 0.0,
        share_of_page_failures: 0.0,
        first_event: "2025-06-10T08:00:00+02:00".into(),
        last_event: "2025-06-10T20:00:00+02:00".into(),
    }
}

fn quantiles(attempts: u64, p95_ms: f64) -> Quantiles {
    Quantiles {
        attempts,
        p50_ms: p95_ms / 3.0,
        p95_ms,
        p99_ms: p95_ms * 1.5,
    }
}

fn client(id: &str, attempts: u64) -> ClientShape {
    ClientShape {
        client_id: id.to_owned(),
        attempts,
        max_attempts_per_minute: 4,
        busiest_minute: "2025-06-10T12:01:00+02:00".into(),
        burst_minutes: 0,
        rate_limited: 0,
        rate_limited_from: None,
        rate_limited_until: None,
    }
}

fn activity(source: &str, attempts: u64) -> SourceActivity {
    SourceActivity {
        source: source.to_owned(),
        attempts,
        active_hours: 22,
        traffic_on_every_baseline_day: true,
        longest_silence: Some(Silence {
            start: "2025-06-10T03:00:00+02:00".into(),
            end: "2025-06-10T05:00:00+02:00".into(),
            hours: 2,
            expected_attempts: 1.5,
        }),
    }
}

/// 800 attempts, 40 failures (typos, a few duplicates, three downstream errors), a week
/// of baseline within ±10% of the day.
pub fn normal_day() -> DayFacts {
    let mut facts = DayFacts {
        day: NaiveDate::from_ymd_opt(2025, 6, 10).unwrap_or_default(),
        time_zone: "Europe/Berlin".into(),
        service: None,
        completeness: Completeness {
            status: DayStatus::Complete,
            day_start: START.into(),
            day_end: END.into(),
            day_hours: 24,
            elapsed_hours: 24,
            hours_without_data: Vec::new(),
            first_event: Some("2025-06-10T00:02:11+02:00".into()),
            last_event: Some("2025-06-10T23:58:40+02:00".into()),
        },
        totals: Totals {
            attempts: 0,
            accepted: 0,
            rejected: 0,
            failed: 0,
            success_rate: 0.0,
            failure_rate: 0.0,
        },
        by_outcome: Vec::new(),
        by_reason: Vec::new(),
        by_source: SOURCES.iter().map(|&(n, a, f)| entry(n, a, f)).collect(),
        by_endpoint: vec![
            entry("leads", 600, 30),
            entry("forms", 120, 6),
            entry("batch", 80, 4),
        ],
        by_page: vec![
            entry("/pricing", 300, 15),
            entry("/quiz/start", 200, 10),
            entry("/contact", 300, 15),
        ],
        by_form: vec![entry("", 680, 34), entry("contact-main", 120, 6)],
        // Each source posts with a key of its own, named after it.
        by_client: SOURCES
            .iter()
            .map(|&(n, a, f)| entry(&format!("{n}-key"), a, f))
            .collect(),
        source_reasons: vec![
            reason("web", Reason::InvalidField, 14),
            reason("web", Reason::Duplicate, 3),
            reason("web", Reason::DownstreamError, 3),
            reason("quiz", Reason::InvalidField, 8),
            reason("quiz", Reason::Duplicate, 2),
            reason("partner", Reason::InvalidField, 5),
            reason("partner", Reason::Duplicate, 1),
            reason("ads", Reason::InvalidField, 4),
        ],
        invalid_fields_by_page: vec![
            field("/pricing", "email", 12),
            field("/contact", "phone", 10),
            field("/quiz/start", "email", 9),
        ],
        latency: Latency {
            overall: Some(quantiles(800, 300.0)),
            by_source: ["web", "quiz", "partner", "ads"]
                .into_iter()
                .map(|s| SourceQuantiles {
                    source: s.into(),
                    quantiles: quantiles(100, 310.0),
                })
                .collect(),
        },
        shape: Shape {
            hourly: Vec::new(),
            max_attempts_per_minute: 6,
            busiest_minute: Some("2025-06-10T12:01:00+02:00".into()),
            burst_threshold_per_minute: 20,
            burst_minutes: 0,
            clients: vec![
                client("web-key", 400),
                client("quiz-key", 200),
                client("partner-key", 120),
                client("ads-key", 80),
            ],
        },
        source_activity: vec![
            activity("web", 400),
            activity("quiz", 200),
            activity("partner", 120),
            activity("ads", 80),
        ],
        submitters: Submitters {
            distinct_submitters: 760,
            repeat_submitters: 30,
            retries_after_failure: 12,
            duplicate_attempts: 6,
            submitters_with_duplicates: 6,
            high_activity_threshold: 10,
            high_activity_submitters: 0,
            high_activity: Vec::new(),
        },
        delivery: Delivery {
            attempts_distribution: Vec::new(),
            downstream_windows: vec![DownstreamWindow {
                start: "2025-06-10T14:03:00+02:00".into(),
                end: "2025-06-10T14:04:00+02:00".into(),
                span_minutes: 1,
                minutes_with_failures: 1,
                timeouts: 0,
                errors: 1,
                attempts: 2,
                downstream_failure_share: 0.5,
                last_delivery_before: Some("2025-06-10T14:02:10+02:00".into()),
                next_delivery_after: Some("2025-06-10T14:05:40+02:00".into()),
                uncertainty_minutes: Some(2),
                from_previous_day: false,
                into_next_day: false,
            }],
        },
        baseline: Baseline {
            requested_days: 7,
            days_with_data: 7,
            first_day: NaiveDate::from_ymd_opt(2025, 6, 3).unwrap_or_default(),
            last_day: NaiveDate::from_ymd_opt(2025, 6, 9).unwrap_or_default(),
            by_source: vec![
                base("ads", 85.0),
                base("partner", 115.0),
                base("quiz", 210.0),
                base("web", 380.0),
            ],
            by_endpoint: vec![
                base("batch", 75.0),
                base("forms", 125.0),
                base("leads", 590.0),
            ],
            mean_duplicates_per_day: 5.0,
            latency_p95_ms: Some(280.0),
            latency_p95_ms_by_source: ["ads", "partner", "quiz", "web"]
                .into_iter()
                .map(|s| BaselineLatency {
                    source: s.into(),
                    p95_ms: 290.0,
                })
                .collect(),
            sources_on_every_day: vec!["ads".into(), "partner".into(), "quiz".into(), "web".into()],
            pages_seen: vec!["/contact".into(), "/pricing".into(), "/quiz/start".into()],
            forms_seen: vec!["contact-main".into()],
        },
        recording: Default::default(),
        cells: Default::default(),
    };
    refresh(&mut facts);
    facts
}

/// Recomputes totals (from the sources) and every derived share after a change.
fn refresh(facts: &mut DayFacts) {
    let attempts = facts.by_source.iter().map(|b| b.attempts).sum();
    let rejected = facts.by_source.iter().map(|b| b.rejected).sum();
    facts.totals = Totals {
        attempts,
        accepted: attempts - rejected,
        rejected,
        failed: 0,
        success_rate: rate(attempts - rejected, attempts),
        failure_rate: rate(rejected, attempts),
    };
    for list in [
        &mut facts.by_source,
        &mut facts.by_endpoint,
        &mut facts.by_page,
        &mut facts.by_form,
        &mut facts.by_client,
    ] {
        for b in list.iter_mut() {
            b.failure_share = rate(b.failures(), b.attempts);
            b.share_of_day_failures = rate(b.failures(), rejected);
        }
    }
    for r in facts.source_reasons.iter_mut() {
        let source = facts.by_source.iter().find(|b| b.name == r.source);
        r.share_of_source_attempts = rate(r.count, source.map_or(0, |b| b.attempts));
    }
    for f in facts.invalid_fields_by_page.iter_mut() {
        let page = facts.by_page.iter().find(|b| b.name == f.page);
        f.share_of_page_attempts = rate(f.count, page.map_or(0, |b| b.attempts));
        f.share_of_page_failures = rate(f.count, page.map_or(0, Breakdown::failures));
    }
}

fn source_mut<'a>(facts: &'a mut DayFacts, source: &str) -> &'a mut Breakdown {
    if !facts.by_source.iter().any(|b| b.name == source) {
        facts.by_source.push(entry(source, 0, 0));
    }
    let index = facts
        .by_source
        .iter()
        .position(|b| b.name == source)
        .unwrap_or_default();
    &mut facts.by_source[index]
}

pub fn set_source_attempts(facts: &mut DayFacts, source: &str, attempts: u64, failures: u64) {
    *source_mut(facts, source) = entry(source, attempts, failures);
    if let Some(a) = facts
        .source_activity
        .iter_mut()
        .find(|a| a.source == source)
    {
        a.attempts = attempts;
    }
    refresh(facts);
}

/// Adds `count` rejected attempts with `reason` to a source.
fn plant_rejections(facts: &mut DayFacts, source: &str, why: Reason, count: u64) {
    let b = source_mut(facts, source);
    b.attempts += count;
    b.rejected += count;
    facts.source_reasons.push(reason(source, why, count));
    refresh(facts);
}

pub fn plant_unauthorized(facts: &mut DayFacts, source: &str, count: u64) {
    plant_rejections(facts, source, Reason::Unauthorized, count);
}

pub fn plant_key_mismatch(facts: &mut DayFacts, source: &str, count: u64) {
    plant_rejections(facts, source, Reason::SourceKeyMismatch, count);
}

pub fn plant_duplicates(facts: &mut DayFacts, source: &str, count: u64) {
    facts.submitters.duplicate_attempts += count;
    plant_rejections(facts, source, Reason::Duplicate, count);
}

/// `count` attempts of a page, which were accepted before, now rejected on one field.
pub fn plant_broken_field(facts: &mut DayFacts, page: &str, name: &str, count: u64) {
    if let Some(p) = facts.by_page.iter_mut().find(|b| b.name == page) {
        p.accepted -= count;
        p.rejected += count;
    }
    facts.invalid_fields_by_page.push(field(page, name, count));
    refresh(facts);
}

pub fn plant_new_page(facts: &mut DayFacts, page: &str, attempts: u64, failures: u64) {
    facts.by_page.push(entry(page, attempts, failures));
    refresh(facts);
}

pub fn plant_burst(facts: &mut DayFacts, client_id: &str, per_minute: u64, rate_limited: u64) {
    facts.shape.clients.push(ClientShape {
        max_attempts_per_minute: per_minute,
        burst_minutes: 2,
        rate_limited,
        rate_limited_from: Some("2025-06-10T13:00:00+02:00".into()),
        rate_limited_until: Some("2025-06-10T13:02:00+02:00".into()),
        ..client(client_id, per_minute * 2)
    });
}

pub fn plant_outage(facts: &mut DayFacts, span_minutes: u64, failures: u64, share: f64) {
    facts.delivery.downstream_windows.push(DownstreamWindow {
        start: "2025-06-10T10:00:00+02:00".into(),
        end: "2025-06-10T10:40:00+02:00".into(),
        span_minutes,
        minutes_with_failures: span_minutes,
        timeouts: failures / 2,
        errors: failures - failures / 2,
        attempts: (failures as f64 / share).round() as u64,
        downstream_failure_share: share,
        last_delivery_before: Some("2025-06-10T09:58:00+02:00".into()),
        next_delivery_after: Some("2025-06-10T10:43:00+02:00".into()),
        uncertainty_minutes: Some(3),
        from_previous_day: false,
        into_next_day: false,
    });
}

pub fn plant_silence(facts: &mut DayFacts, source: &str, hours: u32, expected: f64) {
    if let Some(a) = facts
        .source_activity
        .iter_mut()
        .find(|a| a.source == source)
    {
        a.longest_silence = Some(Silence {
            start: "2025-06-10T09:00:00+02:00".into(),
            end: "2025-06-10T15:00:00+02:00".into(),
            hours,
            expected_attempts: expected,
        });
    }
}

fn cell_values(source: &str, endpoint: &str, page: &str, form: &str) -> CellValues {
    CellValues {
        source: source.to_owned(),
        endpoint: endpoint.to_owned(),
        page: page.to_owned(),
        form_id: form.to_owned(),
        outcome: Outcome::Accepted.as_str().to_owned(),
        ..CellValues::default()
    }
}

fn rejected(mut values: CellValues, reason: Reason) -> CellValues {
    values.outcome = Outcome::Rejected.as_str().to_owned();
    values.reason = reason.as_str().to_owned();
    if reason == Reason::InvalidField {
        values.field = "email".to_owned();
    }
    values
}

/// Adds `attempts` of which `failures` rejected with `reason`, at one hour of the day
/// (and to the day's failure cells, on client `web-key`).
fn add_day(
    facts: &mut DayFacts,
    hour: u32,
    v: &CellValues,
    reason: Reason,
    attempts: u64,
    failures: u64,
) {
    let cells = &mut facts.cells;
    let fail = rejected(v.clone(), reason);
    for (values, n) in [(v.clone(), attempts - failures), (fail.clone(), failures)] {
        cells.day.push(Cell {
            hour,
            local_hour: hour,
            values,
            attempts: n,
            span: None,
        });
    }
    cells.failures.push(Cell {
        values: CellValues {
            client_id: "web-key".to_owned(),
            ..fail
        },
        attempts: failures,
        ..Cell::default()
    });
}

/// The baseline's cells (no field): `attempts` at a local hour, 5 % invalid_field.
fn add_baseline(facts: &mut DayFacts, hour: u32, v: &CellValues, attempts: u64) {
    let failures = (attempts as f64 * 0.05).round() as u64;
    let mut fail = rejected(v.clone(), Reason::InvalidField);
    fail.field.clear();
    for (values, n) in [(v.clone(), attempts - failures), (fail, failures)] {
        facts.cells.baseline.push(Cell {
            hour,
            local_hour: hour,
            values,
            attempts: n,
            span: None,
        });
    }
}

/// A normal day with every source and endpoint at `share` of its attempts: a Sunday,
/// a holiday.
pub fn a_day_at(share: f64) -> DayFacts {
    let mut facts = normal_day();
    for b in facts
        .by_source
        .iter_mut()
        .chain(facts.by_endpoint.iter_mut())
    {
        b.attempts = (b.attempts as f64 * share).round() as u64;
    }
    facts
}

/// `count` duplicates of a source in one hour of the day, none in the baseline.
pub fn plant_duplicate_hour(facts: &mut DayFacts, source: &str, hour: u32, count: u64) {
    let v = cell_values(source, "leads", "/", "");
    facts.cells.day.push(Cell {
        hour,
        local_hour: hour,
        values: rejected(v, Reason::Duplicate),
        attempts: count,
        span: None,
    });
}

/// Cells of a source's hours: `per_hour` attempts, `share(hour)` of them rejected on an
/// invalid email; the baseline 7 days of 5 %.
pub fn plant_hourly(facts: &mut DayFacts, source: &str, per_hour: u64, share: impl Fn(u32) -> f64) {
    let v = cell_values(source, "leads", "/quiz/start", "");
    for hour in 0..24 {
        let failures = (per_hour as f64 * share(hour)).round() as u64;
        add_day(facts, hour, &v, Reason::InvalidField, per_hour, failures);
        add_baseline(facts, hour, &v, 7 * per_hour);
    }
}

/// Cells of the day in one hour: form `form` (120 attempts, `share` of them rejected with
/// `reason`) and 680 other attempts at 5 % invalid email; the baseline 7 such days at 5 %.
pub fn plant_cells(facts: &mut DayFacts, form: &str, reason: Reason, share: f64) {
    let on_form = cell_values("web", "forms", "/contact", form);
    let other = cell_values("web", "leads", "/pricing", "");
    add_day(
        facts,
        0,
        &on_form,
        reason,
        120,
        (120.0 * share).round() as u64,
    );
    add_day(facts, 0, &other, Reason::InvalidField, 680, 34);
    add_baseline(facts, 0, &on_form, 840);
    add_baseline(facts, 0, &other, 4760);
}

/// Cells of every hour: form `form` (30 attempts an hour) and 30 other attempts an hour,
/// each at 5 % invalid email like its 7-day baseline, except that in `failing` hours
/// 20 of the form's 30 are rejected with `reason`.
pub fn plant_form_hours(
    facts: &mut DayFacts,
    form: &str,
    reason: Reason,
    failing: std::ops::Range<u32>,
) {
    let on_form = cell_values("web", "forms", "/contact", form);
    let other = cell_values("web", "leads", "/pricing", "");
    for hour in 0..24 {
        if failing.contains(&hour) {
            add_day(facts, hour, &on_form, reason, 30, 20);
        } else {
            add_day(facts, hour, &on_form, Reason::InvalidField, 30, 2);
        }
        add_day(facts, hour, &other, Reason::InvalidField, 30, 2);
        add_baseline(facts, hour, &on_form, 210);
        add_baseline(facts, hour, &other, 210);
    }
}

/// The failure cells of `count` rejections of a source with `reason` (for the merge).
pub fn plant_reason_cells(facts: &mut DayFacts, source: &str, reason: Reason, count: u64) {
    let values = CellValues {
        source: source.to_owned(),
        ..CellValues::default()
    };
    facts.cells.failures.push(Cell {
        values: rejected(values, reason),
        attempts: count,
        ..Cell::default()
    });
}
