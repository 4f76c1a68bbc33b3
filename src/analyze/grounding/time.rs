//! Times the narration states must lie in what was analysed: a date is the analysed
//! day or a day of its baseline (the days before it the facts compare against); an
//! ISO timestamp with an offset is read in the report's time zone first; a clock time
//! is a real one (00:00–24:00) and, on a day not yet complete, not past the part of it
//! analysed; a weekday is the analysed day's.
//!
//! The baseline's days are allowed anywhere in the text: telling whether a sentence
//! speaks of the baseline or of the day is beyond a word-level check.

use chrono::{DateTime, Datelike, NaiveDate, Weekday};
use chrono_tz::Tz;
use serde_json::Value;

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const WEEKDAYS: [(&str, Weekday); 7] = [
    ("monday", Weekday::Mon),
    ("tuesday", Weekday::Tue),
    ("wednesday", Weekday::Wed),
    ("thursday", Weekday::Thu),
    ("friday", Weekday::Fri),
    ("saturday", Weekday::Sat),
    ("sunday", Weekday::Sun),
];

/// What the report may speak of: its day, the baseline before it, the hours analysed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Calendar {
    day: NaiveDate,
    zone: Tz,
    baseline_start: NaiveDate,
    /// Hours of the day analysed when it was not complete yet.
    elapsed_hours: Option<u32>,
}

impl Calendar {
    /// From the report's scope and the facts (`baseline.requested_days`,
    /// `completeness`); None when the scope's day or zone does not parse.
    pub(super) fn new(day: &str, time_zone: &str, facts: &Value) -> Option<Self> {
        let day: NaiveDate = day.parse().ok()?;
        let zone: Tz = time_zone.parse().ok()?;
        let baseline_days = facts["baseline"]["requested_days"].as_u64().unwrap_or(7);
        let completeness = &facts["completeness"];
        let elapsed = completeness["elapsed_hours"].as_u64();
        let whole = completeness["day_hours"].as_u64();
        let elapsed_hours = match (elapsed, whole) {
            (Some(elapsed), Some(whole)) if elapsed < whole => u32::try_from(elapsed).ok(),
            _ => None,
        };
        Some(Self {
            day,
            zone,
            baseline_start: day - chrono::Duration::days(i64::try_from(baseline_days).ok()?),
            elapsed_hours,
        })
    }

    fn covers(&self, date: NaiveDate) -> bool {
        self.baseline_start <= date && date <= self.day
    }

    /// The times of `words` (already trimmed of punctuation) that lie outside.
    pub(super) fn outside<'a>(&self, words: &[&'a str]) -> Vec<&'a str> {
        let mut outside = Vec::new();
        for (i, word) in words.iter().enumerate() {
            let next = words.get(i + 1).copied();
            let bad = self
                .numeric_date(word)
                .map(|date| !self.covers(date))
                .or_else(|| self.month_date(word, next, words.get(i + 2).copied()))
                .or_else(|| self.weekday(word))
                .or_else(|| self.clock(word));
            if bad == Some(true) {
                outside.push(*word);
            }
        }
        outside
    }

    /// `2026-11-30`, `2026-11-30T14:05:00Z` (read in the zone), `30.11.2026`,
    /// `11/30/2026`.
    fn numeric_date(&self, word: &str) -> Option<NaiveDate> {
        if let Ok(at) = DateTime::parse_from_rfc3339(word) {
            return Some(at.with_timezone(&self.zone).date_naive());
        }
        let head = word.get(..10)?;
        NaiveDate::parse_from_str(head, "%Y-%m-%d")
            .or_else(|_| NaiveDate::parse_from_str(word, "%d.%m.%Y"))
            .or_else(|_| NaiveDate::parse_from_str(word, "%m/%d/%Y"))
            .ok()
    }

    /// `November 30`, `Nov 30th, 2026`, `30 November`: Some(outside?) when `word`
    /// is a capitalised month name with a day of month next to it.
    fn month_date(&self, word: &str, next: Option<&str>, after: Option<&str>) -> Option<bool> {
        let month = month_of(word)?;
        let day_of_month = next.and_then(day_of_month)?;
        let year = after
            .and_then(|y| y.parse::<i32>().ok())
            .filter(|y| (1900..=2999).contains(y))
            .unwrap_or(self.day.year());
        Some(
            NaiveDate::from_ymd_opt(year, month, day_of_month)
                .is_none_or(|date| !self.covers(date)),
        )
    }

    fn weekday(&self, word: &str) -> Option<bool> {
        if !word.starts_with(char::is_uppercase) {
            return None;
        }
        let lower = word.to_lowercase();
        let name = lower.strip_suffix('s').unwrap_or(&lower);
        let (_, weekday) = WEEKDAYS.iter().find(|(n, _)| *n == name)?;
        Some(*weekday != self.day.weekday())
    }

    /// `14:05`, `9:30`, `23:59:59`: outside when not a clock time, or past the part of
    /// an incomplete day that was analysed.
    fn clock(&self, word: &str) -> Option<bool> {
        let parts: Vec<&str> = word.split(':').collect();
        if !(2..=3).contains(&parts.len())
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
            || parts[1..].iter().any(|p| p.len() != 2)
            || parts[0].len() > 2
        {
            return None;
        }
        let numbers: Vec<u32> = parts.iter().filter_map(|p| p.parse().ok()).collect();
        let minutes = numbers[0] * 60 + numbers[1];
        let seconds = numbers.get(2).copied().unwrap_or(0);
        let real = numbers[1] < 60
            && seconds < 60
            && (minutes < 24 * 60 || minutes == 24 * 60 && seconds == 0);
        let analysed = self.elapsed_hours.is_none_or(|hours| minutes <= hours * 60);
        Some(!real || !analysed)
    }
}

/// The month a capitalised name or three-letter abbreviation stands for, 1-based.
fn month_of(word: &str) -> Option<u32> {
    if !word.starts_with(char::is_uppercase) {
        return None;
    }
    let lower = word.trim_end_matches('.').to_lowercase();
    let n = MONTHS
        .iter()
        .position(|m| *m == lower || lower.len() == 3 && m.starts_with(&lower))?;
    u32::try_from(n + 1).ok()
}

/// `30`, `30th`, `1st`: a day of month.
fn day_of_month(word: &str) -> Option<u32> {
    let digits: String = word.chars().take_while(char::is_ascii_digit).collect();
    let rest = &word[digits.len()..];
    if digits.is_empty() || !matches!(rest, "" | "st" | "nd" | "rd" | "th") {
        return None;
    }
    digits.parse().ok().filter(|d| (1..=31).contains(d))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Monday 30 November 2026, UTC, a seven-day baseline.
    fn calendar(elapsed_hours: u64) -> Calendar {
        let facts = json!({
            "baseline": {"requested_days": 7},
            "completeness": {"day_hours": 24, "elapsed_hours": elapsed_hours},
        });
        Calendar::new("2026-11-30", "Europe/Berlin", &facts).unwrap()
    }

    fn outside(text: &str) -> Vec<String> {
        let words: Vec<&str> = text
            .split_whitespace()
            .map(|w| w.trim_end_matches([',', '.', ';', ')']))
            .collect();
        calendar(24)
            .outside(&words)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn dates_of_the_day_and_its_baseline_pass_others_do_not() {
        assert!(outside("On 2026-11-30 and since 2026-11-23 nothing changed").is_empty());
        assert_eq!(
            outside("unlike on 2026-11-22, or 2026-12-01"),
            ["2026-11-22", "2026-12-01"]
        );
        assert_eq!(
            outside("on 30.11.2026 and 11/29/2026, not 12/01/2026"),
            ["12/01/2026"]
        );
    }

    #[test]
    fn month_names_with_a_day_are_dates() {
        assert!(outside("On November 30th, as on Nov 24 2026").is_empty());
        assert_eq!(outside("since November 2 the form"), ["November"]);
        assert_eq!(outside("on December 1, 2025"), ["December"]);
        assert!(
            outside("traffic may 3 times exceed").is_empty(),
            "not a month"
        );
    }

    #[test]
    fn timestamps_are_read_in_the_reports_zone() {
        // 23:30 UTC on the 30th is already 1 December in Berlin.
        assert_eq!(
            outside("until 2026-11-30T23:30:00Z"),
            ["2026-11-30T23:30:00Z"]
        );
        assert!(
            outside("from 2026-11-29T23:30:00Z").is_empty(),
            "the 30th in Berlin"
        );
    }

    #[test]
    fn weekdays_must_be_the_days() {
        assert!(outside("Monday's traffic, as on Mondays").is_empty());
        assert_eq!(outside("On Tuesday the CRM failed"), ["Tuesday"]);
    }

    #[test]
    fn clock_times_must_be_real_and_analysed() {
        assert!(outside("from 09:30 to 14:05:10 and until 24:00").is_empty());
        assert_eq!(outside("at 25:10 and 14:61"), ["25:10", "14:61"]);
        let words = ["10:15", "13:30"];
        assert_eq!(
            calendar(12).outside(&words),
            ["13:30"],
            "only 12 hours analysed"
        );
        assert!(
            outside("a ratio of 3:1 held").is_empty(),
            "not a clock time"
        );
    }
}
