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
