//! Subjects of the generic detectors: a subject's failures and attempts per hour from the
//! facts' cells, and the rule that merges a generic finding into one that already
//! explains the same failures (one incident, one finding).

use super::Candidate;
use crate::analyze::facts::{Cell, CellValues, DayFacts};
use crate::analyze::finding::{Dimension, Finding, FindingKind};
use crate::domain::Reason;

/// Share of a candidate's excess failures that, when they are also another finding's,
/// make it the same incident.
const SAME_INCIDENT_SHARE: f64 = 0.5;

/// A subject: one value of one dimension.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Subject {
    pub(super) dimension: Dimension,
    pub(super) value: String,
}

/// Sources, endpoints, pages, forms and clients fail out of their own attempts; a
/// reason, field or outcome is a share of all attempts.
pub(super) fn own_attempts(dimension: Dimension) -> bool {
    matches!(
        dimension,
        Dimension::Source
            | Dimension::Endpoint
            | Dimension::Page
            | Dimension::Form
            | Dimension::Client
    )
}

impl Subject {
    /// A failure of this subject. The baseline has no field, so there a field's failures
    /// are all `invalid_field` rejections (an upper bound of the field's own).
    pub(super) fn fails(&self, values: &CellValues, baseline: bool) -> bool {
        if !values.failed() {
            return false;
        }
        match self.dimension {
            Dimension::Field if baseline => values.has_reason(Reason::InvalidField),
            Dimension::Field => {
                values.has_reason(Reason::InvalidField) && values.field == self.value
            }
            d => values.value(d) == Some(self.value.as_str()),
        }
    }

    pub(super) fn in_scope(&self, values: &CellValues) -> bool {
        !own_attempts(self.dimension) || values.value(self.dimension) == Some(self.value.as_str())
    }

    /// (attempts, failures) per slot: `slot` maps a cell to its index.
    pub(super) fn fold(
        &self,
        cells: &[Cell],
        slots: usize,
        baseline: bool,
        slot: impl Fn(&Cell) -> usize,
    ) -> Vec<(u64, u64)> {
        let mut out = vec![(0, 0); slots];
        for c in cells.iter().filter(|c| self.in_scope(&c.values)) {
            if let Some(s) = out.get_mut(slot(c)) {
                s.0 += c.attempts;
                if self.fails(&c.values, baseline) {
                    s.1 += c.attempts;
                }
            }
        }
        out
    }

    /// Today's (attempts, failures) per elapsed hour index.
    pub(super) fn day_hours(&self, facts: &DayFacts) -> Vec<(u64, u64)> {
        let hours = facts.completeness.elapsed_hours as usize;
        self.fold(&facts.cells.day, hours, false, |c| c.hour as usize)
    }

    /// The baseline's (attempts, failures) per local clock hour, over all its days.
    pub(super) fn baseline_hours(&self, facts: &DayFacts) -> Vec<(u64, u64)> {
        self.fold(&facts.cells.baseline, 24, true, |c| c.local_hour as usize)
    }
}

/// The subjects with failures today in `dimensions` (empty values left out).
pub(super) fn failing_subjects(facts: &DayFacts, dimensions: &[Dimension]) -> Vec<Subject> {
    let mut list: Vec<Subject> = facts
        .cells
        .failures
        .iter()
        .flat_map(|c| {
            dimensions.iter().filter_map(|&d| {
                Some(Subject {
                    dimension: d,
                    value: c.values.value(d)?.to_owned(),
                })
            })
        })
        .collect();
    list.sort();
    list.dedup();
    list
}

/// Which failures a finding is about: the values its subject names and the reasons its
/// kind implies; `None` for findings about volume, time or latency rather than failures.
struct Pattern {
    pairs: Vec<(Dimension, String)>,
    reasons: &'static [Reason],
}

fn pattern(f: &Finding) -> Option<Pattern> {
    let reasons: &'static [Reason] = match f.kind {
        FindingKind::KeyMismatchCluster => &[Reason::SourceKeyMismatch],
        FindingKind::UnauthorizedCluster => &[Reason::Unauthorized],
        FindingKind::RateLimitBurst => &[Reason::RateLimited],
        FindingKind::DownstreamOutage => &[Reason::DownstreamTimeout, Reason::DownstreamError],
        FindingKind::DuplicateSurge => &[Reason::Duplicate],
        FindingKind::FailureConcentration if f.subject.field.is_some() => &[Reason::InvalidField],
        FindingKind::FailureConcentration
        | FindingKind::FailureRateRise
        | FindingKind::NewPage
        | FindingKind::GradualFailureRise
        | FindingKind::FailureShift => &[],
        FindingKind::VolumeDrop
        | FindingKind::VolumeSpike
        | FindingKind::SilentSource
        | FindingKind::LatencyRegression
        | FindingKind::RecordLoss => return None,
    };
    let pairs = Dimension::ALL
        .iter()
        .copied()
        .filter_map(|d| Some((d, f.subject.value(d)?.to_owned())))
        .collect();
    Some(Pattern { pairs, reasons })
}

impl Pattern {
    fn matches(&self, values: &CellValues) -> bool {
        values.failed()
            && self
                .pairs
                .iter()
                .all(|(d, v)| values.value(*d) == Some(v.as_str()))
            && (self.reasons.is_empty() || self.reasons.iter().any(|&r| values.has_reason(r)))
    }
}

/// Failures of the day that both findings are about.
fn overlap(facts: &DayFacts, a: &Pattern, b: &Pattern) -> u64 {
    facts
        .cells
        .failures
        .iter()
        .filter(|c| a.matches(&c.values) && b.matches(&c.values))
        .map(|c| c.attempts)
        .sum()
}

/// Whether most of `failures` failures of `dimension`=`value` are ones `finding` is
/// already about (its subject's values and the reasons its kind implies), counted over
/// the day: then the value restates the finding rather than saying what else changed.
pub(super) fn restates(
    facts: &DayFacts,
    finding: &Finding,
    dimension: Dimension,
    value: &str,
    failures: u64,
) -> bool {
    let Some(about) = pattern(finding) else {
        return false;
    };
    let of_subject = Pattern {
        pairs: vec![(dimension, value.to_owned())],
        reasons: &[],
    };
    overlap(facts, &about, &of_subject) as f64 >= SAME_INCIDENT_SHARE * failures as f64
}

/// Keeps every hand-written finding and, in the candidates' order, each generic one
/// whose excess failures are not mostly those of a finding already kept.
pub(super) fn merge(
    facts: &DayFacts,
    hand: Vec<Finding>,
    candidates: Vec<Candidate>,
) -> Vec<Finding> {
    let mut kept: Vec<Pattern> = hand.iter().filter_map(pattern).collect();
    let mut out = hand;
    for c in candidates {
        let Some(p) = pattern(&c.finding) else {
            continue;
        };
        let explained = kept
            .iter()
            .any(|k| overlap(facts, &p, k) as f64 >= SAME_INCIDENT_SHARE * c.excess);
        if !explained {
            kept.push(p);
            out.push(c.finding);
        }
    }
    out
}
