//! FailureShift, the generic "what changed": every value of every dimension of the record
//! (source, endpoint, page, form, client, field, reason, outcome) is compared with the
//! baseline. Its failure share today (of its own attempts; for a reason, field or outcome,
//! of all attempts) is tested against the baseline's with a one-sided binomial test;
//! Benjamini–Hochberg keeps the false discovery rate at `change_significance` over all the
//! values tested. A discovery needs `min_attempts` failures, a Wilson interval above the
//! baseline share and a lift (today's share / the baseline's) of at least
//! `MIN_LIFT`. Values the baseline cannot tell apart (a client; a field, whose baseline is
//! all `invalid_field` rejections) are compared with that upper bound.

use super::stats::{MIN_BASELINE_SHARE, benjamini_hochberg, binomial_excess_p, interval};
use super::subjects::{Subject, failing_subjects, own_attempts};
use super::{Candidate, Draft, baseline_failure_share, capped, confidence, num, ratio};
use crate::analyze::facts::{DayFacts, rate, round_to};
use crate::analyze::finding::{Dimension, FindingKind, RateInterval, Severity};
use crate::config::DetectorSettings;

/// Today's share must be at least this many times the baseline's.
pub const MIN_LIFT: f64 = 2.0;

/// One value tested: today's failures of attempts, and the baseline share.
struct Tested {
    subject: Subject,
    attempts: u64,
    failures: u64,
    baseline: f64,
    p: f64,
}

pub(super) fn failure_shifts(facts: &DayFacts, t: &DetectorSettings) -> Vec<Candidate> {
    if facts.baseline.days_with_data == 0 {
        return Vec::new();
    }
    let tested: Vec<Tested> = failing_subjects(facts, Dimension::ALL)
        .into_iter()
        .filter_map(|s| tested(facts, s))
        .collect();
    let p: Vec<f64> = tested.iter().map(|x| x.p).collect();
    let discovered = benjamini_hochberg(&p, t.change_significance);
    let mut found: Vec<(f64, Candidate)> = tested
        .iter()
        .zip(discovered)
        .filter(|(_, d)| *d)
        .filter_map(|(x, _)| shift(facts, t, x))
        .collect();
    // Ranked by lift: the most specific change explains the others first.
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    found.into_iter().map(|(_, c)| c).collect()
}

fn tested(facts: &DayFacts, subject: Subject) -> Option<Tested> {
    let (attempts, failures) = if subject.dimension == Dimension::Client {
        let b = facts.by_client.iter().find(|b| b.name == subject.value)?;
        (b.attempts, b.failures())
    } else {
        let total = subject.fold(&facts.cells.day, 1, false, |_| 0);
        *total.first()?
    };
    let baseline = if subject.dimension == Dimension::Client {
        round_to(baseline_failure_share(facts), 4)
    } else {
        baseline_share(facts, &subject.fold(&facts.cells.baseline, 1, true, |_| 0))
    };
    Some(Tested {
        p: binomial_excess_p(failures, attempts, baseline),
        subject,
        attempts,
        failures,
        baseline,
    })
}

/// A subject's baseline share from its folded (attempts, failures), the baseline's
/// overall share when the baseline never saw it; rounded as the evidence holds it.
pub(super) fn baseline_share(facts: &DayFacts, folded: &[(u64, u64)]) -> f64 {
    let share = match folded.first() {
        Some(&(a, f)) if a > 0 => f as f64 / a as f64,
        _ => baseline_failure_share(facts),
    };
    round_to(share, 4)
}

/// Today's share of `failures` in `attempts` over `baseline`, floored so a baseline that
/// never failed does not make the lift infinite.
pub(super) fn lift(failures: u64, attempts: u64, baseline: f64) -> f64 {
    ratio(rate(failures, attempts), baseline.max(MIN_BASELINE_SHARE))
}

/// A discovery that counts: `min_attempts` failures, a lift of `MIN_LIFT` and an
/// interval above the baseline.
pub(super) fn substantial(
    t: &DetectorSettings,
    failures: u64,
    lift: f64,
    ci: &RateInterval,
) -> bool {
    failures >= t.min_attempts && lift >= MIN_LIFT && !ci.compatible_with_baseline()
}

fn shift(facts: &DayFacts, t: &DetectorSettings, x: &Tested) -> Option<(f64, Candidate)> {
    let share = rate(x.failures, x.attempts);
    let lift = lift(x.failures, x.attempts, x.baseline);
    let ci = interval(x.failures, x.attempts, Some(x.baseline));
    if !substantial(t, x.failures, lift, &ci) {
        return None;
    }
    let rise = round_to(share - x.baseline, 4);
    let severity = if rise >= 2.0 * t.failure_rate_rise {
        Severity::High
    } else {
        Severity::Medium
    };
    let label = x.subject.dimension.as_str();
    let of = if own_attempts(x.subject.dimension) {
        "its attempts"
    } else {
        "all attempts"
    };
    let draft = Draft {
        kind: FindingKind::FailureShift,
        subject: x.subject.dimension.subject(&x.subject.value),
        severity: capped(severity, facts),
        confidence: confidence(
            x.failures as f64,
            2.0 * t.min_attempts as f64,
            Some(facts.baseline.days_with_data),
        ),
        summary: format!(
            "{label} {}: {} of {} attempts failed ({} of {of}) against a baseline share of {} (lift {}).",
            x.subject.value,
            x.failures,
            x.attempts,
            num(share),
            num(x.baseline),
            num(lift)
        ),
        evidence: vec![
            ("failures", x.failures as f64),
            ("attempts", x.attempts as f64),
            ("failure_share", share),
            ("baseline_share", x.baseline),
            ("lift", lift),
            ("rise", rise),
        ],
        window: None,
        interval: Some(ci),
    };
    let excess = x.failures as f64 - x.attempts as f64 * x.baseline;
    Some((
        lift,
        Candidate {
            excess,
            finding: draft.build(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{normal_day, plant_cells};
    use super::*;
    use crate::domain::Reason;

    #[test]
    fn a_new_reason_on_one_form_is_a_shift_that_names_it() {
        let mut facts = normal_day();
        plant_cells(&mut facts, "contact-main", Reason::UnknownForm, 0.6);
        let found = failure_shifts(&facts, &DetectorSettings::default());
        assert!(
            found
                .iter()
                .any(|c| c.finding.subject.form_id.as_deref() == Some("contact-main")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|c| c.finding.subject.reason.as_deref() == Some(Reason::UnknownForm.as_str())),
            "{found:#?}"
        );
    }

    #[test]
    fn a_normal_day_shifts_nothing() {
        let mut facts = normal_day();
        plant_cells(&mut facts, "contact-main", Reason::InvalidField, 0.05);
        let found = failure_shifts(&facts, &DetectorSettings::default());
        assert!(found.is_empty(), "{found:#?}");
    }
}
