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

/// The top-level keys of a JSON lead.
const LEAD_KEYS: [&str; 9] = [
    "name",
    "email",
    "phone",
    "company",
    "source",
    "page",
    "consent",
    "utm",
    "submitted_at",
];

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
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const REJECT: UnknownFields = UnknownFields::Reject;
    const IGNORE: UnknownFields = UnknownFields::Ignore;

    fn valid() -> Value {
        json!({
            "name": " Ada Lovelace ",
            "email": "Ada@Example.com",
            "phone": "+44 20 7946 0958",
            "company": "Analytical Engines",
            "source": "web",
            "page": "/contact",
            "consent": true,
            "utm": {"source": "google", "medium": "cpc", "campaign": "spring_sale"},
            "submitted_at": "2024-05-01T14:00:00+02:00"
        })
    }

    fn with(changes: Value) -> Vec<u8> {
        let mut lead = valid();
        for (key, value) in changes.as_object().expect("changes are an object") {
            lead[key] = value.clone();
        }
        serde_json::to_vec(&lead).expect("serialises")
    }

    fn without(key: &str) -> Vec<u8> {
        let mut lead = valid();
        lead.as_object_mut().expect("object").remove(key);
        serde_json::to_vec(&lead).expect("serialises")
    }

    fn rejected(body: &[u8]) -> Rejection {
        lead_from_json(body, REJECT).expect_err("body is invalid")
    }

    fn assert_field(rejection: &Rejection, field: Field) {
        assert_eq!(rejection.reason, Reason::InvalidField, "{rejection}");
        assert_eq!(rejection.field, Some(field), "{rejection}");
    }

    fn source(name: &str) -> Option<SourceName> {
        SourceName::parse(name).ok()
    }

    fn page(path: &str) -> Option<PagePath> {
        PagePath::parse(path).ok()
    }

    #[test]
    fn parses_and_normalises_a_full_lead() {
        let lead = lead_from_json(&with(json!({})), REJECT).unwrap();
        assert_eq!(lead.name.as_str(), "Ada Lovelace");
        assert_eq!(lead.email.as_str(), "ada@example.com");
        assert_eq!(lead.phone.unwrap().as_str(), "+442079460958");
        assert_eq!(lead.company.unwrap().as_str(), "Analytical Engines");
        assert_eq!(lead.source.as_str(), "web");
        assert_eq!(lead.page.as_str(), "/contact");
        assert!(lead.consent);
        let utm = lead.utm.unwrap();
        assert_eq!(utm.source.unwrap().as_str(), "google");
        assert_eq!(utm.medium.unwrap().as_str(), "cpc");
        assert_eq!(utm.campaign.unwrap().as_str(), "spring_sale");
        assert_eq!(
            lead.submitted_at.unwrap().to_rfc3339(),
            "2024-05-01T12:00:00+00:00"
        );
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let minimal = json!({"name": "Ada", "email": "a@b.co", "source": "web", "page": "/", "consent": false});
        let lead = lead_from_json(minimal.to_string().as_bytes(), REJECT).unwrap();
        assert_eq!(
            (lead.phone, lead.company, lead.utm, lead.submitted_at),
            (None, None, None, None)
        );
        assert!(!lead.consent);
        let nulls =
            with(json!({"phone": null, "company": null, "utm": null, "submitted_at": null}));
        let lead = lead_from_json(&nulls, REJECT).unwrap();
        assert_eq!(
            (lead.phone, lead.company, lead.utm, lead.submitted_at),
            (None, None, None, None)
        );
    }

    #[test]
    fn utm_without_values_is_none() {
        let lead = lead_from_json(&with(json!({"utm": {}})), REJECT).unwrap();
        assert_eq!(lead.utm, None);
        let lead = lead_from_json(
            &with(json!({"utm": {"medium": "cpc", "source": null}})),
            REJECT,
        )
        .unwrap();
        let utm = lead.utm.unwrap();
        assert_eq!((utm.source, utm.campaign), (None, None));
        assert_eq!(utm.medium.unwrap().as_str(), "cpc");
    }

    #[test]
    fn body_level_errors_are_invalid_payload() {
        for (body, message) in [
            (&b"\xff\xfe{}"[..], "body is not valid UTF-8"),
            (
                b"{\"name\": ",
                "body is not valid JSON (error at line 1, column 9)",
            ),
            (b"[]", "body must be a JSON object"),
            (b"\"a@b.co\"", "body must be a JSON object"),
            (b"", "body is not valid JSON (error at line 1, column 0)"),
        ] {
            let rejection = rejected(body);
            assert_eq!(rejection.reason, Reason::InvalidPayload);
            assert_eq!(
                (rejection.field, rejection.source, rejection.page),
                (None, None, None)
            );
            assert_eq!(rejection.message, message);
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_context_or_ignored() {
        let body = with(json!({"newsletter": true}));
        let rejection = rejected(&body);
        assert_eq!(rejection.reason, Reason::InvalidPayload);
        assert_eq!(rejection.field, None);
        assert_eq!(
            (rejection.source, rejection.page),
            (source("web"), page("/contact"))
        );
        assert_eq!(
            rejection.message,
            "lead has unknown field `newsletter`; allowed fields are name, email, phone, \
             company, source, page, consent, utm, submitted_at"
        );
        assert!(lead_from_json(&body, IGNORE).is_ok());
    }

    #[test]
    fn unknown_keys_that_look_like_values_are_not_named() {
        for key in ["ada@example.com", "a b", &"k".repeat(41), "Straße"] {
            let mut lead = valid();
            lead[key] = json!(1);
            let rejection = rejected(lead.to_string().as_bytes());
            assert!(
                rejection.message.starts_with("lead has an unknown field;"),
                "{rejection}"
            );
            assert!(!rejection.message.contains(key));
        }
        let mut lead = valid();
        lead[&"k".repeat(40)] = json!(1);
        assert!(
            rejected(lead.to_string().as_bytes())
                .message
                .contains(&"k".repeat(40))
        );
    }

    #[test]
    fn unknown_utm_keys_are_rejected_or_ignored() {
        let body = with(json!({"utm": {"source": "google", "term": "shoes"}}));
        let rejection = rejected(&body);
        assert_eq!(rejection.reason, Reason::InvalidPayload);
        assert_eq!(rejection.field, Some(Field::Utm));
        assert_eq!(rejection.source, source("web"));
        assert!(
            rejection
                .message
                .starts_with("utm has unknown field `term`")
        );
        let lead = lead_from_json(&body, IGNORE).unwrap();
        assert_eq!(lead.utm.unwrap().source.unwrap().as_str(), "google");
    }

    #[test]
    fn missing_required_fields_are_invalid_field() {
        for field in [
            Field::Name,
            Field::Email,
            Field::Source,
            Field::Page,
            Field::Consent,
        ] {
            let rejection = rejected(&without(field.as_str()));
            assert_field(&rejection, field);
            assert_eq!(rejection.message, format!("{field} is required"));
            let rejection = rejected(&with(json!({field.as_str(): null})));
            assert_field(&rejection, field);
        }
    }

    #[test]
    fn wrong_types_are_invalid_field() {
        for (key, value, field, message) in [
            ("name", json!(1), Field::Name, "name must be a string"),
            (
                "email",
                json!(["a@b.co"]),
                Field::Email,
                "email must be a string",
            ),
            (
                "phone",
                json!(4_915_123_456_u64),
                Field::Phone,
                "phone must be a string",
            ),
            (
                "company",
                json!({}),
                Field::Company,
                "company must be a string",
            ),
            (
                "source",
                json!(true),
                Field::Source,
                "source must be a string",
            ),
            ("page", json!(1.5), Field::Page, "page must be a string"),
            (
                "consent",
                json!("true"),
                Field::Consent,
                "consent must be true or false",
            ),
            (
                "consent",
                json!(1),
                Field::Consent,
                "consent must be true or false",
            ),
            (
                "utm",
                json!("google"),
                Field::Utm,
                "utm must be an object with source, medium and campaign",
            ),
            (
                "utm",
                json!({"medium": 3}),
                Field::Utm,
                "utm.medium must be a string",
            ),
        ] {
            let rejection = rejected(&with(json!({key: value})));
            assert_field(&rejection, field);
            assert_eq!(rejection.message, message);
        }
    }

    #[test]
    fn invalid_values_are_invalid_field_without_echo() {
        for (key, value, field) in [
            ("name", json!("Ada\u{0}Lovelace"), Field::Name),
            ("email", json!("ada.lovelace@localhost"), Field::Email),
            ("phone", json!("0171 1234567"), Field::Phone),
            ("company", json!("   "), Field::Company),
            ("source", json!("Web Site"), Field::Source),
            ("page", json!("/contact?email=ada@example.com"), Field::Page),
            ("utm", json!({"campaign": "ada@example.com"}), Field::Utm),
            (
                "submitted_at",
                json!("yesterday at noon"),
                Field::SubmittedAt,
            ),
            (
                "submitted_at",
                json!("2024-05-01 14:00"),
                Field::SubmittedAt,
            ),
            ("submitted_at", json!(1714564800), Field::SubmittedAt),
        ] {
            let rejection = rejected(&with(json!({key: value.clone()})));
            assert_field(&rejection, field);
            let text = rejection.message.to_lowercase();
            for secret in [
                "ada",
                "lovelace",
                "1234567",
                "localhost",
                "web site",
                "yesterday",
            ] {
                assert!(!text.contains(secret), "{key}: {}", rejection.message);
            }
        }
        assert_eq!(
            rejected(&with(json!({"email": "nope"}))).message,
            "email is not a valid address (expected local-part@domain.tld)"
        );
        assert_eq!(
            rejected(&with(json!({"utm": {"campaign": "a b"}}))).message,
            "utm.campaign must be 1 to 100 characters of A-Z, a-z, 0-9, _, ., + and -"
        );
    }

    #[test]
    fn rejections_carry_source_and_page_when_they_parse() {
        let rejection = rejected(&with(json!({"email": "bad"})));
        assert_eq!(
            (rejection.source, rejection.page),
            (source("web"), page("/contact"))
        );
        let rejection = rejected(&with(json!({"page": "no-slash", "email": "bad"})));
        assert_field(&rejection, Field::Page);
        assert_eq!((rejection.source, rejection.page), (source("web"), None));
        let rejection = rejected(&with(json!({"source": "Bad!", "page": "/p"})));
        assert_field(&rejection, Field::Source);
        assert_eq!((rejection.source, rejection.page), (None, page("/p")));
    }

    #[test]
    fn fields_are_checked_in_a_fixed_order() {
        let mut broken = json!({
            "source": 1, "page": 1, "name": 1, "email": 1, "phone": 1,
            "company": 1, "consent": 1, "utm": 1, "submitted_at": 1
        });
        let order = [
            (Field::Source, "web"),
            (Field::Page, "/p"),
            (Field::Name, "Ada"),
            (Field::Email, "a@b.co"),
            (Field::Phone, "+4915123456"),
            (Field::Company, "ACME"),
        ];
        for (field, fix) in order {
            assert_field(&rejected(broken.to_string().as_bytes()), field);
            broken[field.as_str()] = json!(fix);
        }
        assert_field(&rejected(broken.to_string().as_bytes()), Field::Consent);
        broken["consent"] = json!(true);
        assert_field(&rejected(broken.to_string().as_bytes()), Field::Utm);
        broken["utm"] = json!({});
        assert_field(&rejected(broken.to_string().as_bytes()), Field::SubmittedAt);
        broken["submitted_at"] = json!("2024-01-01T00:00:00Z");
        assert!(lead_from_json(broken.to_string().as_bytes(), REJECT).is_ok());
    }

    #[test]
    fn unknown_keys_are_reported_before_field_errors() {
        let rejection = rejected(&with(json!({"extra": 1, "email": "bad"})));
        assert_eq!(rejection.reason, Reason::InvalidPayload);
        let rejection =
            lead_from_json(&with(json!({"extra": 1, "email": "bad"})), IGNORE).unwrap_err();
        assert_field(&rejection, Field::Email);
    }

    fn batch(leads: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({ "leads": leads })).expect("serialises")
    }

    #[test]
    fn batch_parses_each_lead_on_its_own() {
        let good = valid();
        let mut bad = valid();
        bad["email"] = json!("bad");
        let results = batch_from_json(&batch(json!([good, bad, 7])), 10, REJECT).unwrap();
        assert_eq!(results.len(), 3);
        assert!(results[0].is_ok());
        assert_field(results[1].as_ref().unwrap_err(), Field::Email);
        let not_object = results[2].as_ref().unwrap_err();
        assert_eq!(not_object.reason, Reason::InvalidPayload);
        assert_eq!(not_object.message, "each lead must be a JSON object");
    }

    #[test]
    fn batch_shape_errors_reject_the_whole_batch() {
        let two = batch(json!([valid(), valid()]));
        assert_eq!(batch_from_json(&two, 2, REJECT).unwrap().len(), 2);
        for (body, message) in [
            (two.clone(), "leads must hold at most 1 leads"),
            (batch(json!([])), "leads must not be empty"),
            (
                batch(json!({"0": valid()})),
                "leads must be an array of lead objects",
            ),
            (b"{}".to_vec(), "leads must be an array of lead objects"),
            (
                b"[{}]".to_vec(),
                "body must be a JSON object with a leads array",
            ),
        ] {
            let rejection = batch_from_json(&body, 1, REJECT).unwrap_err();
            assert_eq!(rejection.reason, Reason::InvalidPayload);
            assert_eq!(rejection.field, Some(Field::Leads));
            assert_eq!(rejection.message, message);
        }
        let rejection = batch_from_json(b"{\"leads\": [", 1, REJECT).unwrap_err();
        assert_eq!(
            (rejection.reason, rejection.field),
            (Reason::InvalidPayload, None)
        );
    }

    #[test]
    fn batch_unknown_top_level_keys_follow_the_setting() {
        let body = serde_json::to_vec(&json!({"leads": [valid()], "meta": 1})).unwrap();
        let rejection = batch_from_json(&body, 5, REJECT).unwrap_err();
        assert_eq!(
            (rejection.reason, rejection.field),
            (Reason::InvalidPayload, None)
        );
        assert!(
            rejection
                .message
                .starts_with("body has unknown field `meta`")
        );
        assert_eq!(batch_from_json(&body, 5, IGNORE).unwrap().len(), 1);
    }

    #[test]
    fn rejection_display_is_reason_and_message() {
        let rejection = rejected(&without("name"));
        assert_eq!(rejection.to_string(), "invalid_field: name is required");
    }

    /// Strings that exercise every parser: valid values (so parsing reaches later fields),
    /// personal-looking values (which must never be echoed) and arbitrary text.
    pub(super) fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{1,3}_[0-9]{1,3}",
            "/[a-z]{1,8}(/[a-z]{1,8})?",
            "[A-Z][a-z]{2,8} [A-Z][a-z]{2,8}",
            "[a-z0-9.]{1,10}@[a-z]{2,8}\\.[a-z]{2,3}",
            "\\+[1-9][0-9 ]{7,16}",
            "20[0-9]{2}-0[1-9]-1[0-9]T1[0-9]:00:00Z",
            "\\PC{0,30}",
            ".{0,30}",
        ]
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any_text().prop_map(Value::String),
        ];
        let utm_key = prop::sample::select(vec!["source", "medium", "campaign", "term"]);
        let utm = prop::collection::btree_map(utm_key.prop_map(String::from), leaf.clone(), 0..4)
            .prop_map(|map| Value::Object(map.into_iter().collect()));
        let lead_key = prop::sample::select(LEAD_KEYS.to_vec()).prop_map(String::from);
        let value = prop_oneof![4 => leaf.clone(), 1 => utm, 1 => prop::collection::vec(leaf, 0..3).prop_map(Value::Array)];
        let overrides = prop::collection::btree_map(lead_key, value, 0..10);
        // Half start from a valid lead, so that parsing also reaches the later fields.
        (overrides, any::<bool>()).prop_map(|(overrides, from_valid)| {
            let mut lead = if from_valid { valid() } else { json!({}) };
            for (key, value) in overrides {
                lead[key] = value;
            }
            lead
        })
    }

    /// Every string in `value`, recursively.
    fn strings(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(text) => out.push(text.clone()),
            Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
            Value::Object(map) => map.values().for_each(|item| strings(item, out)),
            _ => {}
        }
    }

    /// The properties every rejection from the parsers must have.
    pub(super) fn assert_safe(rejection: &Rejection, submitted: &[String]) {
        assert!(
            matches!(
                rejection.reason,
                Reason::InvalidPayload | Reason::InvalidField
            ),
            "{rejection}"
        );
        for value in submitted.iter().filter(|value| value.chars().count() > 3) {
            assert!(
                !rejection.message.contains(value.as_str()),
                "message {:?} echoes {value:?}",
                rejection.message
            );
        }
    }

    fn unknown_fields() -> impl Strategy<Value = UnknownFields> {
        prop_oneof![Just(REJECT), Just(IGNORE)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), unknown in unknown_fields()) {
            if let Err(rejection) = lead_from_json(&body, unknown) {
                assert_safe(&rejection, &[]);
            }
            match batch_from_json(&body, 3, unknown) {
                Ok(results) => results.iter().filter_map(|r| r.as_ref().err()).for_each(|r| assert_safe(r, &[])),
                Err(rejection) => assert_safe(&rejection, &[]),
            }
        }

        #[test]
        fn arbitrary_leads_are_parsed_or_safely_rejected(lead in any_json(), unknown in unknown_fields()) {
            let mut submitted = Vec::new();
            strings(&lead, &mut submitted);
            match lead_from_json(lead.to_string().as_bytes(), unknown) {
                Ok(parsed) => prop_assert_eq!(parsed.source.as_str(), lead["source"].as_str().unwrap_or_default()),
                Err(rejection) => assert_safe(&rejection, &submitted),
            }
        }

        #[test]
        fn arbitrary_batches_are_parsed_or_safely_rejected(
            leads in prop::collection::vec(any_json(), 0..5),
            max_leads in 0usize..5,
            unknown in unknown_fields(),
        ) {
            let body = json!({ "leads": leads });
            let mut submitted = Vec::new();
            strings(&body, &mut submitted);
            match batch_from_json(body.to_string().as_bytes(), max_leads, unknown) {
                Ok(results) => {
                    prop_assert_eq!(results.len(), leads.len());
                    results.iter().filter_map(|r| r.as_ref().err()).for_each(|r| assert_safe(r, &submitted));
                }
                Err(rejection) => assert_safe(&rejection, &submitted),
            }
        }
    }
}
