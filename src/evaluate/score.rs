//! Scoring the detectors against a scenario's labels: which injected incident each
//! finding is about, and the figures `lead-lab eval` reports (recall, precision,
//! fragments per incident, window error).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::analyze::{Finding, FindingKind, Severity};
use crate::simulate::plan::{Evidence, Window};
use crate::simulate::scenario::IncidentKind;

/// A finding's window may start or end this far from its incident's and still be
/// about it (the target for the window error, too).
pub const WINDOW_SLACK_MINUTES: f64 = 15.0;

/// One injected incident as seen on one analysed day: its window cut to that day.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub kind: IncidentKind,
    pub day: NaiveDate,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The first and last attempt the incident changed that day; absent when it changed
    /// none (it removed traffic).
    pub evidence: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// For a silence: the source's last attempt before it and first after it, cut to
    /// the day (what the data can show of it).
    pub around: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Where the day's hours start: the facts' hourly grid (local midnight, so a zone
    /// at a half-hour offset has its hours at :30 UTC).
    pub day_start: DateTime<Utc>,
    pub source: Option<String>,
    pub page: Option<String>,
    pub field: Option<String>,
    pub endpoint: Option<String>,
}

impl Label {
    /// The part of `window` (and of its `evidence`) inside the day [day_start,
    /// day_end), if any.
    pub fn of_day(
        window: &Window<'_>,
        evidence: &Evidence,
        day: NaiveDate,
        day_start: DateTime<Utc>,
        day_end: DateTime<Utc>,
    ) -> Option<Self> {
        let start = window.start.max(day_start);
        let end = window.end.min(day_end);
        let incident = window.incident;
        (start < end).then(|| Self {
            kind: incident.kind,
            day,
            start,
            end,
            evidence: evidence.span_within(start, end),
            around: evidence.around().map(|(before, after)| {
                (
                    before.map_or(day_start, |at| at.max(day_start)),
                    after.map_or(day_end, |at| at.min(day_end)),
                )
            }),
            day_start,
            source: incident.source.clone(),
            page: incident.page.clone(),
            field: incident.field.clone(),
            endpoint: incident.endpoint.clone(),
        })
    }

    /// What the window error is measured against: the starts and the ends a finding's
    /// window may have without error. For most incidents one of each: the evidence's
    /// first and last attempt, or the clock window of an incident that changed none.
    /// For a silence, any start from the hour of the source's last attempt before it
    /// (or the day's start) to the silence's start, and any end from the silence's end
    /// to the end of the hour of its first attempt after: in between the data shows no
    /// difference — a small source at night sends nothing whether or not its page is
    /// down — and the facts are hourly.
    pub fn observable(&self) -> Observable {
        match self.around {
            Some((before, after)) => Observable {
                starts: (self.hour_of(before).min(self.start), self.start),
                ends: (self.end, self.hour_after(after).max(self.end)),
            },
            None => self.evidence.unwrap_or((self.start, self.end)).into(),
        }
    }

    /// The start of the facts' hour `at` falls in.
    fn hour_of(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        self.day_start + chrono::Duration::hours((at - self.day_start).num_hours())
    }

    /// The end of the facts' hour `at` falls in (`at` itself on an hour's start).
    fn hour_after(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.hour_of(at);
        if start == at {
            at
        } else {
            start + chrono::Duration::hours(1)
        }
    }

    /// `kind source=… page=…`, for tables.
    pub fn describe(&self) -> String {
        let kind = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let parts = [
            ("source", &self.source),
            ("page", &self.page),
            ("field", &self.field),
            ("endpoint", &self.endpoint),
        ];
        parts
            .iter()
            .filter_map(|(name, value)| value.as_ref().map(|v| format!(" {name}={v}")))
            .fold(kind, |text, part| text + &part)
    }
}

/// The finding kinds that are about an incident of `kind` (its subject and window
/// decide which one): first the kind the simulator labels it with, then the kinds that
/// describe the same trouble from another side. A finding of any other kind is not
/// explained by it — a form whose posts are all rejected is not a volume drop.
pub fn explaining_kinds(kind: IncidentKind) -> &'static [FindingKind] {
    use FindingKind as F;
    match kind {
        IncidentKind::WrongKey => &[
            F::UnauthorizedCluster,
            F::FailureRateRise,
            F::FailureConcentration,
            F::FailureShift,
        ],
        IncidentKind::ForeignKey => &[
            F::KeyMismatchCluster,
            F::FailureRateRise,
            F::FailureConcentration,
            F::FailureShift,
        ],
        IncidentKind::BrokenField | IncidentKind::RenamedForm => &[
            F::FailureConcentration,
            F::FailureRateRise,
            F::NewPage,
            F::GradualFailureRise,
            F::FailureShift,
        ],
        IncidentKind::NewPage => &[
            F::NewPage,
            F::FailureConcentration,
            F::FailureRateRise,
            F::GradualFailureRise,
            F::FailureShift,
        ],
        IncidentKind::BotBurst => &[F::RateLimitBurst, F::VolumeSpike, F::FailureRateRise],
        IncidentKind::CrmDown | IncidentKind::CrmSlow => &[
            F::DownstreamOutage,
            F::FailureRateRise,
            F::FailureConcentration,
            F::LatencyRegression,
            F::FailureShift,
        ],
        IncidentKind::SourceSilent => &[F::SilentSource, F::VolumeDrop],
        IncidentKind::DuplicateSurge => &[
            F::DuplicateSurge,
            F::FailureRateRise,
            F::FailureConcentration,
            F::VolumeSpike,
        ],
    }
}

/// Whether `finding` is about the incident `label`: a kind that explains it, a
/// subject that does not contradict it, and a window (when the finding states one)
/// that meets the incident's.
pub fn explains(finding: &Finding, label: &Label) -> bool {
    explaining_kinds(label.kind).contains(&finding.kind)
        && subject_agrees(finding, label)
        && window_of(finding).is_none_or(|(start, end)| {
            let slack = chrono::Duration::minutes(WINDOW_SLACK_MINUTES as i64);
            start < label.end + slack && label.start - slack < end
        })
}

fn subject_agrees(finding: &Finding, label: &Label) -> bool {
    let subject = &finding.subject;
    let agrees = |stated: &Option<String>, labelled: &Option<String>| match (stated, labelled) {
        (Some(stated), Some(labelled)) => stated == labelled,
        _ => true,
    };
    // A client id is the key's id, which the shipped configs name after the source.
    let client_agrees = subject
        .client_id
        .as_deref()
        .zip(label.source.as_deref())
        .is_none_or(|(client, source)| client.starts_with(source));
    agrees(&subject.source, &label.source)
        && agrees(&subject.page, &label.page)
        && agrees(&subject.field, &label.field)
        && agrees(&subject.endpoint, &label.endpoint)
        && client_agrees
}

fn window_of(finding: &Finding) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (start, end) = finding.window.as_ref()?;
    let parse = |t: &str| DateTime::parse_from_rfc3339(t).ok().map(|t| t.to_utc());
    Some((parse(start)?, parse(end)?))
}

/// A per-incident target of the evaluation (docs/analyzer.md, "Evaluation").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// At least one finding is counted for the incident.
    Found,
    /// At most one finding is counted for it.
    OneFinding,
    /// Its closest window is within [`WINDOW_SLACK_MINUTES`] of its evidence window.
    Window,
}

/// How one incident fared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentScore {
    pub incident: String,
    pub day: NaiveDate,
    pub start: String,
    pub end: String,
    /// The first and last attempt the incident changed that day (absent when it
    /// changed none: then the window error is measured against `start`..`end`, or for
    /// a silence against the attempts around it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence_end: Option<String>,
    /// A silence's source: its last attempt before the silence and its first after,
    /// cut to the day ([`Label::observable`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_after: Option<String>,
    pub found: bool,
    /// Findings counted for this incident (1 is the target; more are fragments). A
    /// finding that could be about several incidents counts for one (see `owner`).
    pub findings: usize,
    /// The largest of start and end error, against the evidence window, of the closest
    /// finding that states a window, in minutes; absent when none does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_error_minutes: Option<f64>,
    /// The same against the labelled clock window (`start`..`end`), for comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_window_error_minutes: Option<f64>,
    /// The findings about it: `kind severity subject`.
    pub matched: Vec<String>,
    /// The targets it misses (empty: all met).
    pub missed: Vec<Target>,
}

/// A finding no injected incident explains.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unexplained {
    pub day: NaiveDate,
    pub kind: FindingKind,
    pub severity: Severity,
    pub summary: String,
}

/// What one analysed day contributes: its labels and the detectors' findings.
#[derive(Debug, Clone)]
pub struct DayResult {
    pub day: NaiveDate,
    pub labels: Vec<Label>,
    pub findings: Vec<Finding>,
}

/// The figures of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub days_analysed: usize,
    pub incidents: Vec<IncidentScore>,
    pub findings: usize,
    pub unexplained: Vec<Unexplained>,
    /// Found incidents / incidents (1 when there are none).
    pub recall: f64,
    /// Findings some incident explains / findings (1 when there are none).
    pub precision: f64,
    pub max_findings_per_incident: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_window_error_minutes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_label_window_error_minutes: Option<f64>,
    pub unexplained_high: usize,
}

pub fn score(days: &[DayResult]) -> Score {
    let mut incidents = Vec::new();
    let mut unexplained = Vec::new();
    let mut findings = 0;
    for day in days {
        findings += day.findings.len();
        let owners: Vec<Option<usize>> =
            day.findings.iter().map(|f| owner(f, &day.labels)).collect();
        incidents.extend(day.labels.iter().enumerate().map(|(n, label)| {
            let owned: Vec<&Finding> = day
                .findings
                .iter()
                .zip(&owners)
                .filter(|(_, owner)| **owner == Some(n))
                .map(|(f, _)| f)
                .collect();
            score_incident(label, &owned)
        }));
        unexplained.extend(
            day.findings
                .iter()
                .zip(&owners)
                .filter(|(_, owner)| owner.is_none())
                .map(|(f, _)| Unexplained {
                    day: day.day,
                    kind: f.kind,
                    severity: f.severity,
                    summary: f.summary.clone(),
                }),
        );
    }
    let found = incidents.iter().filter(|i| i.found).count();
    Score {
        days_analysed: days.len(),
        recall: ratio(found, incidents.len()),
        precision: ratio(findings - unexplained.len(), findings),
        max_findings_per_incident: incidents.iter().map(|i| i.findings).max().unwrap_or(0),
        max_window_error_minutes: incidents
            .iter()
            .filter_map(|i| i.window_error_minutes)
            .reduce(f64::max),
        max_label_window_error_minutes: incidents
            .iter()
            .filter_map(|i| i.label_window_error_minutes)
            .reduce(f64::max),
        unexplained_high: unexplained
            .iter()
            .filter(|u| u.severity == Severity::High)
            .count(),
        findings,
        incidents,
        unexplained,
    }
}

/// The one incident a finding is counted for, among those it explains: the one it
/// names most precisely — its labelled kind first, then the subject values it shares
/// with the incident, then a window that meets it. A failure concentration on a page
/// during a CRM outage belongs to the broken page, not to the outage.
fn owner(finding: &Finding, labels: &[Label]) -> Option<usize> {
    labels
        .iter()
        .enumerate()
        .filter(|(_, label)| explains(finding, label))
        .max_by_key(|(n, label)| {
            let primary = explaining_kinds(label.kind).first() == Some(&finding.kind);
            let windowed = window_of(finding).is_some();
            (
                primary,
                shared_subject(finding, label),
                windowed,
                usize::MAX - n,
            )
        })
        .map(|(n, _)| n)
}

/// How many subject values the finding states that equal the incident's.
fn shared_subject(finding: &Finding, label: &Label) -> usize {
    let subject = &finding.subject;
    let client_source = subject.client_id.as_ref().and_then(|client| {
        label
            .source
            .as_ref()
            .filter(|source| client.starts_with(source.as_str()))
    });
    [
        (&subject.source, &label.source),
        (&subject.page, &label.page),
        (&subject.field, &label.field),
        (&subject.endpoint, &label.endpoint),
    ]
    .iter()
    .filter(|(stated, labelled)| stated.is_some() && stated == labelled)
    .count()
        + usize::from(client_source.is_some())
}

/// The starts and the ends a window may have (each a closed range) to match an incident.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observable {
    pub starts: (DateTime<Utc>, DateTime<Utc>),
    pub ends: (DateTime<Utc>, DateTime<Utc>),
}

impl From<(DateTime<Utc>, DateTime<Utc>)> for Observable {
    fn from((start, end): (DateTime<Utc>, DateTime<Utc>)) -> Self {
        Self {
            starts: (start, start),
            ends: (end, end),
        }
    }
}

/// Of the findings that state a window, the closest one's larger distance (start or
/// end) from what `observable` allows, in minutes.
fn window_error(owned: &[&Finding], observable: Observable) -> Option<f64> {
    let minutes = |d: chrono::Duration| d.num_seconds().abs() as f64 / 60.0;
    let outside = |at: DateTime<Utc>, (low, high): (DateTime<Utc>, DateTime<Utc>)| {
        if at < low {
            minutes(low - at)
        } else if at > high {
            minutes(at - high)
        } else {
            0.0
        }
    };
    owned
        .iter()
        .filter_map(|f| window_of(f))
        .map(|(start, end)| outside(start, observable.starts).max(outside(end, observable.ends)))
        .reduce(f64::min)
}

fn score_incident(label: &Label, owned: &[&Finding]) -> IncidentScore {
    let window_error_minutes = window_error(owned, label.observable());
    let shown = |at: DateTime<Utc>| at.to_rfc3339();
    let missed = [
        (Target::Found, owned.is_empty()),
        (Target::OneFinding, owned.len() > 1),
        (
            Target::Window,
            window_error_minutes.is_some_and(|e| e > WINDOW_SLACK_MINUTES),
        ),
    ]
    .into_iter()
    .filter_map(|(target, missed)| missed.then_some(target))
    .collect();
    IncidentScore {
        incident: label.describe(),
        day: label.day,
        start: label.start.to_rfc3339(),
        end: label.end.to_rfc3339(),
        evidence_start: label.evidence.map(|e| shown(e.0)),
        evidence_end: label.evidence.map(|e| shown(e.1)),
        attempt_before: label.around.map(|a| shown(a.0)),
        attempt_after: label.around.map(|a| shown(a.1)),
        found: !owned.is_empty(),
        findings: owned.len(),
        window_error_minutes,
        label_window_error_minutes: window_error(owned, (label.start, label.end).into()),
        matched: owned
            .iter()
            .map(|f| format!("{} {:?} {}", f.kind.as_str(), f.severity, subject_text(f)))
            .collect(),
        missed,
    }
}

fn subject_text(finding: &Finding) -> String {
    serde_json::to_string(&finding.subject).unwrap_or_default()
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

impl Score {
    /// The targets this scenario misses, in words (empty: all met).
    pub fn misses(&self) -> Vec<String> {
        let mut misses = Vec::new();
        for incident in &self.incidents {
            let what = format!("{} on {}", incident.incident, incident.day);
            misses.extend(incident.missed.iter().map(|target| match target {
                Target::Found => format!("{what}: not found"),
                Target::OneFinding => format!("{what}: {} findings", incident.findings),
                Target::Window => format!(
                    "{what}: window off by {:.0} min",
                    incident.window_error_minutes.unwrap_or_default()
                ),
            }));
        }
        misses.extend(
            self.unexplained
                .iter()
                .filter(|u| u.severity == Severity::High)
                .map(|u| format!("unexplained High finding on {}: {}", u.day, u.summary)),
        );
        misses
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::analyze::finding::Subject;

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        format!("2026-11-02T{hour:02}:{minute:02}:00Z")
            .parse()
            .unwrap()
    }

    fn label(kind: IncidentKind, source: Option<&str>, from: u32, to: u32) -> Label {
        Label {
            kind,
            day: "2026-11-02".parse().unwrap(),
            start: at(from, 0),
            end: at(to, 0),
            evidence: None,
            around: None,
            day_start: at(0, 0),
            source: source.map(str::to_owned),
            page: None,
            field: None,
            endpoint: None,
        }
    }

    fn finding(kind: FindingKind, severity: Severity, window: Option<(u32, u32)>) -> Finding {
        Finding {
            kind,
            subject: Subject::default(),
            severity,
            confidence: 0.9,
            summary: kind.as_str().to_owned(),
            evidence: BTreeMap::new(),
            window: window.map(|(from, to)| (at(from, 0).to_rfc3339(), at(to, 0).to_rfc3339())),
            interval: None,
            changes: Vec::new(),
        }
    }

    #[test]
    fn the_first_explaining_kind_is_the_one_the_simulator_labels() {
        use IncidentKind as K;
        let every = [
            K::WrongKey,
            K::ForeignKey,
            K::BrokenField,
            K::BotBurst,
            K::CrmDown,
            K::CrmSlow,
            K::SourceSilent,
            K::NewPage,
            K::DuplicateSurge,
            K::RenamedForm,
        ];
        for kind in every {
            let first = explaining_kinds(kind)[0];
            assert_eq!(first.as_str(), kind.expected_finding(), "{kind:?}");
        }
    }

    #[test]
    fn a_finding_of_an_unrelated_kind_or_subject_explains_nothing() {
        let silent = label(IncidentKind::SourceSilent, Some("quiz"), 6, 18);
        let mut drop = finding(FindingKind::VolumeDrop, Severity::High, None);
        assert!(explains(&drop, &silent));
        drop.subject.source = Some("web_form".into());
        assert!(!explains(&drop, &silent), "another source");
        let renamed = label(IncidentKind::RenamedForm, Some("quiz"), 6, 18);
        drop.subject.source = Some("quiz".into());
        assert!(
            !explains(&drop, &renamed),
            "rejections are not a volume drop"
        );
    }

    #[test]
    fn a_window_far_from_the_incident_is_another_incident() {
        let outage = label(IncidentKind::CrmDown, None, 15, 16);
        let near = finding(
            FindingKind::DownstreamOutage,
            Severity::High,
            Some((15, 16)),
        );
        let far = finding(FindingKind::DownstreamOutage, Severity::High, Some((9, 10)));
        assert!(explains(&near, &outage));
        assert!(!explains(&far, &outage));
    }

    #[test]
    fn fragments_window_error_and_unexplained_highs_are_counted() {
        let outage = label(IncidentKind::CrmDown, None, 1, 3);
        let mut late = finding(FindingKind::DownstreamOutage, Severity::High, Some((1, 3)));
        late.window = Some((at(1, 10).to_rfc3339(), at(2, 55).to_rfc3339()));
        let second = finding(FindingKind::DownstreamOutage, Severity::High, Some((2, 3)));
        let stray = finding(FindingKind::SilentSource, Severity::High, None);
        let day = DayResult {
            day: outage.day,
            labels: vec![outage],
            findings: vec![late, second, stray],
        };
        let score = score(&[day]);
        assert_eq!(score.recall, 1.0);
        assert_eq!(score.max_findings_per_incident, 2);
        assert_eq!(
            score.max_window_error_minutes,
            Some(10.0),
            "the closest one"
        );
        assert_eq!(score.unexplained_high, 1);
        assert!((score.precision - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(score.incidents[0].missed, [Target::OneFinding]);
        let misses = score.misses();
        assert_eq!(misses.len(), 2, "{misses:?}");
    }

    #[test]
    fn a_missed_incident_and_a_late_window_miss_the_targets() {
        let outage = label(IncidentKind::CrmDown, None, 1, 3);
        let mut late = finding(FindingKind::DownstreamOutage, Severity::High, None);
        late.window = Some((at(1, 40).to_rfc3339(), at(3, 0).to_rfc3339()));
        let burst = label(IncidentKind::BotBurst, Some("quiz"), 14, 15);
        let day = DayResult {
            day: outage.day,
            labels: vec![outage, burst],
            findings: vec![late],
        };
        let score = score(&[day]);
        assert_eq!(score.recall, 0.5);
        assert_eq!(score.max_window_error_minutes, Some(40.0));
        assert_eq!(score.incidents[0].missed, [Target::Window]);
        assert_eq!(score.incidents[1].missed, [Target::Found]);
        let json = serde_json::to_value(&score.incidents[0]).unwrap();
        assert_eq!(json["missed"], serde_json::json!(["window"]));
        let misses = score.misses();
        assert!(misses.iter().any(|m| m.contains("window off by 40 min")));
        assert!(misses.iter().any(|m| m.contains("not found")));
    }

    #[test]
    fn the_window_error_is_measured_against_the_evidence_and_reported_against_the_label() {
        // A ramp labelled 06:00–22:00 whose first changed attempt came at 08:38.
        let mut ramp = label(IncidentKind::BrokenField, Some("web_form"), 6, 22);
        ramp.evidence = Some((at(8, 38), at(21, 55)));
        let mut rise = finding(FindingKind::GradualFailureRise, Severity::Medium, None);
        rise.window = Some((at(8, 40).to_rfc3339(), at(22, 0).to_rfc3339()));
        let silent = label(IncidentKind::SourceSilent, Some("quiz"), 10, 12);
        let mut gap = finding(FindingKind::SilentSource, Severity::High, None);
        gap.subject.source = Some("quiz".into());
        gap.window = Some((at(10, 5).to_rfc3339(), at(12, 0).to_rfc3339()));
        let score = score(&[DayResult {
            day: ramp.day,
            labels: vec![ramp, silent],
            findings: vec![rise, gap],
        }]);
        let ramp = &score.incidents[0];
        assert_eq!(ramp.window_error_minutes, Some(5.0));
        assert_eq!(ramp.label_window_error_minutes, Some(160.0));
        assert!(ramp.missed.is_empty(), "{:?}", ramp.missed);
        assert_eq!(
            ramp.evidence_start.as_deref(),
            Some("2026-11-02T08:38:00+00:00")
        );
        let silent = &score.incidents[1];
        assert_eq!(silent.evidence_start, None, "a silence changes no attempt");
        assert_eq!(silent.window_error_minutes, Some(5.0), "its label window");
        assert_eq!(silent.label_window_error_minutes, Some(5.0));
        assert_eq!(score.max_window_error_minutes, Some(5.0));
        assert_eq!(score.max_label_window_error_minutes, Some(160.0));
    }

    /// A silence labelled 06:00–18:00 of a source whose last attempt before it came at
    /// 04:40 and first after it at 18:10: any start from 04:00 to 06:00 and any end
    /// from 18:00 to 19:00 is what the hourly data can show.
    #[test]
    fn a_silence_is_measured_against_the_attempts_around_it() {
        let mut silent = label(IncidentKind::SourceSilent, Some("quiz"), 6, 18);
        silent.around = Some((at(4, 40), at(18, 10)));
        let window_error = |silent: &Label, from: (u32, u32), to: (u32, u32)| {
            let mut gap = finding(FindingKind::SilentSource, Severity::High, None);
            gap.subject.source = Some("quiz".into());
            gap.window = Some((at(from.0, from.1).to_rfc3339(), at(to.0, to.1).to_rfc3339()));
            let score = score(&[DayResult {
                day: silent.day,
                labels: vec![silent.clone()],
                findings: vec![gap],
            }]);
            let incident = &score.incidents[0];
            (
                incident.window_error_minutes,
                incident.label_window_error_minutes,
            )
        };
        assert_eq!(
            window_error(&silent, (5, 0), (18, 0)),
            (Some(0.0), Some(60.0))
        );
        assert_eq!(
            window_error(&silent, (4, 0), (19, 0)),
            (Some(0.0), Some(120.0))
        );
        assert_eq!(
            window_error(&silent, (3, 0), (19, 30)),
            (Some(60.0), Some(180.0))
        );
        // A zone at a half-hour offset has its hours at :30: the range is 04:30–06:00
        // and 18:00–18:30.
        let half_hour_zone = Label {
            day_start: at(0, 30),
            ..silent.clone()
        };
        assert_eq!(
            window_error(&half_hour_zone, (4, 30), (18, 30)).0,
            Some(0.0)
        );
        assert_eq!(window_error(&half_hour_zone, (4, 0), (19, 0)).0, Some(30.0));
    }

    #[test]
    fn a_finding_that_fits_two_incidents_counts_for_the_one_it_names() {
        let outage = label(IncidentKind::CrmSlow, None, 11, 12);
        let mut broken = label(IncidentKind::BrokenField, Some("web_form"), 8, 18);
        broken.page = Some("/pricing".into());
        let mut concentration = finding(FindingKind::FailureConcentration, Severity::High, None);
        concentration.subject.page = Some("/pricing".into());
        assert!(explains(&concentration, &outage) && explains(&concentration, &broken));
        let day = DayResult {
            day: outage.day,
            labels: vec![outage, broken],
            findings: vec![concentration],
        };
        let score = score(&[day]);
        assert_eq!(score.incidents[0].findings, 0);
        assert!(!score.incidents[0].found, "the outage is not found by it");
        assert_eq!(score.incidents[1].findings, 1);
    }

    #[test]
    fn no_incident_and_no_finding_meets_every_target() {
        let score = score(&[DayResult {
            day: "2026-11-02".parse().unwrap(),
            labels: vec![],
            findings: vec![],
        }]);
        assert_eq!((score.recall, score.precision), (1.0, 1.0));
        assert!(score.misses().is_empty());
    }
}
