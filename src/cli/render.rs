//! The report as a person reads it in a terminal (`lead-lab analyze`).

use std::fmt::Write as _;

use serde_json::Value;

use crate::http::analyses::RunWithSummary;

pub fn text(view: &RunWithSummary) -> String {
    let run = &view.run;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Analysis of {} — run {} {}",
        run.day, run.run_id, run.status
    );
    let _ = writeln!(
        out,
        "  attempts {}, facts {} ms, model {} ms, total {} ms{}",
        run.attempts,
        run.facts_ms,
        run.llm_ms,
        run.total_ms,
        if run.error.is_empty() {
            String::new()
        } else {
            format!("\n  note: {}", run.error)
        }
    );
    let Some(s) = &view.summary else {
        let _ = writeln!(out, "\nNo report was written.");
        return out;
    };
    let _ = writeln!(
        out,
        "  report v{} by {} ({}), confidence {}\n",
        s.version,
        s.generator,
        if s.generator == "model" {
            &s.model
        } else {
            "no model"
        },
        s.confidence
    );
    if s.generator == "model"
        && let Some(note) = crate::analyze::llm::dev_model_note(&s.model)
    {
        let _ = writeln!(out, "  note: {note}\n");
    }
    for (title, body) in [
        ("Summary", &s.executive_summary),
        ("User behaviour", &s.user_behavior),
        ("System behaviour", &s.system_behavior),
    ] {
        let _ = writeln!(out, "{title}\n  {body}\n");
    }
    section(
        &mut out,
        "Misconfiguration signals",
        &s.misconfiguration_signals,
        |v| {
            format!(
                "[{}] {}: {}",
                str_of(&v["severity"]),
                str_of(&v["signal"]),
                str_of(&v["evidence"])
            )
        },
    );
    section(&mut out, "Findings", &s.findings, |v| {
        format!(
            "[{}] {}: {}",
            str_of(&v["severity"]),
            str_of(&v["kind"]),
            str_of(&v["summary"])
        )
    });
    if !s.confidence_reasons.is_empty() {
        let _ = writeln!(out, "Confidence: {}", s.confidence_reasons.join(" "));
    }
    if !s.grounding_violations.is_empty() {
        let _ = writeln!(
            out,
            "Not found in the facts: {}",
            s.grounding_violations.join("; ")
        );
    }
    let _ = writeln!(out, "Scope: {}", s.scope);
    out
}

fn section(out: &mut String, title: &str, list: &Value, line: impl Fn(&Value) -> String) {
    let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
    let _ = writeln!(out, "{title} ({})", items.len());
    for item in items {
        let _ = writeln!(out, "  - {}", line(item));
    }
    let _ = writeln!(out);
}

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}
