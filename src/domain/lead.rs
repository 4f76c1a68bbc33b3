//! Turning a request body into a [`LeadInput`], or into a [`Rejection`] that says why not.
//!
//! Parsing is all-or-nothing per lead and checks fields in a fixed order (source, page,
//! name, email, phone, company, consent, utm, submitted_at), so the same body always
//! yields the same `lead.field`. Source and page are read first, before anything can
//! fail, so that a rejected lead is still attributed to its source and page in telemetry.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::fields::{Company, Email, FieldError, Name, PagePath, Phone, SourceName, Utm, UtmValue};
use super::outcome::{Field, Reason};
use crate::config::UnknownFields;

mod form;

pub use form::lead_from_form;

/// A lead whose every value has been parsed; nothing about it needs checking again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadInput {
    pub name: Name,
    pub email: Email,
    pub phone: Option<Phone>,
    pub company: Option<Company>,
    pub source: SourceName,
    pub page: PagePath,
    pub consent: bool,
    pub utm: Option<Utm>,
    /// The client's own timestamp; whether it may be trusted is decided by the caller.
    pub submitted_at: Option<DateTime<Utc>>,
}

/// Why an attempt ended at parse/validate, with whatever context was already known, so
/// telemetry can still name the source and page of a rejected lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `InvalidPayload` or `InvalidField`.
    pub reason: Reason,
    /// The field at fault: always set for `InvalidField`; for `InvalidPayload` set to
    /// `Utm` (unknown key inside `utm`) or `Leads` (batch shape), otherwise `None`.
    pub field: Option<Field>,
    /// For the client: what is wrong and what is expected. Never contains a submitted
    /// value; an unknown key is named only when it is a short `[A-Za-z0-9_]` word.
    pub message: String,
    pub source: Option<SourceName>,
    pub page: Option<PagePath>,
}

/// `reason: message`; written by hand because thiserror would take the `source` field
/// for the error's cause.
impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for Rejection {}

/// The top-level keys of a JSON lead: every field of the lead API but a batch's `leads`.
static LEAD_KEYS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    Field::ALL
        .iter()
        .filter(|&&field| field != Field::Leads)
        .map(|field| field.as_str())
        .collect()
});

/// The keys of the `utm` object of a JSON lead.
const UTM_KEYS: [&str; 3] = ["source", "medium", "campaign"];

/// The top-level keys of a JSON batch.
const BATCH_KEYS: [&str; 1] = ["leads"];

/// Parses one lead from a JSON object body.
pub fn lead_from_json(body: &[u8], unknown: UnknownFields) -> Result<LeadInput, Rejection> {
    match parse_json(body)? {
        Value::Object(object) => lead_from_object(&object, unknown),
        _ => Err(Context::default().reject(Invalid::payload("body must be a JSON object"))),
    }
}

/// Parses a `{"leads": [...]}` body. The outer `Err` rejects the whole batch (bad JSON,
/// unknown top-level key, no/empty/too long `leads`); otherwise each element has its own
/// result, in order, so one bad lead does not sink the others.
pub fn batch_from_json(
    body: &[u8],
    max_leads: usize,
    unknown: UnknownFields,
) -> Result<Vec<Result<LeadInput, Rejection>>, Rejection> {
    let value = parse_json(body)?;
    let leads =
        leads_array(&value, max_leads, unknown).map_err(|e| Context::default().reject(e))?;
    Ok(leads
        .iter()
        .map(|lead| match lead {
            Value::Object(object) => lead_from_object(object, unknown),
            _ => {
                Err(Context::default().reject(Invalid::payload("each lead must be a JSON object")))
            }
        })
        .collect())
}

fn parse_json(body: &[u8]) -> Result<Value, Rejection> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Context::default().reject(Invalid::payload("body is not valid UTF-8")))?;
    serde_json::from_str(text).map_err(|e| {
        // serde_json's own text is avoided: positions are enough, and they echo nothing.
        let message = format!(
            "body is not valid JSON (error at line {}, column {})",
            e.line(),
            e.column()
        );
        Context::default().reject(Invalid::payload(message))
    })
}

fn leads_array(
    value: &Value,
    max_leads: usize,
    unknown: UnknownFields,
) -> Result<&Vec<Value>, Invalid> {
    let shape = |message: String| Invalid {
        reason: Reason::InvalidPayload,
        field: Some(Field::Leads),
        message,
    };
    let Value::Object(object) = value else {
        return Err(shape(
            "body must be a JSON object with a leads array".into(),
        ));
    };
    check_unknown_keys(object, &BATCH_KEYS, "body", None, unknown)?;
    match object.get("leads") {
        Some(Value::Array(leads)) if leads.is_empty() => {
            Err(shape("leads must not be empty".into()))
        }
        Some(Value::Array(leads)) if leads.len() > max_leads => {
            Err(shape(format!("leads must hold at most {max_leads} leads")))
        }
        Some(Value::Array(leads)) => Ok(leads),
        _ => Err(shape("leads must be an array of lead objects".into())),
    }
}

/// Source and page are parsed before anything else can fail, so every rejection of this
/// lead carries them when they are valid.
fn lead_from_object(
    object: &Map<String, Value>,
    unknown: UnknownFields,
) -> Result<LeadInput, Rejection> {
    let source = required_json(object, Field::Source, SourceName::parse);
    let page = required_json(object, Field::Page, PagePath::parse);
    let context = Context {
        source: source.as_ref().ok().cloned(),
        page: page.as_ref().ok().cloned(),
    };
    check_unknown_keys(object, &LEAD_KEYS, "lead", None, unknown)
        .and_then(|()| {
            Ok(LeadInput {
                source: source?,
                page: page?,
                name: required_json(object, Field::Name, Name::parse)?,
                email: required_json(object, Field::Email, Email::parse)?,
                phone: optional_json(object, Field::Phone, Phone::parse)?,
                company: optional_json(object, Field::Company, Company::parse)?,
                consent: consent_json(object.get(Field::Consent.as_str()))?,
                utm: utm_json(object.get(Field::Utm.as_str()), unknown)?,
                submitted_at: submitted_at_json(object.get(Field::SubmittedAt.as_str()))?,
            })
        })
        .map_err(|e| context.reject(e))
}

fn required_json<T>(
    object: &Map<String, Value>,
    field: Field,
    parse: fn(&str) -> Result<T, FieldError>,
) -> Result<T, Invalid> {
    let raw = json_string(object.get(field.as_str()), field, field.as_str())?;
    parse_required(raw, field, field.as_str(), parse)
}

fn optional_json<T>(
    object: &Map<String, Value>,
    field: Field,
    parse: fn(&str) -> Result<T, FieldError>,
) -> Result<Option<T>, Invalid> {
    let raw = json_string(object.get(field.as_str()), field, field.as_str())?;
    parse_optional(raw, field, field.as_str(), parse)
}

/// Absent and `null` are both "not given"; any non-string is a type error.
fn json_string<'a>(
    value: Option<&'a Value>,
    field: Field,
    label: &str,
) -> Result<Option<&'a str>, Invalid> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(Invalid::field(field, format!("{label} must be a string"))),
    }
}

fn consent_json(value: Option<&Value>) -> Result<bool, Invalid> {
    match value {
        Some(Value::Bool(consent)) => Ok(*consent),
        None | Some(Value::Null) => Err(Invalid::field(Field::Consent, "consent is required")),
        Some(_) => Err(Invalid::field(
            Field::Consent,
            "consent must be true or false",
        )),
    }
}

fn utm_json(value: Option<&Value>, unknown: UnknownFields) -> Result<Option<Utm>, Invalid> {
    let object = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(object)) => object,
        Some(_) => {
            return Err(Invalid::field(
                Field::Utm,
                "utm must be an object with source, medium and campaign",
            ));
        }
    };
    check_unknown_keys(object, &UTM_KEYS, "utm", Some(Field::Utm), unknown)?;
    let part = |key: &str, label: &str| {
        let raw = json_string(object.get(key), Field::Utm, label)?;
        parse_optional(raw, Field::Utm, label, UtmValue::parse)
    };
    Ok(Utm::new(
        part("source", "utm.source")?,
        part("medium", "utm.medium")?,
        part("campaign", "utm.campaign")?,
    ))
}

fn submitted_at_json(value: Option<&Value>) -> Result<Option<DateTime<Utc>>, Invalid> {
    let invalid = || {
        Invalid::field(
            Field::SubmittedAt,
            "submitted_at must be an RFC 3339 date-time string, e.g. 2024-05-01T12:00:00Z",
        )
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => DateTime::parse_from_rfc3339(text)
            .map(|time| Some(time.with_timezone(&Utc)))
            .map_err(|_| invalid()),
        Some(_) => Err(invalid()),
    }
}

fn check_unknown_keys(
    object: &Map<String, Value>,
    allowed: &[&str],
    container: &str,
    field: Option<Field>,
    unknown: UnknownFields,
) -> Result<(), Invalid> {
    match unknown_key_message(
        object.keys().map(String::as_str),
        allowed,
        container,
        unknown,
    ) {
        Some(message) => Err(Invalid {
            reason: Reason::InvalidPayload,
            field,
            message,
        }),
        None => Ok(()),
    }
}

/// The rejection text for the first key outside `allowed`, or `None` when every key is
/// known or unknown keys are ignored. A key is quoted only when it is a short word, so a
/// key that is really a value (an address pasted into the wrong place) is never echoed.
fn unknown_key_message<'a>(
    keys: impl IntoIterator<Item = &'a str>,
    allowed: &[&str],
    container: &str,
    unknown: UnknownFields,
) -> Option<String> {
    if unknown == UnknownFields::Ignore {
        return None;
    }
    let key = keys.into_iter().find(|key| !allowed.contains(key))?;
    let which = if is_nameable_key(key) {
        format!("unknown field `{key}`")
    } else {
        "an unknown field".to_owned()
    };
    Some(format!(
        "{container} has {which}; allowed fields are {}",
        allowed.join(", ")
    ))
}

fn is_nameable_key(key: &str) -> bool {
    (1..=40).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Not given counts as missing; a given value must parse.
fn parse_required<T>(
    raw: Option<&str>,
    field: Field,
    label: &str,
    parse: fn(&str) -> Result<T, FieldError>,
) -> Result<T, Invalid> {
    parse_optional(raw, field, label, parse)?
        .ok_or_else(|| Invalid::field(field, format!("{label} is required")))
}

fn parse_optional<T>(
    raw: Option<&str>,
    field: Field,
    label: &str,
    parse: fn(&str) -> Result<T, FieldError>,
) -> Result<Option<T>, Invalid> {
    raw.map(|text| parse(text).map_err(|e| Invalid::field(field, format!("{label} {e}"))))
        .transpose()
}

/// A rejection before the source and page are attached to it.
#[derive(Debug)]
struct Invalid {
    reason: Reason,
    field: Option<Field>,
    message: String,
}

impl Invalid {
    fn payload(message: impl Into<String>) -> Self {
        Self {
            reason: Reason::InvalidPayload,
            field: None,
            message: message.into(),
        }
    }

    fn field(field: Field, message: impl Into<String>) -> Self {
        Self {
            reason: Reason::InvalidField,
            field: Some(field),
            message: message.into(),
        }
    }
}

/// What is already known about the attempt; attached to every rejection.
#[derive(Default)]
struct Context {
    source: Option<SourceName>,
    page: Option<PagePath>,
}

impl Context {
    fn reject(&self, invalid: Invalid) -> Rejection {
        Rejection {
            reason: invalid.reason,
            field: invalid.field,
            message: invalid.message,
            source: self.source.clone(),
            page: self.page.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
