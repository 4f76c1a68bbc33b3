//! Fits the day's facts and findings to the model's context, never silently.
//!
//! A busy day's facts are tens of thousands of characters; a small model's context is
//! 8k tokens. When everything does not fit, what goes in is chosen in this order:
//! 1. the scalar facts (totals, completeness, thresholds: every list emptied);
//! 2. the findings, most severe first (they are what the report is about);
//! 3. from every list of the facts, the entries that name a subject of a kept finding
//!    (its source, page, form, field, client, endpoint);
//! 4. then the first N entries of every list (they come ranked: busiest first), N as
//!    large as fits.
//!
//! Every list that lost entries, and every finding left out, is named in `left_out`,
//! which the prompt shows the model and the report's `scope.not_analysed` records.

use std::collections::BTreeSet;

use serde_json::Value;

use super::finding::Finding;

/// The facts and findings that fit, and what did not.
#[derive(Debug, Clone, PartialEq)]
pub struct Compacted {
    pub facts: Value,
    pub findings: Vec<Finding>,
    /// One line per list or finding set that lost entries, e.g. `by_form (3 of 40)`.
    pub left_out: Vec<String>,
}

/// Characters of `value` as compact JSON: the measure the budget is in.
pub fn json_chars<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    serde_json::to_string(value).map_or(usize::MAX, |text| text.len())
}

/// Not even the scalar facts fit: the context is too small for this prompt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the day's scalar facts alone take {needed} characters, over the {budget} the model's context leaves for them"
)]
pub struct TooSmall {
    pub needed: usize,
    pub budget: usize,
}

/// The facts and findings in at most `budget` characters of compact JSON (together).
pub fn compact(facts: &Value, findings: &[Finding], budget: usize) -> Result<Compacted, TooSmall> {
    if json_chars(facts) + json_chars(&findings) <= budget {
        return Ok(Compacted {
            facts: facts.clone(),
            findings: findings.to_vec(),
            left_out: Vec::new(),
        });
    }
    let lists = lists_of(facts);
    let skeleton = with_lists(facts, &lists, |_, _| false);
    let needed = json_chars(&skeleton) + 2;
    if needed > budget {
        return Err(TooSmall { needed, budget });
    }
    let room = budget.saturating_sub(json_chars(&skeleton));
    let kept_findings = findings_within(findings, room);
    let names = subject_names(&kept_findings);
    let room = budget.saturating_sub(json_chars(&kept_findings));
    let named = |item: &Value| mentions_any(item, &names);
    let keep = |top: usize| with_lists(facts, &lists, |index, item| index < top || named(item));
    let longest = lists.iter().map(|(_, len)| *len).max().unwrap_or(0);
    let mut best = keep(0);
    if json_chars(&best) > room {
        // Even the named entries do not fit: the scalars alone.
        best = skeleton;
    } else {
        for top in 1..=longest {
            let candidate = keep(top);
            if json_chars(&candidate) > room {
                break;
            }
            best = candidate;
        }
    }
    let mut left_out = Vec::new();
    if kept_findings.len() < findings.len() {
        left_out.push(format!(
            "findings ({} of {}, the least severe left out)",
            kept_findings.len(),
            findings.len()
        ));
    }
    for (path, len) in &lists {
        let given = lookup(&best, path)
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if given < *len {
            left_out.push(format!("{} ({given} of {len})", path.join(".")));
        }
    }
    Ok(Compacted {
        facts: best,
        findings: kept_findings,
        left_out,
    })
}

/// The most severe findings (they come sorted) whose JSON fits `room`.
fn findings_within(findings: &[Finding], room: usize) -> Vec<Finding> {
    let mut used = 2; // the brackets
    let mut kept = Vec::new();
    for finding in findings {
        let size = json_chars(finding) + 1;
        if used + size > room {
            break;
        }
        used += size;
        kept.push(finding.clone());
    }
    kept
}

/// Every string of the findings' subjects: the names the facts' lists are searched for.
fn subject_names(findings: &[Finding]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for finding in findings {
        if let Ok(Value::Object(subject)) = serde_json::to_value(&finding.subject) {
            names.extend(
                subject
                    .values()
                    .filter_map(Value::as_str)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    names
}

/// Whether any string directly inside `item` (an entry of a list) is one of `names`.
fn mentions_any(item: &Value, names: &BTreeSet<String>) -> bool {
    match item {
        Value::Object(fields) => fields
            .values()
            .any(|value| value.as_str().is_some_and(|text| names.contains(text))),
        _ => false,
    }
}

/// The lists of objects in `facts` (top level and one object down), with their lengths:
/// the parts of the facts that grow with the day's traffic.
fn lists_of(facts: &Value) -> Vec<(Vec<String>, usize)> {
    let mut lists = Vec::new();
    let Value::Object(top) = facts else {
        return lists;
    };
    for (key, value) in top {
        match value {
            Value::Array(items) if items.iter().any(Value::is_object) => {
                lists.push((vec![key.clone()], items.len()));
            }
            Value::Object(inner) => {
                for (sub, value) in inner {
                    if let Value::Array(items) = value
                        && items.iter().any(Value::is_object)
                    {
                        lists.push((vec![key.clone(), sub.clone()], items.len()));
                    }
                }
            }
            _ => {}
        }
    }
    lists
}

/// `facts` with each list of `lists` cut to the entries `keep(index, entry)` accepts.
fn with_lists(
    facts: &Value,
    lists: &[(Vec<String>, usize)],
    mut keep: impl FnMut(usize, &Value) -> bool,
) -> Value {
    let mut out = facts.clone();
    for (path, _) in lists {
        if let Some(Value::Array(items)) = lookup_mut(&mut out, path) {
            let kept: Vec<Value> = items
                .iter()
                .enumerate()
                .filter(|(index, item)| keep(*index, item))
                .map(|(_, item)| item.clone())
                .collect();
            *items = kept;
        }
    }
    out
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(key))
}

fn lookup_mut<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter()
        .try_fold(value, |value, key| value.get_mut(key.as_str()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::analyze::{FindingKind, Severity, Subject};

    fn facts() -> Value {
        json!({
            "day": "2024-05-01",
            "totals": {"attempts": 5000, "failed": 40},
            "by_source": (0..6).map(|i| json!({"name": format!("source-{i}"), "attempts": 1000 - i})).collect::<Vec<_>>(),
            "by_form": (0..50).map(|i| json!({"name": format!("form-{i}"), "attempts": 100 - i})).collect::<Vec<_>>(),
            "shape": {"hourly": (0..24).map(|h| json!({"hour_index": h, "attempts": 200})).collect::<Vec<_>>(), "burst_minutes": 0},
        })
    }

    fn finding(form: &str, severity: Severity) -> Finding {
        Finding {
            kind: FindingKind::NewPage,
            subject: Subject {
                form_id: Some(form.into()),
                ..Subject::default()
            },
            severity,
            confidence: 0.9,
            summary: format!("form {form} is new."),
            evidence: BTreeMap::from([("attempts".to_owned(), 51.0)]),
            window: None,
            interval: None,
            changes: Vec::new(),
        }
    }

    #[test]
    fn what_fits_is_left_alone() {
        let findings = [finding("form-49", Severity::High)];
        let compacted = compact(&facts(), &findings, 1_000_000).expect("fits");
        assert_eq!(compacted.facts, facts());
        assert_eq!(compacted.findings.len(), 1);
        assert!(compacted.left_out.is_empty());
    }

    #[test]
    fn findings_and_the_entries_they_name_come_first_and_the_rest_is_listed() {
        let findings = [finding("form-49", Severity::High)];
        let budget = json_chars(&facts()) / 2;
        let compacted = compact(&facts(), &findings, budget).expect("fits");
        assert!(json_chars(&compacted.facts) + json_chars(&compacted.findings) <= budget);
        assert_eq!(compacted.findings.len(), 1);
        let forms = compacted.facts["by_form"].as_array().unwrap();
        assert!(
            forms.iter().any(|f| f["name"] == "form-49"),
            "the named entry stays"
        );
        assert!(
            forms.iter().any(|f| f["name"] == "form-0"),
            "then the top ones"
        );
        assert!(forms.len() < 50);
        assert_eq!(
            compacted.facts["totals"],
            facts()["totals"],
            "scalars are kept"
        );
        assert!(
            compacted
                .left_out
                .iter()
                .any(|line| line.starts_with("by_form (") && line.ends_with(" of 50)")),
            "{:?}",
            compacted.left_out
        );
        assert!(
            compacted
                .left_out
                .iter()
                .any(|line| line.starts_with("shape.hourly ("))
        );
    }

    #[test]
    fn the_least_severe_findings_go_when_even_they_do_not_fit() {
        let findings: Vec<Finding> = (0..40)
            .map(|i| {
                finding(
                    &format!("form-{i}"),
                    if i < 5 { Severity::High } else { Severity::Low },
                )
            })
            .collect();
        let skeleton = json_chars(&with_lists(&facts(), &lists_of(&facts()), |_, _| false));
        let budget = skeleton + json_chars(&&findings[..5]) + 10;
        let compacted = compact(&facts(), &findings, budget).expect("fits");
        assert_eq!(compacted.findings.len(), 5);
        assert_eq!(compacted.findings[..], findings[..5]);
        assert_eq!(
            compacted.left_out[0],
            "findings (5 of 40, the least severe left out)"
        );
    }
}
