//! `application/x-www-form-urlencoded` leads, as posted by plain HTML forms.
//!
//! Decoded here rather than by the web framework so that every way a body can be
//! malformed (bad escapes, invalid UTF-8, repeated fields) becomes a [`Rejection`] with
//! the form's source and page attached, instead of an anonymous framework error.

use std::collections::HashMap;

use super::{
    Context, Invalid, LeadInput, Rejection, parse_optional, parse_required, unknown_key_message,
};
use crate::config::UnknownFields;
use crate::domain::fields::{Company, Email, Name, PagePath, Phone, SourceName, Utm, UtmValue};
use crate::domain::outcome::Field;

/// The fields an HTML lead form may post.
const FORM_KEYS: [&str; 8] = [
    "name",
    "email",
    "phone",
    "company",
    "consent",
    "utm_source",
    "utm_medium",
    "utm_campaign",
];

/// Parses a form body. Source and page come from the form's configuration, not from the
/// body. Blank values count as not given (browsers post empty inputs).
pub fn lead_from_form(
    body: &[u8],
    source: SourceName,
    page: PagePath,
    unknown: UnknownFields,
) -> Result<LeadInput, Rejection> {
    let context = Context {
        source: Some(source.clone()),
        page: Some(page.clone()),
    };
    decode_form(body, unknown)
        .and_then(|fields| lead_from_fields(&fields, source, page))
        .map_err(|e| context.reject(e))
}

fn lead_from_fields(
    fields: &HashMap<String, String>,
    source: SourceName,
    page: PagePath,
) -> Result<LeadInput, Invalid> {
    let get = |key: &str| {
        fields
            .get(key)
            .map(String::as_str)
            .filter(|value| !value.trim().is_empty())
    };
    let utm = |key: &str| parse_optional(get(key), Field::Utm, key, UtmValue::parse);
    Ok(LeadInput {
        name: parse_required(get("name"), Field::Name, "name", Name::parse)?,
        email: parse_required(get("email"), Field::Email, "email", Email::parse)?,
        phone: parse_optional(get("phone"), Field::Phone, "phone", Phone::parse)?,
        company: parse_optional(get("company"), Field::Company, "company", Company::parse)?,
        consent: consent(get("consent"))?,
        utm: Utm::new(utm("utm_source")?, utm("utm_medium")?, utm("utm_campaign")?),
        source,
        page,
        submitted_at: None,
    })
}

/// A checkbox posts `on` when ticked and nothing otherwise; the other spellings are what
/// hand-written forms and scripts tend to send.
fn consent(raw: Option<&str>) -> Result<bool, Invalid> {
    match raw
        .map(|value| value.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("off" | "false" | "0" | "no") => Ok(false),
        Some("on" | "true" | "1" | "yes") => Ok(true),
        Some(_) => Err(Invalid::field(
            Field::Consent,
            "consent must be one of on, off, true, false, yes, no, 1, 0",
        )),
    }
}

/// The known fields of the body. Unknown keys are rejected or dropped per `unknown`;
/// a known key given twice is ambiguous and rejected.
fn decode_form(body: &[u8], unknown: UnknownFields) -> Result<HashMap<String, String>, Invalid> {
    let mut fields = HashMap::new();
    for pair in body.split(|&b| b == b'&').filter(|pair| !pair.is_empty()) {
        let (key, value) = split_pair(pair);
        let key = percent_decode(key)?;
        let value = percent_decode(value)?;
        if !FORM_KEYS.contains(&key.as_str()) {
            match unknown_key_message([key.as_str()], &FORM_KEYS, "form", unknown) {
                Some(message) => return Err(Invalid::payload(message)),
                None => continue,
            }
        }
        if fields.contains_key(&key) {
            return Err(Invalid::payload(format!(
                "form field `{key}` is given more than once"
            )));
        }
        fields.insert(key, value);
    }
    Ok(fields)
}

/// `key=value`; a pair without `=` is a key with an empty value.
fn split_pair(pair: &[u8]) -> (&[u8], &[u8]) {
    match pair.iter().position(|&b| b == b'=') {
        Some(at) => (&pair[..at], &pair[at + 1..]),
        None => (pair, &[]),
    }
}

/// `+` is a space and `%XX` a byte; the decoded bytes must be UTF-8.
fn percent_decode(encoded: &[u8]) -> Result<String, Invalid> {
    let mut decoded = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.iter();
    while let Some(&byte) = bytes.next() {
        match byte {
            b'+' => decoded.push(b' '),
            b'%' => {
                let high = bytes.next().and_then(|&b| hex_digit(b));
                let low = bytes.next().and_then(|&b| hex_digit(b));
                match (high, low) {
                    (Some(high), Some(low)) => decoded.push(high << 4 | low),
                    _ => {
                        return Err(Invalid::payload(
                            "form body has an invalid percent escape (expected % and two hex digits)",
                        ));
                    }
                }
            }
            _ => decoded.push(byte),
        }
    }
    String::from_utf8(decoded)
        .map_err(|_| Invalid::payload("form body is not valid UTF-8 after percent-decoding"))
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::lead::tests::assert_unknown_key;
    use crate::domain::outcome::Reason;

    const REJECT: UnknownFields = UnknownFields::Reject;
    const IGNORE: UnknownFields = UnknownFields::Ignore;

    fn source() -> SourceName {
        SourceName::parse("landing").unwrap()
    }

    fn page() -> PagePath {
        PagePath::parse("/offer").unwrap()
    }

    fn parse(body: &str) -> Result<LeadInput, Rejection> {
        lead_from_form(body.as_bytes(), source(), page(), REJECT)
    }

    fn rejected(body: &str) -> Rejection {
        let rejection = parse(body).expect_err("body is invalid");
        assert_eq!(rejection.source, Some(source()), "{rejection}");
        assert_eq!(rejection.page, Some(page()), "{rejection}");
        rejection
    }

    /// Percent-encodes everything but unreserved characters, and spaces as `+`.
    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b' ' => "+".to_owned(),
                b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => char::from(b).to_string(),
                b => format!("%{b:02X}"),
            })
            .collect()
    }

    #[test]
    fn decodes_a_full_form() {
        let lead = parse(
            "name=Ada+Lovelace&email=Ada%40Example.com&phone=%2B44+20+7946+0958\
             &company=ACME%20%26%20Co&consent=on&utm_source=google&utm_medium=cpc\
             &utm_campaign=spring",
        )
        .unwrap();
        assert_eq!(lead.name.as_str(), "Ada Lovelace");
        assert_eq!(lead.email.as_str(), "ada@example.com");
        assert_eq!(lead.phone.unwrap().as_str(), "+442079460958");
        assert_eq!(lead.company.unwrap().as_str(), "ACME & Co");
        assert!(lead.consent);
        assert_eq!((lead.source, lead.page), (source(), page()));
        let utm = lead.utm.unwrap();
        assert_eq!(utm.source.unwrap().as_str(), "google");
        assert_eq!(utm.medium.unwrap().as_str(), "cpc");
        assert_eq!(utm.campaign.unwrap().as_str(), "spring");
        assert_eq!(lead.submitted_at, None);
    }

    #[test]
    fn decodes_utf8_and_tolerates_empty_pairs() {
        let lead = parse("&name=Zo%C3%AB&&email=z%40b.co&").unwrap();
        assert_eq!(lead.name.as_str(), "Zoë");
        assert!(!lead.consent);
    }

    #[test]
    fn blank_optional_fields_are_absent() {
        let lead =
            parse("name=Ada&email=a%40b.co&phone=&company=+&utm_source=&utm_medium&consent=")
                .unwrap();
        assert_eq!((lead.phone, lead.company, lead.utm), (None, None, None));
        assert!(!lead.consent);
    }

    #[test]
    fn consent_spellings() {
        for (value, consent) in [
            ("on", true),
            ("TRUE", true),
            ("1", true),
            ("Yes", true),
            ("off", false),
            ("false", false),
            ("0", false),
            ("NO", false),
        ] {
            let lead = parse(&format!("name=Ada&email=a%40b.co&consent={value}")).unwrap();
            assert_eq!(lead.consent, consent, "{value}");
        }
        let rejection = rejected("name=Ada&email=a%40b.co&consent=maybe");
        assert_eq!(
            (rejection.reason, rejection.field),
            (Reason::InvalidField, Some(Field::Consent))
        );
    }

    #[test]
    fn malformed_bodies_are_invalid_payload() {
        for (body, message) in [
            (
                "name=Ada%2",
                "form body has an invalid percent escape (expected % and two hex digits)",
            ),
            (
                "name=Ada%zz&email=a%40b.co",
                "form body has an invalid percent escape (expected % and two hex digits)",
            ),
            (
                "na%me=Ada",
                "form body has an invalid percent escape (expected % and two hex digits)",
            ),
            (
                "name=%C3%28",
                "form body is not valid UTF-8 after percent-decoding",
            ),
            (
                "name=Ada&email=a%40b.co&name=Bob",
                "form field `name` is given more than once",
            ),
        ] {
            let rejection = rejected(body);
            assert_eq!(
                (rejection.reason, rejection.field),
                (Reason::InvalidPayload, None),
                "{body}"
            );
            assert_eq!(rejection.message, message);
        }
        let raw = lead_from_form(b"name=\xff", source(), page(), REJECT).unwrap_err();
        assert_eq!(
            raw.message,
            "form body is not valid UTF-8 after percent-decoding"
        );
    }

    #[test]
    fn unknown_fields_are_rejected_or_ignored() {
        let body = "name=Ada&email=a%40b.co&submitted_at=2024-01-01T00%3A00%3A00Z&x=1&x=2";
        let rejection = rejected(body);
        assert_unknown_key(&rejection, "form has unknown field `submitted_at`;");
        let lead = lead_from_form(body.as_bytes(), source(), page(), IGNORE).unwrap();
        assert_eq!(lead.submitted_at, None);
        let rejection = rejected("ada%40example.com=1");
        assert!(rejection.message.starts_with("form has an unknown field;"));
    }

    #[test]
    fn field_errors_are_reported_in_order() {
        for (body, field, message) in [
            ("email=a%40b.co", Field::Name, "name is required"),
            ("name=+&email=a%40b.co", Field::Name, "name is required"),
            ("name=Ada", Field::Email, "email is required"),
            (
                "name=Ada&email=ada",
                Field::Email,
                "email is not a valid address (expected local-part@domain.tld)",
            ),
            (
                "name=Ada&email=a%40b.co&phone=12&consent=maybe",
                Field::Phone,
                "",
            ),
            (
                "name=Ada&email=a%40b.co&company=a%00b",
                Field::Company,
                "company contains control characters",
            ),
            ("name=Ada&email=a%40b.co&utm_medium=a+b", Field::Utm, ""),
        ] {
            let rejection = rejected(body);
            assert_eq!(
                (rejection.reason, rejection.field),
                (Reason::InvalidField, Some(field)),
                "{body}"
            );
            if !message.is_empty() {
                assert_eq!(rejection.message, message);
            }
        }
        assert!(
            rejected("name=Ada&email=a%40b.co&utm_medium=a+b")
                .message
                .starts_with("utm_medium must be")
        );
    }

    fn any_key() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::sample::select(FORM_KEYS.to_vec()).prop_map(String::from),
            1 => Just("submitted_at".to_owned()),
            1 => "\\PC{0,12}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), ignore in any::<bool>()) {
            let unknown = if ignore { IGNORE } else { REJECT };
            if let Err(rejection) = lead_from_form(&body, source(), page(), unknown) {
                crate::domain::lead::tests::assert_safe(&rejection, &[]);
            }
        }

        #[test]
        fn arbitrary_forms_are_parsed_or_safely_rejected(
            pairs in prop::collection::vec((any_key(), crate::domain::lead::tests::any_text()), 0..10),
            ignore in any::<bool>(),
        ) {
            let unknown = if ignore { IGNORE } else { REJECT };
            let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
            let values: Vec<String> = pairs.iter().map(|(_, v)| v.clone()).collect();
            if let Err(rejection) = lead_from_form(body.join("&").as_bytes(), source(), page(), unknown) {
                crate::domain::lead::tests::assert_safe(&rejection, &values);
                prop_assert_eq!(rejection.source, Some(source()));
            }
        }
    }
}
