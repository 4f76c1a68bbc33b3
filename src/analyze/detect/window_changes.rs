//! What changed inside a flagged window: for each finding with a window, the values
//! whose failure share in the window's hours rose most against the baseline's share at
//! the same local clock hours. The test is FailureShift's (one-sided binomial,
//! Benjamini–Hochberg at `change_significance`, then `shift::substantial`), run on the hours of
//! the window only, over every dimension the hourly cells hold (all but the client).
//! The values the finding already names are left out, and so are values most of whose
//! failures are the finding's own (a surge's duplicates seen through their endpoint):
//! they are what was flagged, not what changed with it.

use chrono::DateTime;

use super::num;
use super::shift::{baseline_share, lift, substantial};
use super::stats::{benjamini_hochberg, binomial_excess_p, interval};
use super::subjects::{Subject, failing_subjects, restates};
use crate::analyze::facts::{DayFacts, rate};
use crate::analyze::finding::{Dimension, Finding, WindowChange};
use crate::config::DetectorSettings;

/// The most changes a finding lists, ranked by lift.
pub const MAX_WINDOW_CHANGES: usize = 3;

/// Fills in `changes` of every finding with a window and names the first in its summary.
pub(super) fn attach(facts: &DayFacts, t: &DetectorSettings, findings: &mut [Finding]) {
    let mut subjects = None;
    for finding in findings.iter_mut() {
        let Some(hours) = finding.window.as_ref().and_then(|w| Hours::of(facts, w)) else {
            continue;
        };
        let subjects = subjects.get_or_insert_with(|| {
            // The dimensions the hourly cells hold: all but the client.
            let hourly: Vec<Dimension> = Dimension::ALL
                .iter()
                .copied()
                .filter(|&d| d != Dimension::Client)
                .collect();
            failing_subjects(facts, &hourly)
        });
        finding.changes = changes(facts, t, &hours, finding, subjects);
        if let Some(top) = finding.changes.first() {
            finding.summary.push_str(&format!(
                " In its window the failure share rose most on {}={}: {} of {} attempts against a baseline share of {} (lift {}).",
                top.dimension.as_str(),
                top.value,
                top.failures,
                top.attempts,
                num(top.baseline_share),
                num(top.lift)
            ));
        }
    }
}

/// The day's hour indices a window touches, and the local clock hours they are.
struct Hours {
    day: Vec<bool>,
    local: [bool; 24],
}

impl Hours {
    fn of(facts: &DayFacts, (from, to): &(String, String)) -> Option<Self> {
        let parse = |s: &str| DateTime::parse_from_rfc3339(s).ok();
        let (from, to) = (parse(from)?, parse(to)?);
        let slots = &facts.shape.hourly;
        // Each slot runs from its start to the next one's (the last to the day's end).
        let bounds: Vec<_> = slots
            .iter()
            .map(|s| parse(&s.start))
            .chain([parse(&facts.completeness.day_end)])
            .collect();
        let mut hours = Self {
            day: vec![false; facts.completeness.elapsed_hours as usize],
            local: [false; 24],
        };
        for (slot, bound) in slots.iter().zip(bounds.windows(2)) {
            let [Some(start), Some(end)] = bound else {
                continue;
            };
            // A zero-length window (one failure) still names its hour.
            let touches = *start <= to && *end > from;
            if let (true, Some(day)) = (touches, hours.day.get_mut(slot.hour_index as usize)) {
                *day = true;
                hours.local[slot.local_hour as usize % 24] = true;
            }
        }
        hours.day.contains(&true).then_some(hours)
    }
}

fn changes(
    facts: &DayFacts,
    t: &DetectorSettings,
    hours: &Hours,
    finding: &Finding,
    subjects: &[Subject],
) -> Vec<WindowChange> {
    let tested: Vec<WindowChange> = subjects
        .iter()
        .filter(|s| finding.subject.value(s.dimension) != Some(s.value.as_str()))
        .filter_map(|s| tested(facts, hours, s))
        .filter(|c| !restates(facts, finding, c.dimension, &c.value, c.failures))
        .collect();
    let p: Vec<f64> = tested.iter().map(|c| c.p_value).collect();
    let discovered = benjamini_hochberg(&p, t.change_significance);
    let mut found: Vec<WindowChange> = tested
        .into_iter()
        .zip(discovered)
        .filter(|(c, d)| *d && significant(t, c))
        .map(|(c, _)| c)
        .collect();
    // Values with the same counts are the same cells seen through several dimensions
    // (a form's page and endpoint): the most specific one (the later dimension) stays.
    found.sort_by(|a, b| {
        (b.lift.total_cmp(&a.lift))
            .then(b.failures.cmp(&a.failures))
            .then(b.dimension.cmp(&a.dimension))
    });
    found
        .dedup_by(|later, kept| (later.failures, later.attempts) == (kept.failures, kept.attempts));
    found.truncate(MAX_WINDOW_CHANGES);
    found
}

fn tested(facts: &DayFacts, hours: &Hours, subject: &Subject) -> Option<WindowChange> {
    let in_window = |h: u32| hours.day.get(h as usize).copied().unwrap_or(false);
    let today = subject.fold(&facts.cells.day, 1, false, |c| {
        usize::from(!in_window(c.hour))
    });
    let &(attempts, failures) = today.first()?;
    if failures == 0 {
        return None;
    }
    let base = subject.fold(&facts.cells.baseline, 1, true, |c| {
        usize::from(!hours.local[c.local_hour as usize % 24])
    });
    let baseline_share = baseline_share(facts, &base);
    Some(WindowChange {
        p_value: binomial_excess_p(failures, attempts, baseline_share),
        lift: lift(failures, attempts, baseline_share),
        dimension: subject.dimension,
        value: subject.value.clone(),
        failures,
        attempts,
        share: rate(failures, attempts),
        baseline_share,
    })
}

fn significant(t: &DetectorSettings, c: &WindowChange) -> bool {
    let ci = interval(c.failures, c.attempts, Some(c.baseline_share));
    substantial(t, c.failures, c.lift, &ci)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{normal_day, plant_form_hours};
    use super::*;
    use crate::analyze::facts::HourSlot;
    use crate::analyze::finding::{FindingKind, Severity};
    use crate::domain::Reason;

    /// A day whose hourly slots are filled in (the fixture's are empty).
    fn day_with_slots() -> DayFacts {
        let mut facts = normal_day();
        facts.shape.hourly = (0..24)
            .map(|h| HourSlot {
                hour_index: h,
                local_hour: h,
                start: format!("2025-06-10T{h:02}:00:00+02:00"),
                attempts: 0,
                failures: 0,
            })
            .collect();
        facts
    }

    fn flagged(window: (&str, &str)) -> Finding {
        Finding {
            kind: FindingKind::DownstreamOutage,
            subject: Dimension::Endpoint.subject("leads"),
            severity: Severity::High,
            confidence: 1.0,
            summary: "An outage.".into(),
            evidence: Default::default(),
            window: Some((window.0.into(), window.1.into())),
            interval: None,
            changes: Vec::new(),
        }
    }

    #[test]
    fn a_form_failing_only_inside_the_window_is_what_changed_there() {
        let mut facts = day_with_slots();
        plant_form_hours(&mut facts, "contact-main", Reason::UnknownForm, 10..12);
        let mut findings = [
            flagged(("2025-06-10T10:05:00+02:00", "2025-06-10T11:40:00+02:00")),
            flagged(("2025-06-10T15:00:00+02:00", "2025-06-10T16:00:00+02:00")),
        ];
        attach(&facts, &DetectorSettings::default(), &mut findings);
        let inside = &findings[0].changes;
        assert!(
            inside
                .iter()
                .any(|c| c.dimension == Dimension::Form && c.value == "contact-main"),
            "{inside:#?}"
        );
        assert!(
            !inside
                .iter()
                .any(|c| c.value == "/contact" || c.value == "forms"),
            "the form's page and endpoint are the same cells, named once by the form: {inside:#?}"
        );
        assert!(inside.len() <= MAX_WINDOW_CHANGES);
        assert!(inside.windows(2).all(|w| w[0].lift >= w[1].lift));
        assert!(findings[0].summary.contains("rose most on"));
        assert!(
            findings[1].changes.is_empty(),
            "hours 15–16 are normal: {:#?}",
            findings[1].changes
        );
        assert_eq!(findings[1].summary, "An outage.");
    }

    #[test]
    fn the_values_the_finding_names_are_not_listed_as_changes() {
        let mut facts = day_with_slots();
        plant_form_hours(&mut facts, "contact-main", Reason::UnknownForm, 10..12);
        let mut finding = flagged(("2025-06-10T10:00:00+02:00", "2025-06-10T12:00:00+02:00"));
        finding.subject = Dimension::Form.subject("contact-main");
        let mut findings = [finding];
        attach(&facts, &DetectorSettings::default(), &mut findings);
        assert!(
            findings[0]
                .changes
                .iter()
                .all(|c| !(c.dimension == Dimension::Form && c.value == "contact-main")),
            "{:#?}",
            findings[0].changes
        );
    }

    #[test]
    fn values_whose_failures_are_the_findings_own_are_not_changes() {
        let mut facts = day_with_slots();
        plant_form_hours(&mut facts, "contact-main", Reason::UnknownForm, 10..12);
        let mut finding = flagged(("2025-06-10T10:00:00+02:00", "2025-06-10T12:00:00+02:00"));
        finding.kind = FindingKind::FailureShift;
        finding.subject = Dimension::Reason.subject(Reason::UnknownForm.as_str());
        let mut findings = [finding];
        attach(&facts, &DetectorSettings::default(), &mut findings);
        let listed: Vec<_> = findings[0]
            .changes
            .iter()
            .map(|c| c.value.as_str())
            .collect();
        for own in ["contact-main", "/contact", "forms"] {
            assert!(
                !listed.contains(&own),
                "{own} restates the finding: {listed:?}"
            );
        }
    }

    #[test]
    fn a_finding_without_a_window_or_outside_the_day_gets_no_changes() {
        let mut facts = day_with_slots();
        plant_form_hours(&mut facts, "contact-main", Reason::UnknownForm, 10..12);
        let mut unwindowed = flagged(("", ""));
        unwindowed.window = None;
        let mut findings = [
            unwindowed,
            flagged(("2025-06-12T10:00:00+02:00", "2025-06-12T11:00:00+02:00")),
        ];
        attach(&facts, &DetectorSettings::default(), &mut findings);
        assert!(findings.iter().all(|f| f.changes.is_empty()));
    }
}
