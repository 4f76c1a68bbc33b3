//! Hand-written findings that describe one incident from two sides, folded into the one
//! that names its cause (one incident, one finding): a silent source's volume drop into
//! the silence, a slow or failing CRM's latency rise into the outage, and a new page's
//! field concentration into the new page. The folded finding's numbers stay, as
//! evidence of the kept one.

use crate::analyze::finding::{Finding, FindingKind};

/// `(folded, into, where)`: a finding of the first kind goes into one of the second kind
/// found where the third says (the day, the same source, the same page).
const FOLDS: [(FindingKind, FindingKind, Scope); 3] = [
    (
        FindingKind::VolumeDrop,
        FindingKind::SilentSource,
        Scope::Source,
    ),
    (
        FindingKind::LatencyRegression,
        FindingKind::DownstreamOutage,
        Scope::Day,
    ),
    (
        FindingKind::FailureConcentration,
        FindingKind::NewPage,
        Scope::Page,
    ),
];

#[derive(Clone, Copy)]
enum Scope {
    /// Any finding of the kind on the day: on a day the CRM failed or crawled, it is
    /// the first suspect of every latency rise (a lead's response waits for delivery).
    Day,
    Source,
    Page,
}

impl Scope {
    fn matches(self, folded: &Finding, into: &Finding) -> bool {
        match self {
            Scope::Day => true,
            Scope::Source => {
                folded.subject.source.is_some() && folded.subject.source == into.subject.source
            }
            Scope::Page => {
                folded.subject.page.is_some() && folded.subject.page == into.subject.page
            }
        }
    }
}

pub(super) fn fold(findings: Vec<Finding>) -> Vec<Finding> {
    let foldable = |f: &Finding| FOLDS.iter().any(|(kind, ..)| f.kind == *kind);
    let (candidates, mut kept): (Vec<Finding>, Vec<Finding>) =
        findings.into_iter().partition(foldable);
    for finding in candidates {
        let host = FOLDS
            .iter()
            .filter(|(kind, ..)| *kind == finding.kind)
            .find_map(|(_, into, scope)| {
                kept.iter()
                    .position(|k| k.kind == *into && scope.matches(&finding, k))
            });
        match host {
            Some(i) => absorb(&mut kept[i], &finding),
            None => kept.push(finding),
        }
    }
    kept
}

/// The folded finding's evidence, under its kind's name, and the field it names.
fn absorb(host: &mut Finding, folded: &Finding) {
    let kind = folded.kind.as_str();
    for (name, value) in &folded.evidence {
        host.evidence.insert(format!("{kind}.{name}"), *value);
    }
    if host.subject.field.is_none() {
        host.subject.field.clone_from(&folded.subject.field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::finding::{Severity, Subject};

    fn finding(kind: FindingKind, subject: Subject) -> Finding {
        Finding {
            kind,
            subject,
            severity: Severity::Medium,
            confidence: 0.8,
            summary: kind.as_str().into(),
            evidence: [("attempts".to_owned(), 12.0)].into(),
            window: None,
            interval: None,
            changes: Vec::new(),
        }
    }

    fn source(name: &str) -> Subject {
        Subject {
            source: Some(name.into()),
            ..Subject::default()
        }
    }

    #[test]
    fn a_silent_sources_drop_is_folded_into_the_silence_and_keeps_its_numbers() {
        let kept = fold(vec![
            finding(FindingKind::VolumeDrop, source("qr_code")),
            finding(FindingKind::SilentSource, source("qr_code")),
            finding(FindingKind::VolumeDrop, source("quiz")),
        ]);
        assert_eq!(kept.len(), 2, "{kept:?}");
        let silent = kept
            .iter()
            .find(|f| f.kind == FindingKind::SilentSource)
            .unwrap();
        assert_eq!(silent.evidence["volume_drop.attempts"], 12.0);
        assert!(
            kept.iter().any(|f| f.kind == FindingKind::VolumeDrop
                && f.subject.source.as_deref() == Some("quiz"))
        );
    }

    #[test]
    fn a_latency_rise_goes_into_the_days_outage_but_not_without_one() {
        let latency = finding(FindingKind::LatencyRegression, source("funnel_page"));
        let outage = finding(FindingKind::DownstreamOutage, Subject::default());
        let kept = fold(vec![latency.clone(), outage]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].evidence["latency_regression.attempts"], 12.0);
        assert_eq!(fold(vec![latency]).len(), 1);
    }

    #[test]
    fn a_new_pages_field_concentration_names_the_field_on_the_new_page() {
        let page = |field: Option<&str>| Subject {
            page: Some("/new".into()),
            field: field.map(str::to_owned),
            ..Subject::default()
        };
        let kept = fold(vec![
            finding(FindingKind::FailureConcentration, page(Some("phone"))),
            finding(FindingKind::NewPage, page(None)),
        ]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].kind, FindingKind::NewPage);
        assert_eq!(kept[0].subject.field.as_deref(), Some("phone"));
    }
}
