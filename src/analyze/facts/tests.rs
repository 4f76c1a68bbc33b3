//! The facts' pure parts: the day's clock and the folds, on hand-made rows.

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

/// One minute's row: `fails` downstream errors at `fail_secs`, `delivered` deliveries at
/// `delivered_secs` (seconds into the minute).
fn minute_row(at: &str, fails: &[i64], delivered: &[i64]) -> MinuteRow {
    let minute = utc(at).timestamp();
    let ms = |secs: &[i64], pick: fn(&[i64]) -> Option<i64>| {
        pick(secs).map_or(0, |s| (minute + s) * 1000)
    };
    let first = |v: &[i64]| v.iter().copied().min();
    let last = |v: &[i64]| v.iter().copied().max();
    let all: Vec<i64> = fails.iter().chain(delivered).copied().collect();
    MinuteRow {
        minute,
        attempts: all.len() as u64,
        failures: fails.len() as u64,
        downstream_timeouts: 0,
        downstream_errors: fails.len() as u64,
        first_ms: ms(&all, first),
        last_ms: ms(&all, last),
        delivered: delivered.len() as u64,
        downstream_first_ms: ms(fails, first),
        downstream_last_ms: ms(fails, last),
        delivered_first_ms: ms(delivered, first),
        delivered_last_ms: ms(delivered, last),
    }
}

#[test]
fn a_sparse_outage_is_one_window_from_first_to_last_failure() {
    let c = clock((2025, 6, 10), Tz::UTC, utc("2025-06-12T00:00:00Z"));
    let mut minutes = vec![minute_row("2025-06-10T00:50:00Z", &[], &[5])];
    // One failed delivery every 7 minutes for two hours: a quiet night, the CRM down.
    for i in 0..18 {
        let at = utc("2025-06-10T01:00:00Z") + TimeDelta::minutes(7 * i);
        minutes.push(minute_row(&at.to_rfc3339(), &[10], &[]));
    }
    minutes.push(minute_row("2025-06-10T03:20:00Z", &[], &[30]));
    let windows = downstream_windows(&c, &minutes, (None, None));
    assert_eq!(windows.len(), 1, "{windows:#?}");
    let w = &windows[0];
    assert_eq!(w.start, "2025-06-10T01:00:10+00:00");
    assert_eq!(w.end, "2025-06-10T02:59:10+00:00");
    assert_eq!(
        (w.span_minutes, w.errors, w.minutes_with_failures),
        (119, 18, 18)
    );
    assert_eq!(
        w.last_delivery_before.as_deref(),
        Some("2025-06-10T00:50:05+00:00")
    );
    assert_eq!(
        w.next_delivery_after.as_deref(),
        Some("2025-06-10T03:20:30+00:00")
    );
    assert_eq!(w.uncertainty_minutes, Some(22));
    assert_eq!(w.downstream_failure_share, 1.0);
}

#[test]
fn a_delivery_between_failures_ends_the_run() {
    let c = clock((2025, 6, 10), Tz::UTC, utc("2025-06-12T00:00:00Z"));
    let minutes = [
        minute_row("2025-06-10T10:00:00Z", &[1, 20], &[]),
        minute_row("2025-06-10T10:01:00Z", &[5], &[40]),
        minute_row("2025-06-10T10:02:00Z", &[], &[]),
        minute_row("2025-06-10T10:05:00Z", &[3], &[]),
    ];
    let windows = downstream_windows(&c, &minutes, (None, None));
    assert_eq!(windows.len(), 2, "{windows:#?}");
    assert_eq!(windows[0].end, "2025-06-10T10:01:05+00:00");
    assert_eq!(windows[0].uncertainty_minutes, Some(1));
    assert_eq!(windows[1].start, "2025-06-10T10:05:03+00:00");
    assert_eq!(
        windows[1].next_delivery_after, None,
        "nothing was delivered after"
    );
}

#[test]
fn an_outage_across_local_midnight_is_each_days_part() {
    let tz = chrono_tz::America::New_York;
    let failing = |from: &str, count: i64| -> Vec<MinuteRow> {
        (0..count)
            .map(|i| {
                let at = utc(from) + TimeDelta::minutes(i);
                minute_row(&at.to_rfc3339(), &[15], &[])
            })
            .collect()
    };
    // Local 23:30 on June 10 to 00:40 on June 11 (EDT, UTC-4); back at 00:45.
    let first = clock((2025, 6, 10), tz, utc("2025-06-13T00:00:00Z"));
    let mut before = vec![minute_row("2025-06-11T03:20:00Z", &[], &[0])];
    before.extend(failing("2025-06-11T03:30:00Z", 30));
    let edge_after = EdgeRow {
        at_ms: utc("2025-06-11T04:00:15Z").timestamp_millis(),
        failed: 1,
    };
    let windows = downstream_windows(&first, &before, (None, Some(edge_after)));
    assert_eq!(windows.len(), 1, "{windows:#?}");
    assert_eq!(windows[0].start, "2025-06-10T23:30:15-04:00");
    assert_eq!(windows[0].end, "2025-06-11T00:00:00-04:00");
    assert!(windows[0].into_next_day && !windows[0].from_previous_day);
    assert_eq!(windows[0].span_minutes, 30);

    let second = clock((2025, 6, 11), tz, utc("2025-06-13T00:00:00Z"));
    let mut after = failing("2025-06-11T04:00:00Z", 41);
    after.push(minute_row("2025-06-11T04:45:00Z", &[], &[0]));
    let edge_before = EdgeRow {
        at_ms: utc("2025-06-11T03:59:15Z").timestamp_millis(),
        failed: 1,
    };
    let windows = downstream_windows(&second, &after, (Some(edge_before), None));
    assert_eq!(windows.len(), 1, "{windows:#?}");
    assert_eq!(windows[0].start, "2025-06-11T00:00:00-04:00");
    assert_eq!(windows[0].end, "2025-06-11T00:40:15-04:00");
    assert!(windows[0].from_previous_day && !windows[0].into_next_day);
    assert_eq!(windows[0].uncertainty_minutes, Some(5));
}
