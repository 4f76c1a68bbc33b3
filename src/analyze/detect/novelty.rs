//! What the baseline never saw: new pages and forms, and duplicates far above it.

use super::gradual::hour_start;
use super::stats::interval;
use super::{Dimension, Draft, baseline_failure_share, capped, confidence, num, subject_of};
use crate::analyze::facts::{Breakdown, Cell, DayFacts, round_to};
use crate::analyze::finding::{Finding, FindingKind, Severity, Subject};
use crate::config::DetectorSettings;
use crate::domain::Reason;

/// Duplicates a surge needs at least, whatever the baseline: a handful is normal noise.
pub const MIN_SURGE_DUPLICATES: u64 = 5;
/// Standard deviations (Poisson) a surge must lie above the expected duplicates.
const SURGE_DEVIATIONS: f64 = 3.0;

/// NewPage for pages: `min_attempts` attempts today, never seen in the baseline.
pub(super) fn new_pages(facts: &DayFacts, t: &DetectorSettings) -> Vec<Finding> {
    new_entries(
        facts,
        t,
        Dimension::Page,
        &facts.by_page,
        &facts.baseline.pages_seen,
    )
}

/// NewPage for forms (`form_id`), by the same rule.
pub(super) fn new_forms(facts: &DayFacts, t: &DetectorSettings) -> Vec<Finding> {
    new_entries(
        facts,
        t,
        Dimension::Form,
        &facts.by_form,
        &facts.baseline.forms_seen,
    )
}

fn new_entries(
    facts: &DayFacts,
    t: &DetectorSettings,
    dimension: Dimension,
    today: &[Breakdown],
    seen: &[String],
) -> Vec<Finding> {
    if facts.baseline.days_with_data == 0 {
        return Vec::new();
    }
    let elevated = baseline_failure_share(facts) + t.failure_rate_rise;
    today
        .iter()
        .filter(|b| !b.name.is_empty() && b.attempts >= t.min_attempts && !seen.contains(&b.name))
        .map(|b| new_entry(facts, t, dimension, b, elevated))
        .collect()
}

/// Severity follows the failure share: a new page is news, a new page that fails is a
/// problem.
fn new_entry(
    facts: &DayFacts,
    t: &DetectorSettings,
    dimension: Dimension,
    b: &Breakdown,
    elevated: f64,
) -> Finding {
    let severity = if b.failure_share >= 0.5 {
        Severity::High
    } else if b.failure_share >= elevated {
        Severity::Medium
    } else {
        Severity::Low
    };
    Draft {
        kind: FindingKind::NewPage,
        subject: subject_of(dimension, &b.name),
        severity: capped(severity, facts),
        confidence: confidence(
            b.attempts as f64,
            2.0 * t.min_attempts as f64,
            Some(facts.baseline.days_with_data),
        ),
        summary: format!(
            "{} {} had {} attempts and none in the {} baseline days; its failure share was {}.",
            dimension.as_str(),
            b.name,
            b.attempts,
            facts.baseline.days_with_data,
            num(b.failure_share)
        ),
        evidence: vec![
            ("attempts", b.attempts as f64),
            ("failures", b.failures() as f64),
            ("failure_share", b.failure_share),
            (
                "baseline_days_with_data",
                f64::from(facts.baseline.days_with_data),
            ),
        ],
        window: None,
        interval: Some(interval(
            b.failures(),
            b.attempts,
            Some(round_to(elevated - t.failure_rate_rise, 4)),
        )),
    }
    .build()
}

/// DuplicateSurge: duplicates of a source at least `duplicate_surge_ratio` times its
/// baseline daily mean (scaled to the elapsed day and the day's level — a Sunday's
/// traffic makes a Sunday's duplicates —, at least 1), beyond Poisson noise and
/// `MIN_SURGE_DUPLICATES`. Checked per source first — one source's surge drowns in the
/// day's total when other sources carry their usual duplicates — then over all sources.
pub(super) fn duplicate_surge(facts: &DayFacts, t: &DetectorSettings) -> Vec<Finding> {
    if facts.baseline.days_with_data == 0 {
        return Vec::new();
    }
    let share_of_a_day = facts.elapsed_fraction() * super::volume::day_level(facts, t).ratio;
    let per_source: Vec<Finding> = facts
        .source_reasons
        .iter()
        .filter(|r| r.reason == Reason::Duplicate.as_str() && !r.source.is_empty())
        .filter_map(|r| {
            let mean = facts
                .baseline
                .source(&r.source)
                .map_or(0.0, |b| b.mean_duplicates_per_day);
            let window = surge_window(facts, &r.source)
                .unwrap_or_else(|| (r.first_event.clone(), r.last_event.clone()));
            surge(
                facts,
                t,
                r.count,
                mean * share_of_a_day,
                Some(&r.source),
                Some(window),
            )
        })
        .collect();
    if !per_source.is_empty() {
        return per_source;
    }
    let expected = facts.baseline.mean_duplicates_per_day * share_of_a_day;
    surge(
        facts,
        t,
        facts.submitters.duplicate_attempts,
        expected,
        None,
        None,
    )
    .into_iter()
    .collect()
}

/// The hours in which `source`'s duplicates stand out: the run of consecutive hours
/// around the busiest one whose duplicates exceed twice what the baseline has at that
/// clock hour (per baseline day, at least one), bridging single ordinary hours, from the
/// first duplicate of its first hour to the last of its last. A source's usual
/// duplicates come all day long, so its first and last duplicate of the day would frame
/// the whole day, not the surge.
fn surge_window(facts: &DayFacts, source: &str) -> Option<(String, String)> {
    let is_duplicate_of_source =
        |c: &Cell| c.values.source == source && c.values.reason == Reason::Duplicate.as_str();
    let hours = facts.completeness.elapsed_hours as usize;
    let mut today = vec![0u64; hours];
    let mut local_hour: Vec<usize> = (0..hours).map(|i| i % 24).collect();
    for c in facts.cells.day.iter() {
        if let Some(slot) = local_hour.get_mut(c.hour as usize) {
            *slot = c.local_hour as usize % 24;
        }
        if is_duplicate_of_source(c)
            && let Some(count) = today.get_mut(c.hour as usize)
        {
            *count += c.attempts;
        }
    }
    let mut baseline = [0u64; 24];
    for c in facts
        .cells
        .baseline
        .iter()
        .filter(|c| is_duplicate_of_source(c))
    {
        baseline[c.local_hour as usize % 24] += c.attempts;
    }
    let days = f64::from(facts.baseline.days_with_data.max(1));
    let elevated =
        |i: usize| today[i] as f64 > 2.0 * (baseline[local_hour[i]] as f64 / days).max(1.0);
    // One ordinary hour between two elevated ones does not end the surge: a surge of a
    // few duplicates an hour, drawn at random, has such hours.
    let in_surge =
        |i: usize| elevated(i) || (i > 0 && i + 1 < hours && elevated(i - 1) && elevated(i + 1));
    let peak = (0..hours)
        .filter(|&i| elevated(i))
        .max_by_key(|&i| today[i])?;
    let first = (0..=peak).rev().take_while(|&i| in_surge(i)).last()?;
    let last = (peak..hours).take_while(|&i| in_surge(i)).last()?;
    let spans_in = |hour: usize| {
        facts
            .cells
            .day
            .iter()
            .filter(move |c| c.hour as usize == hour && is_duplicate_of_source(c))
            .filter_map(|c| c.span.as_ref())
    };
    // Compared as instants: the offset shown changes within a day that changes clocks.
    let instant = |shown: &&String| chrono::DateTime::parse_from_rfc3339(shown).ok();
    let start = spans_in(first)
        .map(|(start, _)| start)
        .min_by_key(instant)
        .cloned();
    let end = spans_in(last)
        .map(|(_, end)| end)
        .max_by_key(instant)
        .cloned();
    Some((
        start.unwrap_or_else(|| hour_start(facts, first as u32)),
        end.unwrap_or_else(|| hour_start(facts, last as u32 + 1)),
    ))
}

fn surge(
    facts: &DayFacts,
    t: &DetectorSettings,
    duplicates: u64,
    expected: f64,
    source: Option<&str>,
    window: Option<(String, String)>,
) -> Option<Finding> {
    let expected = round_to(expected, 2);
    let floor = expected.max(1.0);
    let d = duplicates as f64;
    if duplicates < MIN_SURGE_DUPLICATES
        || d < t.duplicate_surge_ratio * floor
        || d < expected + SURGE_DEVIATIONS * floor.sqrt()
    {
        return None;
    }
    let strong = d >= 2.0 * t.duplicate_surge_ratio * floor && duplicates >= t.min_attempts;
    let severity = if strong {
        Severity::High
    } else {
        Severity::Medium
    };
    let scope = source.map_or(String::new(), |s| format!(" on source {s}"));
    Some(
        Draft {
            kind: FindingKind::DuplicateSurge,
            subject: source.map_or_else(Subject::default, |s| subject_of(Dimension::Source, s)),
            severity: capped(severity, facts),
            confidence: confidence(d, 2.0 * t.min_attempts as f64, Some(facts.baseline.days_with_data)),
            summary: format!(
                "{duplicates} attempts{scope} were rejected as duplicate against {} expected from the baseline (ratio {}).",
                num(expected),
                num(super::ratio(d, floor))
            ),
            evidence: vec![
                ("duplicates", d),
                ("expected_duplicates", expected),
                ("ratio", super::ratio(d, floor)),
            ],
            window,
            interval: None,
        }
        .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{
        a_day_at, normal_day, plant_duplicate_hour, plant_duplicates, plant_new_page,
    };
    use super::*;

    #[test]
    fn a_new_page_that_mostly_fails_is_high() {
        let mut facts = normal_day();
        plant_new_page(&mut facts, "/landing/spring", 60, 45);
        let found = new_pages(&facts, &DetectorSettings::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].subject.page.as_deref(), Some("/landing/spring"));
        assert_eq!(found[0].severity, Severity::High);
        assert!(new_pages(&normal_day(), &DetectorSettings::default()).is_empty());
    }

    #[test]
    fn a_healthy_new_page_is_low_and_a_tiny_one_is_ignored() {
        let mut facts = normal_day();
        plant_new_page(&mut facts, "/landing/ok", 60, 2);
        plant_new_page(&mut facts, "/landing/tiny", 5, 5);
        let found = new_pages(&facts, &DetectorSettings::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].severity, Severity::Low);
    }

    #[test]
    fn a_surge_of_duplicates_names_its_source() {
        let mut facts = normal_day();
        plant_duplicates(&mut facts, "web", 60);
        let found = duplicate_surge(&facts, &DetectorSettings::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].subject.source.as_deref(), Some("web"));
        assert_eq!(found[0].severity, Severity::High);
        assert!(duplicate_surge(&normal_day(), &DetectorSettings::default()).is_empty());
    }

    /// On a day at half its usual traffic a source's usual duplicates halve too: seven
    /// duplicates of web (4 a day in its baseline) are a surge then, not on a full day.
    #[test]
    fn duplicates_are_expected_at_the_days_level() {
        let surges_at = |share: f64| {
            let mut facts = a_day_at(share);
            plant_duplicates(&mut facts, "web", 7);
            duplicate_surge(&facts, &DetectorSettings::default())
        };
        let full = surges_at(1.0);
        assert!(full.is_empty(), "{full:#?}");
        let found = surges_at(0.5);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].evidence["expected_duplicates"] < 2.5, "{found:#?}");
    }

    #[test]
    fn a_surge_window_spans_one_quiet_hour_but_not_two() {
        let mut facts = normal_day();
        for (hour, duplicates) in [(12, 9), (14, 6), (15, 5), (18, 7)] {
            plant_duplicate_hour(&mut facts, "web", hour, duplicates);
        }
        let window = surge_window(&facts, "web").expect("a surge");
        assert_eq!(window, (hour_start(&facts, 12), hour_start(&facts, 16)));
    }

    /// The window runs from the first duplicate of its first hour to the last of its
    /// last, not from hour to hour.
    #[test]
    fn a_surge_window_is_cut_to_its_first_and_last_duplicate() {
        let mut facts = normal_day();
        let at = |hour: u32, minute: u32| {
            let start = chrono::DateTime::parse_from_rfc3339(&hour_start(&facts, hour)).unwrap();
            (start + chrono::Duration::minutes(i64::from(minute))).to_rfc3339()
        };
        let spans = [(12, 9, (18, 50)), (13, 8, (2, 58)), (14, 6, (0, 41))];
        let spans = spans
            .map(|(hour, count, (first, last))| (hour, count, (at(hour, first), at(hour, last))));
        for (hour, count, span) in spans.clone() {
            plant_duplicate_hour(&mut facts, "web", hour, count);
            facts.cells.day.last_mut().unwrap().span = Some(span);
        }
        let window = surge_window(&facts, "web").expect("a surge");
        assert_eq!(window, (spans[0].2.0.clone(), spans[2].2.1.clone()));
    }
}
