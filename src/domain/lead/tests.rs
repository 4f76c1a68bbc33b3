//! Parsing of JSON leads and batches: every rule, every rejection, and properties.

use proptest::prelude::*;
use serde_json::json;

use super::*;

/// Asserts the rejection of a body with a key the API does not know: invalid_payload,
/// no field, and a message that starts with `message_start`.
pub(super) fn assert_unknown_key(rejection: &Rejection, message_start: &str) {
    assert_eq!(
        (rejection.reason, rejection.field),
        (Reason::InvalidPayload, None)
    );
    assert!(
        rejection.message.starts_with(message_start),
        "{}",
        rejection.message
    );
}

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
    let minimal =
        json!({"name": "Ada", "email": "a@b.co", "source": "web", "page": "/", "consent": false});
    let lead = lead_from_json(minimal.to_string().as_bytes(), REJECT).unwrap();
    assert_eq!(
        (lead.phone, lead.company, lead.utm, lead.submitted_at),
        (None, None, None, None)
    );
    assert!(!lead.consent);
    let nulls = with(json!({"phone": null, "company": null, "utm": null, "submitted_at": null}));
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
    let rejection = lead_from_json(&with(json!({"extra": 1, "email": "bad"})), IGNORE).unwrap_err();
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
    assert_unknown_key(&rejection, "body has unknown field `meta`");
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
