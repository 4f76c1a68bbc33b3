//! Clusters of authentication rejections per (claimed) source.

use super::stats::interval;
use super::{Dimension, Draft, confidence, num, subject_of};
use crate::analyze::facts::{DayFacts, SourceReason};
use crate::analyze::finding::{Finding, FindingKind, Severity, Subject};
use crate::config::DetectorSettings;
use crate::domain::Reason;

/// KeyMismatchCluster: valid keys of another source posting for a source — the source
/// is the one the attempts claimed.
pub(super) fn key_mismatch_clusters(facts: &DayFacts, t: &DetectorSettings) -> Vec<Finding> {
    clusters(
        facts,
        t,
        Reason::SourceKeyMismatch,
        FindingKind::KeyMismatchCluster,
    )
}

/// UnauthorizedCluster: missing, unknown, wrong or rotated keys.
pub(super) fn unauthorized_clusters(facts: &DayFacts, t: &DetectorSettings) -> Vec<Finding> {
    clusters(
        facts,
        t,
        Reason::Unauthorized,
        FindingKind::UnauthorizedCluster,
    )
}

fn clusters(
    facts: &DayFacts,
    t: &DetectorSettings,
    reason: Reason,
    kind: FindingKind,
) -> Vec<Finding> {
    facts
        .source_reasons
        .iter()
        .filter(|r| r.reason == reason.as_str() && r.count >= t.auth_cluster_min)
        .map(|r| {
            let attempts = facts
                .by_source
                .iter()
                .find(|b| b.name == r.source)
                .map_or(r.count, |b| b.attempts);
            cluster(t, r, kind, attempts)
        })
        .collect()
}

/// Normal traffic has next to no auth rejections, so twice the minimum is strong.
fn cluster(
    t: &DetectorSettings,
    r: &SourceReason,
    kind: FindingKind,
    source_attempts: u64,
) -> Finding {
    let strong = r.count >= 2 * t.auth_cluster_min;
    let named = if r.source.is_empty() {
        "attempts without a source".to_owned()
    } else {
        format!("source {}", r.source)
    };
    Draft {
        kind,
        subject: if r.source.is_empty() {
            Subject::default()
        } else {
            subject_of(Dimension::Source, &r.source)
        },
        severity: if strong {
            Severity::High
        } else {
            Severity::Medium
        },
        confidence: confidence(r.count as f64, 2.0 * t.auth_cluster_min as f64, None),
        summary: format!(
            "{named} had {} attempts rejected as {} (share of its attempts {}).",
            r.count,
            r.reason,
            num(r.share_of_source_attempts)
        ),
        evidence: vec![
            ("rejected_attempts", r.count as f64),
            ("share_of_source_attempts", r.share_of_source_attempts),
        ],
        window: Some((r.first_event.clone(), r.last_event.clone())),
        interval: Some(interval(r.count, source_attempts, None)),
    }
    .build()
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{normal_day, plant_key_mismatch, plant_unauthorized};
    use super::*;

    #[test]
    fn rotated_keys_are_an_unauthorized_cluster_on_their_source() {
        let mut facts = normal_day();
        plant_unauthorized(&mut facts, "partner", 90);
        let found = unauthorized_clusters(&facts, &DetectorSettings::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].subject.source.as_deref(), Some("partner"));
        assert_eq!(found[0].severity, Severity::High);
        assert!(found[0].window.is_some());
        assert!(unauthorized_clusters(&normal_day(), &DetectorSettings::default()).is_empty());
    }

    #[test]
    fn a_sibling_key_is_a_mismatch_cluster_on_the_claimed_source() {
        let mut facts = normal_day();
        plant_key_mismatch(&mut facts, "ads", 12);
        let found = key_mismatch_clusters(&facts, &DetectorSettings::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].kind, FindingKind::KeyMismatchCluster);
        assert_eq!(found[0].subject.source.as_deref(), Some("ads"));
        assert_eq!(found[0].severity, Severity::Medium);
    }

    #[test]
    fn fewer_than_auth_cluster_min_is_no_cluster() {
        let mut facts = normal_day();
        plant_key_mismatch(&mut facts, "ads", 9);
        assert!(key_mismatch_clusters(&facts, &DetectorSettings::default()).is_empty());
    }
}
