use std::path::Path;

use super::*;

fn shipped(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    Scenario::load(&path).expect("a shipped scenario loads")
}

fn span(days: u32) -> Span {
    Span {
        first_day: "2026-11-02".parse().unwrap(),
        days,
    }
}

#[test]
fn every_shipped_scenario_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut loaded = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        loaded += 1;
    }
    assert!(loaded >= 8, "{loaded} scenarios");
}

#[test]
fn a_window_ending_before_it_starts_ends_on_the_next_local_day() {
    let scenario = shipped("berlin-midnight-outage.toml");
    let windows = windows(&scenario, span(4));
    let w = &windows[0];
    // 23:00 and 01:30 in Berlin (UTC+1 in November).
    assert_eq!(w.start.to_rfc3339(), "2026-11-04T22:00:00+00:00");
    assert_eq!(w.end.to_rfc3339(), "2026-11-05T00:30:00+00:00");
}

#[test]
fn a_ramp_breaks_more_leads_as_its_window_goes_on() {
    let scenario = shipped("gradual-field-ramp.toml");
    let planned = plan(&scenario, span(4), 1).requests;
    let window = &windows(&scenario, span(4))[0];
    let broken_share = |from: f64, to: f64| {
        let on_page: Vec<&Lead> = planned
            .iter()
            .filter(|p| window.contains(p.at) && (from..to).contains(&window.progress(p.at)))
            .filter_map(|p| match &p.request {
                Request::Json(lead) if lead.page == "/contact" => Some(lead),
                _ => None,
            })
            .collect();
        let broken = on_page
            .iter()
            .filter(|l| l.phone.as_deref() == Some("call-me"))
            .count();
        broken as f64 / on_page.len().max(1) as f64
    };
    let early = broken_share(0.0, 0.25);
    let late = broken_share(0.75, 1.0);
    assert!(
        early < 0.25 && early < late / 2.0,
        "early {early}, late {late}"
    );
    assert!(late > 0.4, "late {late}");
    assert!(window.broken_share(window.start) == 0.0);
    assert!((window.broken_share(window.end) - 0.6).abs() < 1e-9);
}

#[test]
fn the_evidence_of_a_ramp_runs_from_its_first_broken_lead_to_its_last() {
    let scenario = shipped("gradual-field-ramp.toml");
    let Plan { requests, evidence } = plan(&scenario, span(4), 1);
    let window = &windows(&scenario, span(4))[0];
    let broken: Vec<DateTime<Utc>> = requests
        .iter()
        .filter(|p| match &p.request {
            Request::Json(lead) => lead.phone.as_deref() == Some("call-me"),
            _ => false,
        })
        .map(|p| p.at)
        .collect();
    let (first, last) = evidence[0]
        .span_within(window.start, window.end)
        .expect("the ramp broke some leads");
    assert_eq!((first, last), (broken[0], broken[broken.len() - 1]));
    assert_eq!(
        evidence[0].0.len(),
        broken.len(),
        "every broken lead, only them"
    );
    // The ramp starts from nothing: its first broken lead comes well after 06:00.
    assert!(first - window.start > Duration::minutes(20), "{first}");
    assert_eq!(
        evidence[0].span_within(window.end, window.end + Duration::days(1)),
        None
    );
}

#[test]
fn an_outage_is_evidenced_by_the_deliveries_inside_it_and_a_silence_by_the_attempts_around_it() {
    let scenario = shipped("default.toml");
    let Plan { requests, evidence } = plan(&scenario, span(7), 1);
    let windows = windows(&scenario, span(7));
    for (window, evidence) in windows.iter().zip(&evidence) {
        let span = evidence.span_within(window.start, window.end);
        if window.incident.kind != IncidentKind::SourceSilent {
            assert_eq!(evidence.around(), None, "{:?}", window.incident.kind);
        }
        match window.incident.kind {
            IncidentKind::SourceSilent => {
                assert_eq!(span, None);
                let of_source: Vec<DateTime<Utc>> = requests
                    .iter()
                    .filter(|p| Some(&p.source) == window.incident.source.as_ref())
                    .map(|p| p.at)
                    .collect();
                let before = of_source.iter().rev().find(|at| **at < window.start);
                let after = of_source.iter().find(|at| **at >= window.end);
                assert!(before.is_some() && after.is_some());
                assert_eq!(evidence.around(), Some((before.copied(), after.copied())));
                assert!(!of_source.iter().any(|at| window.contains(*at)));
            }
            IncidentKind::CrmDown | IncidentKind::CrmSlow => {
                let inside: Vec<DateTime<Utc>> = requests
                    .iter()
                    .map(|p| p.at)
                    .filter(|at| window.contains(*at))
                    .collect();
                let (first, last) = span.expect("leads were delivered into the outage");
                assert!(inside.contains(&first) && inside.contains(&last));
                assert!(first - window.start < Duration::minutes(5), "{first}");
            }
            _ => {
                let (first, last) = span.expect("every other incident changes attempts");
                assert!(window.contains(first) && window.contains(last));
            }
        }
    }
}

#[test]
fn an_endpoint_incident_breaks_only_that_endpoint() {
    let scenario = shipped("form-rejections.toml");
    let planned = plan(&scenario, span(4), 1).requests;
    let window = &windows(&scenario, span(4))[0];
    let inside = planned
        .iter()
        .filter(|p| p.source == "funnel_page" && window.contains(p.at));
    let (mut forms, mut json) = (0, 0);
    for p in inside {
        match &p.request {
            Request::Form { lead, .. } => {
                assert_eq!(lead.consent, None, "every form post lacks consent");
                forms += 1;
            }
            Request::Json(lead) => {
                assert_eq!(lead.consent, Some(true), "JSON leads are untouched");
                json += 1;
            }
            Request::Batch(_) => {}
        }
    }
    assert!(forms > 50 && json > 30, "forms {forms}, json {json}");
}

#[test]
fn day_factors_scale_each_days_volume_and_renamed_forms_post_elsewhere() {
    let scenario = shipped("busy-renamed-form.toml");
    let planned = plan(&scenario, span(4), 1).requests;
    let per_day = |offset: i64| {
        let day = span(4).first_day + Duration::days(offset);
        planned.iter().filter(|p| p.at.date_naive() == day).count() as f64
    };
    let ratio = per_day(1) / per_day(0);
    assert!((ratio - 1.1 / 0.9).abs() < 0.08, "day 1 / day 0 = {ratio}");
    let window = &windows(&scenario, span(4))[0];
    let ids: std::collections::BTreeSet<&str> = planned
        .iter()
        .filter(|p| window.contains(p.at))
        .filter_map(|p| match &p.request {
            Request::Form { form_id, .. } => Some(form_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        ["demo-request-v2", "pricing-contact-v2"]
    );
}
