//! `lead-lab eval`'s table: one line per scenario, then what each incident got and
//! the findings nothing explains.

use super::ScenarioEval;
use super::score::{IncidentScore, WINDOW_SLACK_MINUTES};

pub fn table(results: &[ScenarioEval]) -> String {
    let mut text = format!(
        "{:<22} {:>9} {:>7} {:>9} {:>10} {:>10} {:>11} {:>13} {:>12}  {}\n",
        "scenario",
        "incidents",
        "recall",
        "findings",
        "precision",
        "max/incid",
        "max win err",
        "(vs label)",
        "unexpl. High",
        "targets"
    );
    for result in results {
        let s = &result.score;
        let misses = s.misses();
        text.push_str(&format!(
            "{:<22} {:>9} {:>6.0}% {:>9} {:>9.0}% {:>10} {:>11} {:>13} {:>12}  {}\n",
            result.scenario,
            s.incidents.len(),
            s.recall * 100.0,
            s.findings,
            s.precision * 100.0,
            s.max_findings_per_incident,
            minutes(s.max_window_error_minutes),
            minutes(s.max_label_window_error_minutes),
            s.unexplained_high,
            if misses.is_empty() {
                "met".to_owned()
            } else {
                format!("{} missed", misses.len())
            }
        ));
    }
    for result in results {
        text.push_str(&details(result));
    }
    text.push_str(&format!(
        "\ntargets: recall 100 %, at most 1 finding per incident, window error ≤ {WINDOW_SLACK_MINUTES:.0} min (against the first and last attempt the incident changed), no unexplained High finding\n"
    ));
    text
}

fn details(result: &ScenarioEval) -> String {
    let s = &result.score;
    let mut text = format!(
        "\n{} ({}, {}, seed {}, {} days from {}, {} attempts, {} days analysed)\n",
        result.scenario,
        result.file,
        result.time_zone,
        result.seed,
        result.days,
        result.first_day,
        result.attempts,
        s.days_analysed
    );
    if let Some(database) = &result.database {
        text.push_str(&format!("  kept database {database}\n"));
    }
    for incident in &s.incidents {
        text.push_str(&format!(
            "  {} {} {}: {} finding(s), window error {} (vs label {}), evidence {}\n",
            if incident.found { "found " } else { "MISSED" },
            incident.day,
            incident.incident,
            incident.findings,
            minutes(incident.window_error_minutes),
            minutes(incident.label_window_error_minutes),
            evidence(incident)
        ));
        for matched in &incident.matched {
            text.push_str(&format!("      {matched}\n"));
        }
    }
    for unexplained in &s.unexplained {
        text.push_str(&format!(
            "  unexplained {} {} {:?}: {}\n",
            unexplained.day,
            unexplained.kind.as_str(),
            unexplained.severity,
            unexplained.summary
        ));
    }
    text
}

/// `08:38–21:55` (UTC); for a silence the source's attempts around it; `none` for
/// another incident that changed no attempt.
fn evidence(incident: &IncidentScore) -> String {
    let clock = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc().format("%H:%M").to_string())
    };
    let pair = |start: &Option<String>, end: &Option<String>| clock(start).zip(clock(end));
    if let Some((start, end)) = pair(&incident.evidence_start, &incident.evidence_end) {
        return format!("{start}–{end} UTC");
    }
    match pair(&incident.attempt_before, &incident.attempt_after) {
        Some((before, after)) => {
            format!(
                "none; the source's attempts around it (or the day's ends) {before}, {after} UTC"
            )
        }
        None => "none (label window used)".to_owned(),
    }
}

fn minutes(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |m| format!("{m:.0} min"))
}
