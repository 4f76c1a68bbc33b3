//! Small samples in the report: a finding resting on a handful of attempts is named in
//! the report's confidence reasons, whoever wrote the report (the model or the rules).

use crate::analyze::finding::Finding;
use crate::analyze::report::{ConfidenceLevel, MAX_REASON_CHARS, Report};

/// Findings named in the note at most (the most severe first, as detected).
const NAMED: usize = 3;

/// The note on the findings whose interval is a small sample, if any.
pub fn small_sample_note(findings: &[Finding]) -> Option<String> {
    let small: Vec<String> = findings
        .iter()
        .filter_map(|f| {
            let i = f.interval.filter(|i| i.small_sample)?;
            Some(format!(
                "{} ({} of {} attempts, 95 % interval {} to {})",
                f.kind.as_str(),
                i.count,
                i.attempts,
                i.low,
                i.high
            ))
        })
        .collect();
    if small.is_empty() {
        return None;
    }
    let mut note = format!(
        "The sample was small for {} finding(s): {}.",
        small.len(),
        small
            .iter()
            .take(NAMED)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    );
    if note.chars().count() > MAX_REASON_CHARS {
        note = format!("The sample was small for {} finding(s).", small.len());
    }
    Some(note)
}

/// Adds the note to the report's confidence reasons and caps the level at medium.
pub fn qualify(report: &mut Report, findings: &[Finding]) {
    let Some(note) = small_sample_note(findings) else {
        return;
    };
    report.confidence.qualify(ConfidenceLevel::Medium, note);
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{normal_day, plant_new_page, set_source_attempts};
    use super::super::novelty::new_pages;
    use super::super::volume::failure_rate_rises;
    use super::*;
    use crate::analyze::finding::Severity;
    use crate::config::DetectorSettings;

    #[test]
    fn a_twelve_attempt_source_with_three_failures_is_a_small_sample_in_the_report() {
        let mut facts = normal_day();
        facts.baseline.by_source[0].failure_share = 0.0;
        set_source_attempts(&mut facts, "ads", 12, 3);
        let t = DetectorSettings {
            min_attempts: 10,
            ..DetectorSettings::default()
        };
        let found = failure_rate_rises(&facts, &t);
        assert_eq!(found.len(), 1, "{found:#?}");
        let interval = found[0].interval.expect("an interval");
        assert!(interval.small_sample, "{interval:?}");
        assert_eq!((interval.count, interval.attempts), (3, 12));
        assert!((interval.low - 0.0889).abs() < 1e-3, "{interval:?}");
        let note = small_sample_note(&found).expect("a note");
        assert!(note.contains("3 of 12 attempts"), "{note}");
        assert!(small_sample_note(&[]).is_none());
    }

    #[test]
    fn a_share_whose_interval_holds_the_baseline_is_never_high() {
        let mut facts = normal_day();
        for b in facts.baseline.by_source.iter_mut() {
            b.failure_share = 0.3;
        }
        let t = DetectorSettings {
            min_attempts: 3,
            ..DetectorSettings::default()
        };
        plant_new_page(&mut facts, "/landing/tiny", 4, 2);
        let found = new_pages(&facts, &t);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0]
                .interval
                .is_some_and(|i| i.compatible_with_baseline())
        );
        assert_eq!(
            found[0].severity,
            Severity::Medium,
            "2 of 4 may be the baseline's 0.3"
        );
        plant_new_page(&mut facts, "/landing/broken", 60, 50);
        let broken = new_pages(&facts, &t);
        assert!(
            broken.iter().any(|f| f.severity == Severity::High),
            "{broken:#?}"
        );
    }
}
