//! The day's report: what the model is asked to write (its JSON Schema goes to Ollama as
//! `format`) and what the rules write when the model cannot.
//!
//! Parsing is strict: unknown fields, missing fields, values outside the enums and text
//! longer than its bound are all errors, reported as such so the caller can ask again or
//! fall back. (The old system stored whatever came back and crashed on an overlong
//! confidence value.)

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use super::finding::Severity;

/// Bounds of the report's text, in characters, and of its lists. Generous for a day's
/// narration, small enough that a runaway answer is caught rather than stored.
pub const MAX_SUMMARY_CHARS: usize = 1500;
pub const MAX_SECTION_CHARS: usize = 2000;
pub const MAX_SIGNALS: usize = 10;
pub const MAX_SIGNAL_CHARS: usize = 200;
pub const MAX_EVIDENCE_CHARS: usize = 600;
pub const MAX_REASONS: usize = 8;
pub const MAX_REASON_CHARS: usize = 300;
pub const MAX_DAY_CHARS: usize = 10;
pub const MAX_TIME_ZONE_CHARS: usize = 64;
pub const MAX_SOURCES: usize = 50;
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_COMPLETENESS_CHARS: usize = 300;
pub const MAX_NOT_ANALYSED: usize = 10;
pub const MAX_NOT_ANALYSED_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub executive_summary: String,
    pub user_behavior: String,
    pub system_behavior: String,
    pub misconfiguration_signals: Vec<Signal>,
    pub confidence: Confidence,
    pub scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    pub signal: String,
    pub evidence: String,
    pub severity: Severity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfidenceLevel {
    Low,
    Medium,
    High,
}

impl ConfidenceLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confidence {
    pub level: ConfidenceLevel,
    pub reasons: Vec<String>,
}

impl Confidence {
    /// Caps the level at `cap` and adds `reason`, the last one giving way when the list
    /// is full (what the analyzer adds matters more than the model's last word).
    pub fn qualify(&mut self, cap: ConfidenceLevel, reason: String) {
        self.level = self.level.min(cap);
        if self.reasons.len() >= MAX_REASONS {
            self.reasons.pop();
        }
        self.reasons.push(reason);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// The calendar day, `YYYY-MM-DD`.
    pub day: String,
    pub time_zone: String,
    pub sources_covered: Vec<String>,
    pub data_completeness: String,
    pub not_analysed: Vec<String>,
}

/// Who wrote a report: the model, or the rules when the model could not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Generator {
    Model,
    Rules,
}

impl Generator {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Rules => "rules",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the answer is not a report: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{field} has {len} characters, at most {max} allowed")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("{field} has {len} entries, at most {max} allowed")]
    TooMany {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("{field} is empty")]
    Empty { field: String },
    #[error("{field} is {value:?}, which is not one of {allowed}")]
    NotAllowed {
        field: String,
        value: String,
        allowed: String,
    },
}

impl Report {
    /// Parses a model's answer strictly: the schema, then the bounds.
    pub fn parse(text: &str) -> Result<Self, ReportError> {
        let report: Report = serde_json::from_str(text)?;
        report.validate()?;
        Ok(report)
    }

    /// Checks the bounds serde cannot: text lengths and list sizes.
    pub fn validate(&self) -> Result<(), ReportError> {
        required(
            "executive_summary",
            &self.executive_summary,
            MAX_SUMMARY_CHARS,
        )?;
        required("user_behavior", &self.user_behavior, MAX_SECTION_CHARS)?;
        required("system_behavior", &self.system_behavior, MAX_SECTION_CHARS)?;
        at_most(
            "misconfiguration_signals",
            self.misconfiguration_signals.len(),
            MAX_SIGNALS,
        )?;
        for (i, signal) in self.misconfiguration_signals.iter().enumerate() {
            let field = format!("misconfiguration_signals[{i}]");
            required(&format!("{field}.signal"), &signal.signal, MAX_SIGNAL_CHARS)?;
            required(
                &format!("{field}.evidence"),
                &signal.evidence,
                MAX_EVIDENCE_CHARS,
            )?;
        }
        at_most(
            "confidence.reasons",
            self.confidence.reasons.len(),
            MAX_REASONS,
        )?;
        for (i, reason) in self.confidence.reasons.iter().enumerate() {
            required(
                &format!("confidence.reasons[{i}]"),
                reason,
                MAX_REASON_CHARS,
            )?;
        }
        self.scope.validate()
    }
}

impl Report {
    /// What the grammar of a schema cannot enforce on every server: that the sources
    /// covered are sources of the day (an enum-like string list). Servers that ignore
    /// the schema's `enum`, or honour it loosely, are caught here.
    pub fn validate_sources(&self, sources: &[String]) -> Result<(), ReportError> {
        for (i, source) in self.scope.sources_covered.iter().enumerate() {
            if !sources.contains(source) {
                return Err(ReportError::NotAllowed {
                    field: format!("scope.sources_covered[{i}]"),
                    value: source.clone(),
                    allowed: sources.join(", "),
                });
            }
        }
        Ok(())
    }
}

impl Scope {
    fn validate(&self) -> Result<(), ReportError> {
        required("scope.day", &self.day, MAX_DAY_CHARS)?;
        required("scope.time_zone", &self.time_zone, MAX_TIME_ZONE_CHARS)?;
        at_most(
            "scope.sources_covered",
            self.sources_covered.len(),
            MAX_SOURCES,
        )?;
        for (i, source) in self.sources_covered.iter().enumerate() {
            required(
                &format!("scope.sources_covered[{i}]"),
                source,
                MAX_NAME_CHARS,
            )?;
        }
        required(
            "scope.data_completeness",
            &self.data_completeness,
            MAX_COMPLETENESS_CHARS,
        )?;
        at_most(
            "scope.not_analysed",
            self.not_analysed.len(),
            MAX_NOT_ANALYSED,
        )?;
        for (i, item) in self.not_analysed.iter().enumerate() {
            required(
                &format!("scope.not_analysed[{i}]"),
                item,
                MAX_NOT_ANALYSED_CHARS,
            )?;
        }
        Ok(())
    }
}

fn required(field: &str, text: &str, max: usize) -> Result<(), ReportError> {
    let len = text.chars().count();
    if text.trim().is_empty() {
        Err(ReportError::Empty {
            field: field.to_owned(),
        })
    } else if len > max {
        Err(ReportError::TooLong {
            field: field.to_owned(),
            len,
            max,
        })
    } else {
        Ok(())
    }
}

fn at_most(field: &str, len: usize, max: usize) -> Result<(), ReportError> {
    if len > max {
        Err(ReportError::TooMany {
            field: field.to_owned(),
            len,
            max,
        })
    } else {
        Ok(())
    }
}

fn text() -> Value {
    json!({ "type": "string" })
}

fn list(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

fn levels() -> Value {
    json!({ "type": "string", "enum": ["low", "medium", "high"] })
}

/// A closed object: every property required, no others allowed.
fn object(properties: Value) -> Value {
    let required: Vec<&String> = properties
        .as_object()
        .map(|props| props.keys().collect())
        .unwrap_or_default();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// The JSON Schema of [`Report`], sent as Ollama's `format` so the model's grammar can
/// only produce this shape. Written by hand to match the struct exactly (a test checks
/// the two agree).
///
/// The length bounds are left out on purpose: Ollama compiles the schema into a
/// llama.cpp grammar, where `maxLength`/`maxItems` become counted repetitions that the
/// grammar parser rejects from about 2000 (less when nested), failing every request with
/// a 400. The bounds are stated in the prompt and enforced by [`Report::validate`].
pub fn json_schema() -> Value {
    object(json!({
        "executive_summary": text(),
        "user_behavior": text(),
        "system_behavior": text(),
        "misconfiguration_signals": list(object(json!({
            "signal": text(),
            "evidence": text(),
            "severity": levels(),
        }))),
        "confidence": object(json!({
            "level": levels(),
            "reasons": list(text()),
        })),
        "scope": object(json!({
            "day": text(),
            "time_zone": text(),
            "sources_covered": list(text()),
            "data_completeness": text(),
            "not_analysed": list(text()),
        })),
    }))
}

/// Answer budgets (tokens) at or below which the schema also bounds every text and list,
/// so the grammar itself stops a small model before the budget: a 135M model otherwise
/// rambles inside one string until it is cut off. Larger budgets keep the schema free of
/// counted repetitions (see [`json_schema`]).
pub const BOUNDED_ANSWER_TOKENS: u32 = 2048;

/// [`json_schema`] for one day's narration: `scope.sources_covered` restricted to the
/// day's sources, which a grammar can enforce (an `enum`; with no sources it is left
/// free), and, for a small answer budget, lengths and list sizes that fit the budget
/// (each at most the bound [`Report::validate`] enforces).
pub fn json_schema_for(sources: &[String], answer_tokens: u32) -> Value {
    let mut schema = json_schema();
    if !sources.is_empty() {
        schema["properties"]["scope"]["properties"]["sources_covered"]["items"] =
            json!({ "type": "string", "enum": sources });
    }
    if answer_tokens <= BOUNDED_ANSWER_TOKENS {
        bound(&mut schema, answer_tokens);
        if !sources.is_empty() {
            // An enum alone lets a looping model repeat one source until it is cut off.
            schema["properties"]["scope"]["properties"]["sources_covered"]["maxItems"] =
                json!(sources.len());
        }
    }
    schema
}

/// Shares of the answer's characters per text (lists: per item, at most 3 items).
fn bound(schema: &mut Value, answer_tokens: u32) {
    // Digits are a token each (a model may well fill a text with timestamps), so one
    // character a token, less a sixth for the JSON around the texts.
    let chars = f64::from(answer_tokens) * 0.85;
    let share = |part: f64, max: usize| ((chars * part) as usize).clamp(16, max);
    let props = &mut schema["properties"];
    for (field, part, max) in [
        ("executive_summary", 0.2, MAX_SUMMARY_CHARS),
        ("user_behavior", 0.15, MAX_SECTION_CHARS),
        ("system_behavior", 0.15, MAX_SECTION_CHARS),
    ] {
        props[field]["maxLength"] = json!(share(part, max));
    }
    let signals = &mut props["misconfiguration_signals"];
    signals["maxItems"] = json!(3);
    signals["items"]["properties"]["signal"]["maxLength"] = json!(share(0.03, MAX_SIGNAL_CHARS));
    signals["items"]["properties"]["evidence"]["maxLength"] =
        json!(share(0.06, MAX_EVIDENCE_CHARS));
    let reasons = &mut props["confidence"]["properties"]["reasons"];
    reasons["maxItems"] = json!(3);
    reasons["items"]["maxLength"] = json!(share(0.03, MAX_REASON_CHARS));
    let scope = &mut props["scope"]["properties"];
    scope["day"]["maxLength"] = json!(MAX_DAY_CHARS);
    scope["time_zone"]["maxLength"] = json!(MAX_TIME_ZONE_CHARS);
    scope["data_completeness"]["maxLength"] = json!(share(0.05, MAX_COMPLETENESS_CHARS));
    scope["not_analysed"]["maxItems"] = json!(3);
    scope["not_analysed"]["items"]["maxLength"] = json!(share(0.03, MAX_NOT_ANALYSED_CHARS));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sources_covered_are_limited_to_the_days_sources() {
        let sources = vec!["quiz".to_owned(), "web_form".to_owned()];
        let schema = json_schema_for(&sources, 3072);
        assert_eq!(
            schema["properties"]["scope"]["properties"]["sources_covered"]["items"]["enum"],
            json!(["quiz", "web_form"])
        );
        assert_eq!(json_schema_for(&[], 3072), json_schema());
        let report = Report::parse(&sample().to_string()).expect("valid");
        assert!(report.validate_sources(&sources).is_ok());
        let err = report
            .validate_sources(&["web_form".to_owned()])
            .expect_err("quiz");
        assert!(
            err.to_string().contains("scope.sources_covered[0]"),
            "{err}"
        );
    }

    pub(crate) fn sample() -> Value {
        json!({
            "executive_summary": "The day saw 120 attempts.",
            "user_behavior": "Most attempts came from quiz.",
            "system_behavior": "Delivery held up.",
            "misconfiguration_signals": [
                {"signal": "Key used for the wrong source", "evidence": "12 attempts", "severity": "medium"}
            ],
            "confidence": {"level": "high", "reasons": ["complete data"]},
            "scope": {
                "day": "2024-05-01",
                "time_zone": "UTC",
                "sources_covered": ["quiz"],
                "data_completeness": "complete",
                "not_analysed": []
            }
        })
    }

    #[test]
    fn parses_a_valid_report() {
        let report = Report::parse(&sample().to_string()).expect("valid");
        assert_eq!(report.confidence.level, ConfidenceLevel::High);
        assert_eq!(
            report.misconfiguration_signals[0].severity,
            Severity::Medium
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut value = sample();
        value["recommendations"] = json!(["buy more servers"]);
        assert!(matches!(
            Report::parse(&value.to_string()),
            Err(ReportError::Json(_))
        ));
        let mut value = sample();
        value["confidence"]["score"] = json!(0.9);
        assert!(Report::parse(&value.to_string()).is_err());
    }

    #[test]
    fn values_outside_the_enums_are_refused() {
        let mut value = sample();
        value["confidence"]["level"] = json!("very high, because the data is complete");
        assert!(matches!(
            Report::parse(&value.to_string()),
            Err(ReportError::Json(_))
        ));
    }

    #[test]
    fn overlong_text_is_an_error_not_a_crash() {
        let mut value = sample();
        value["confidence"]["reasons"] = json!(["x".repeat(MAX_REASON_CHARS + 1)]);
        let err = Report::parse(&value.to_string()).expect_err("too long");
        assert!(err.to_string().contains("confidence.reasons[0]"), "{err}");
        let mut value = sample();
        value["executive_summary"] = json!("é".repeat(MAX_SUMMARY_CHARS + 1));
        assert!(matches!(
            Report::parse(&value.to_string()),
            Err(ReportError::TooLong { .. })
        ));
    }

    #[test]
    fn empty_text_and_long_lists_are_refused() {
        let mut value = sample();
        value["system_behavior"] = json!("  ");
        assert!(matches!(
            Report::parse(&value.to_string()),
            Err(ReportError::Empty { .. })
        ));
        let mut value = sample();
        value["scope"]["not_analysed"] = json!(vec!["x"; MAX_NOT_ANALYSED + 1]);
        assert!(matches!(
            Report::parse(&value.to_string()),
            Err(ReportError::TooMany { .. })
        ));
    }

    /// Every object of the schema lists exactly the fields of the struct it describes:
    /// the serialized sample has the same keys, nested, as the schema's properties.
    #[test]
    fn schema_matches_the_struct() {
        let report = Report::parse(&sample().to_string()).expect("valid");
        let value = serde_json::to_value(&report).expect("serializable");
        assert_same_shape(&json_schema(), &value, "report");
    }

    fn assert_same_shape(schema: &Value, value: &Value, at: &str) {
        match schema["type"].as_str() {
            Some("object") => {
                assert_eq!(schema["additionalProperties"], false, "{at}");
                let props = schema["properties"].as_object().expect("properties");
                let fields = value.as_object().expect("object");
                let mut want: Vec<&String> = props.keys().collect();
                let mut have: Vec<&String> = fields.keys().collect();
                want.sort();
                have.sort();
                assert_eq!(want, have, "{at}");
                assert_eq!(
                    schema["required"].as_array().map(Vec::len),
                    Some(props.len()),
                    "{at}"
                );
                for (key, sub) in props {
                    assert_same_shape(sub, &fields[key], &format!("{at}.{key}"));
                }
            }
            Some("array") => {
                for item in value.as_array().expect("array") {
                    assert_same_shape(&schema["items"], item, at);
                }
            }
            Some("string") => {
                let text = value.as_str().expect("string");
                if let Some(allowed) = schema["enum"].as_array() {
                    assert!(allowed.contains(&json!(text)), "{at}: {text}");
                }
            }
            other => panic!("{at}: unexpected schema type {other:?}"),
        }
    }

    #[test]
    fn a_small_answer_budget_bounds_every_text_within_the_validated_limits() {
        let schema = json_schema_for(&[], 1024);
        let props = &schema["properties"];
        assert_eq!(props["executive_summary"]["maxLength"], 174);
        assert_eq!(props["misconfiguration_signals"]["maxItems"], 3);
        assert_eq!(
            props["scope"]["properties"]["day"]["maxLength"],
            MAX_DAY_CHARS
        );
        let tiny = json_schema_for(&[], 1);
        assert_eq!(tiny["properties"]["user_behavior"]["maxLength"], 16);
        let sources = json_schema_for(&["quiz".to_owned()], 1024);
        let covered = &sources["properties"]["scope"]["properties"]["sources_covered"];
        assert_eq!(covered["maxItems"], 1);
        let huge = json_schema_for(&[], BOUNDED_ANSWER_TOKENS);
        let limit = huge["properties"]["executive_summary"]["maxLength"].as_u64();
        assert!(limit <= Some(MAX_SUMMARY_CHARS as u64), "{limit:?}");
    }

    /// No counted repetitions for Ollama's grammar compiler (see [`json_schema`]).
    #[test]
    fn schema_has_no_length_bounds() {
        let schema = json_schema().to_string();
        for keyword in ["maxLength", "minLength", "maxItems", "minItems"] {
            assert!(!schema.contains(keyword), "{keyword}");
        }
    }

    #[test]
    fn generator_names() {
        assert_eq!(
            serde_json::to_value(Generator::Rules).ok(),
            Some(json!("rules"))
        );
        assert_eq!(Generator::Model.as_str(), "model");
    }
}
