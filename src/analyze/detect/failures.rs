//! FailureConcentration: most of the day's failures on one source, page or page field.

use std::collections::BTreeSet;

use super::stats::interval;
use super::{Dimension, Draft, baseline_failure_share, confidence, num, subject_of};
use crate::analyze::facts::{Breakdown, DayFacts, PageField, round_to};
use crate::analyze::finding::{Finding, FindingKind, Severity};
use crate::config::DetectorSettings;

/// A subject's failure share must also be `failure_rate_rise` above the baseline's
/// overall share: a busy source naturally holds most of a normal day's failures.
pub(super) fn failure_concentrations(facts: &DayFacts, t: &DetectorSettings) -> Vec<Finding> {
    let day_failures = facts.totals.rejected + facts.totals.failed;
    let elevated = baseline_failure_share(facts) + t.failure_rate_rise;
    let fields: Vec<Finding> = facts
        .invalid_fields_by_page
        .iter()
        .filter(|f| !f.page.is_empty() && !f.field.is_empty())
        .filter_map(|f| page_field(facts, t, f, elevated))
        .collect();
    let pages_with_field: BTreeSet<Option<String>> =
        fields.iter().map(|f| f.subject.page.clone()).collect();
    let pages_with_field = &pages_with_field;
    let wholes = [
        (Dimension::Source, &facts.by_source),
        (Dimension::Page, &facts.by_page),
    ]
    .into_iter()
    .flat_map(|(dimension, list)| {
        list.iter()
            .filter(|b| !b.name.is_empty())
            .filter(move |b| {
                dimension != Dimension::Page || !pages_with_field.contains(&Some(b.name.clone()))
            })
            .filter_map(move |b| whole(t, dimension, b, day_failures, elevated))
    })
    .collect::<Vec<_>>();
    fields.into_iter().chain(wholes).collect()
}

fn whole(
    t: &DetectorSettings,
    dimension: Dimension,
    b: &Breakdown,
    day_failures: u64,
    elevated: f64,
) -> Option<Finding> {
    if day_failures < t.min_attempts
        || b.attempts < t.min_attempts
        || b.share_of_day_failures < t.concentration_share
        || b.failure_share < elevated
    {
        return None;
    }
    let strong = b.failure_share >= 0.5 && b.failures() >= t.min_attempts;
    let label = dimension.as_str();
    Some(
        Draft {
            kind: FindingKind::FailureConcentration,
            subject: subject_of(dimension, &b.name),
            severity: if strong { Severity::High } else { Severity::Medium },
            confidence: confidence(b.failures() as f64, 2.0 * t.min_attempts as f64, None),
            summary: format!(
                "{label} {} held {} of the day's {} failures (share {}); its own failure share was {}.",
                b.name,
                b.failures(),
                day_failures,
                num(b.share_of_day_failures),
                num(b.failure_share)
            ),
            evidence: vec![
                ("failures", b.failures() as f64),
                ("day_failures", day_failures as f64),
                ("share_of_day_failures", b.share_of_day_failures),
                ("attempts", b.attempts as f64),
                ("failure_share", b.failure_share),
            ],
            window: None,
            interval: Some(interval(
                b.failures(),
                b.attempts,
                Some(round_to(elevated - t.failure_rate_rise, 4)),
            )),
        }
        .build(),
    )
}

/// One field of one page rejecting a large share of that page's attempts: a broken form.
fn page_field(
    facts: &DayFacts,
    t: &DetectorSettings,
    f: &PageField,
    elevated: f64,
) -> Option<Finding> {
    let page = facts.by_page.iter().find(|p| p.name == f.page)?;
    if page.attempts < t.min_attempts
        || f.share_of_page_failures < t.concentration_share
        || f.share_of_page_attempts < elevated
    {
        return None;
    }
    let strong = f.share_of_page_attempts >= 2.0 * t.failure_rate_rise && f.count >= t.min_attempts;
    let mut subject = subject_of(Dimension::Page, &f.page);
    subject.field = Some(f.field.clone());
    Some(
        Draft {
            kind: FindingKind::FailureConcentration,
            subject,
            severity: if strong { Severity::High } else { Severity::Medium },
            confidence: confidence(f.count as f64, 2.0 * t.min_attempts as f64, None),
            summary: format!(
                "page {} rejected {} of its {} attempts as invalid_field on field {} (share of page attempts {}, of page failures {}).",
                f.page,
                f.count,
                page.attempts,
                f.field,
                num(f.share_of_page_attempts),
                num(f.share_of_page_failures)
            ),
            evidence: vec![
                ("invalid_field_attempts", f.count as f64),
                ("page_attempts", page.attempts as f64),
                ("share_of_page_attempts", f.share_of_page_attempts),
                ("share_of_page_failures", f.share_of_page_failures),
            ],
            window: Some((f.first_event.clone(), f.last_event.clone())),
            interval: Some(interval(
                f.count,
                page.attempts,
                Some(round_to(elevated - t.failure_rate_rise, 4)),
            )),
        }
        .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{normal_day, plant_broken_field, set_source_attempts};
    use super::*;

    #[test]
    fn a_broken_consent_field_is_a_concentration_on_page_and_field() {
        let mut facts = normal_day();
        plant_broken_field(&mut facts, "/pricing", "consent", 150);
        let found = failure_concentrations(&facts, &DetectorSettings::default());
        let field: Vec<_> = found.iter().filter(|f| f.subject.field.is_some()).collect();
        assert_eq!(field.len(), 1, "{found:#?}");
        assert_eq!(field[0].subject.page.as_deref(), Some("/pricing"));
        assert_eq!(field[0].subject.field.as_deref(), Some("consent"));
        assert_eq!(field[0].severity, Severity::High);
        assert!(
            !found
                .iter()
                .any(|f| f.subject.page.is_some() && f.subject.field.is_none()),
            "the page itself is not reported again: {found:#?}"
        );
    }

    #[test]
    fn a_source_failing_most_is_a_concentration_on_that_source() {
        let mut facts = normal_day();
        set_source_attempts(&mut facts, "quiz", 200, 150);
        let found = failure_concentrations(&facts, &DetectorSettings::default());
        assert!(
            found
                .iter()
                .any(|f| f.subject.source.as_deref() == Some("quiz")),
            "{found:#?}"
        );
    }

    #[test]
    fn the_busiest_source_holding_most_normal_failures_is_no_concentration() {
        let facts = normal_day();
        assert!(
            facts.by_source[0].share_of_day_failures < 0.6
                || facts.by_source[0].failure_share < 0.2
        );
        assert!(failure_concentrations(&facts, &DetectorSettings::default()).is_empty());
    }
}
