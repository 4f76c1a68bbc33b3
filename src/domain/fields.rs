//! The values of a lead, each a newtype that can only be built by `parse`.
//!
//! Holding a `Email` proves the address was checked and normalised, so no later layer
//! re-validates or forgets to. Personal values (`Name`, `Email`, `Phone`, `Company`) have
//! a redacting `Debug` and no `Display`: printing one takes an explicit `.as_str()`.

use std::fmt;

/// Why a submitted value was refused. The text says what is wrong and what is expected
/// and never contains the value, so it can be sent to the client and recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {max} characters")]
    TooLong { max: usize },
    #[error("contains control characters")]
    ControlCharacter,
    /// The value has the wrong shape; the text describes the expected one.
    #[error("{0}")]
    Malformed(&'static str),
}

/// Writes `Type(<redacted>)`, so a stray `{:?}` in a log line cannot leak personal data.
macro_rules! redacted_debug {
    ($($ty:ident),+) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($ty), "(<redacted>)"))
            }
        }
    )+};
}

/// `Debug` for a struct that holds submitted personal values as plain strings (a request
/// body before parsing, a delivery, a simulated person): it shows only the listed
/// non-personal fields, so `{:?}` of a whole request cannot leak a name or an address.
#[macro_export]
macro_rules! debug_without_personal_data {
    ($ty:ident $(<$lt:lifetime>)? { $($shown:ident),* $(,)? }) => {
        impl $(<$lt>)? ::std::fmt::Debug for $ty $(<$lt>)? {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($shown), &self.$shown))*
                    .finish_non_exhaustive()
            }
        }
    };
}

/// Non-personal values print as themselves: they are closed sets or paths that are used
/// as telemetry attributes anyway.
macro_rules! plain_display {
    ($($ty:ident),+) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )+};
}

macro_rules! as_str {
    ($($ty:ident),+) => {$(
        impl $ty {
            /// The parsed (trimmed, normalised) value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    )+};
}

redacted_debug!(Name, Email, Phone, Company);
plain_display!(SourceName, PagePath, UtmValue);
as_str!(Name, Email, Phone, Company, SourceName, PagePath, UtmValue);

const MAX_TEXT_CHARS: usize = 200;

/// Free text (name, company): trimmed, non-empty, bounded, one line.
fn parse_text(raw: &str, max: usize) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(FieldError::Empty);
    }
    if value.chars().count() > max {
        return Err(FieldError::TooLong { max });
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::ControlCharacter);
    }
    Ok(value.to_owned())
}

/// The submitter's name: trimmed, 1 to 200 characters, no control characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Name(String);

impl Name {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        parse_text(raw, MAX_TEXT_CHARS).map(Self)
    }
}

/// The submitter's company: trimmed, 1 to 200 characters, no control characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Company(String);

impl Company {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        parse_text(raw, MAX_TEXT_CHARS).map(Self)
    }
}

/// An email address, syntax-checked (no DNS) and lower-cased, so the same mailbox always
/// hashes to the same submitter.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

const MAX_EMAIL_CHARS: usize = 254;
const INVALID_EMAIL: FieldError =
    FieldError::Malformed("is not a valid address (expected local-part@domain.tld)");

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let value = raw.trim().to_ascii_lowercase();
        if value.is_empty() {
            return Err(FieldError::Empty);
        }
        if value.chars().count() > MAX_EMAIL_CHARS {
            return Err(FieldError::TooLong {
                max: MAX_EMAIL_CHARS,
            });
        }
        match value.split_once('@') {
            Some((local, domain)) if is_local_part(local) && is_domain(domain) => Ok(Self(value)),
            _ => Err(INVALID_EMAIL),
        }
    }
}

/// 1 to 64 printable, non-space ASCII characters, without the ones that need quoting.
fn is_local_part(local: &str) -> bool {
    (1..=64).contains(&local.len())
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !br#""(),:;<>[\]"#.contains(&b))
}

/// At least two labels of `[a-z0-9-]`, and a top-level domain of two or more letters.
fn is_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let tld_ok = labels
        .last()
        .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_lowercase()));
    labels.len() >= 2 && tld_ok && labels.iter().all(|label| is_dns_label(label))
}

fn is_dns_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A phone number in international form, normalised to `+` and digits (E.164-like), so
/// `+49 (151) 234-567` and `+49151234567` are the same number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let compact: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        if compact.is_empty() {
            return Err(FieldError::Empty);
        }
        match compact.strip_prefix('+') {
            Some(digits) if is_subscriber_number(digits) => Ok(Self(compact)),
            _ => Err(FieldError::Malformed(
                "is not a valid phone number (expected + and 8 to 15 digits, \
                 the first not 0; spaces, -, ., ( and ) are ignored)",
            )),
        }
    }
}

fn is_subscriber_number(digits: &str) -> bool {
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// A lead source name, the same shape as `[[sources]] name` in the configuration
/// (`[a-z0-9_-]{1,64}`), so it can be looked up there and used as the `lead.source`
/// attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceName(String);

impl SourceName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        accepted_if(ok, raw, "must be 1 to 64 characters of a-z, 0-9, _ and -").map(Self)
    }
}

/// `raw` as the value of a field when `ok`, else the field's rule as the error.
fn accepted_if(ok: bool, raw: &str, rule: &'static str) -> Result<String, FieldError> {
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(FieldError::Malformed(rule))
    }
}

/// The path of the page a lead was submitted on (`lead.page`). The alphabet excludes
/// `?`, `@`, `%`, `+` and spaces, so a page can never carry a query string or an email
/// address into telemetry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PagePath(String);

impl PagePath {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = raw.starts_with('/')
            && raw.len() <= 200
            && !raw.contains("//")
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_.~-".contains(&b));
        accepted_if(
            ok,
            raw,
            "must be a path starting with / of at most 200 characters of \
             A-Z, a-z, 0-9, /, _, ., ~ and -, without //",
        )
        .map(Self)
    }
}

/// One UTM parameter value: 1 to 100 characters of `[A-Za-z0-9_.+-]`, which keeps
/// campaign tags usable as attributes and free of personal data such as addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UtmValue(String);

impl UtmValue {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = (1..=100).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
        accepted_if(
            ok,
            raw,
            "must be 1 to 100 characters of A-Z, a-z, 0-9, _, ., + and -",
        )
        .map(Self)
    }
}

/// The UTM parameters of a lead; each is optional.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Utm {
    pub source: Option<UtmValue>,
    pub medium: Option<UtmValue>,
    pub campaign: Option<UtmValue>,
}

impl Utm {
    /// `None` when no parameter is set, so "no UTM" has exactly one representation.
    pub fn new(
        source: Option<UtmValue>,
        medium: Option<UtmValue>,
        campaign: Option<UtmValue>,
    ) -> Option<Self> {
        if source.is_none() && medium.is_none() && campaign.is_none() {
            None
        } else {
            Some(Self {
                source,
                medium,
                campaign,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_trimmed_and_bounded() {
        assert_eq!(
            Name::parse("  Ada Lovelace \n").unwrap().as_str(),
            "Ada Lovelace"
        );
        assert_eq!(Name::parse("Zoë Ñúñez").unwrap().as_str(), "Zoë Ñúñez");
        assert_eq!(
            Name::parse(&"é".repeat(200))
                .unwrap()
                .as_str()
                .chars()
                .count(),
            200
        );
        assert_eq!(Name::parse("   "), Err(FieldError::Empty));
        assert_eq!(Name::parse(""), Err(FieldError::Empty));
        assert_eq!(
            Name::parse(&"a".repeat(201)),
            Err(FieldError::TooLong { max: 200 })
        );
        assert_eq!(
            Name::parse("Ada\nLovelace"),
            Err(FieldError::ControlCharacter)
        );
        assert_eq!(Name::parse("Ada\u{7}"), Err(FieldError::ControlCharacter));
    }

    #[test]
    fn company_is_trimmed_and_bounded() {
        assert_eq!(Company::parse(" ACME Ltd. ").unwrap().as_str(), "ACME Ltd.");
        assert_eq!(Company::parse(""), Err(FieldError::Empty));
        assert_eq!(
            Company::parse(&"x".repeat(201)),
            Err(FieldError::TooLong { max: 200 })
        );
        assert_eq!(Company::parse("a\tb"), Err(FieldError::ControlCharacter));
    }

    #[test]
    fn email_is_normalised() {
        let email = Email::parse("  Ada.Lovelace+Leads@Example.CO.uk ").unwrap();
        assert_eq!(email.as_str(), "ada.lovelace+leads@example.co.uk");
        assert_eq!(
            email,
            Email::parse("ada.lovelace+leads@example.co.uk").unwrap()
        );
    }

    #[test]
    fn valid_emails() {
        for ok in [
            "a@b.co",
            "x_y-z!#$%&'*+/=?^`{|}~@mail-1.example.org",
            "o'neil@xn--bcher-kva.de",
            &format!("{}@example.com", "l".repeat(64)),
            &format!("a@{}.com", "d".repeat(63)),
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn invalid_emails() {
        for bad in [
            "plainaddress",
            "@example.com",
            "a@",
            "a@@example.com",
            "a@b@example.com",
            "a b@example.com",
            "a\"b@example.com",
            "a(b)@example.com",
            "a,b@example.com",
            "a:b@example.com",
            "a;b@example.com",
            "a<b>@example.com",
            "a[b]@example.com",
            "a\\b@example.com",
            "zoë@example.com",
            "a@localhost",
            "a@example.c",
            "a@example.c0m",
            "a@-example.com",
            "a@example-.com",
            "a@exa_mple.com",
            "a@example..com",
            "a@.example.com",
            "a@example.com.",
            "a@exämple.com",
            &format!("{}@example.com", "l".repeat(65)),
            &format!("a@{}.com", "d".repeat(64)),
        ] {
            assert_eq!(Email::parse(bad), Err(INVALID_EMAIL), "{bad}");
        }
        assert_eq!(Email::parse(" "), Err(FieldError::Empty));
        let long = format!("a@{}.com", vec!["d".repeat(60); 5].join("."));
        assert_eq!(Email::parse(&long), Err(FieldError::TooLong { max: 254 }));
    }

    #[test]
    fn phone_is_normalised_to_plus_and_digits() {
        for (raw, normal) in [
            ("+49 (151) 234-567", "+49151234567"),
            ("+1.415.555.0100", "+14155550100"),
            (" +4412345678 ", "+4412345678"),
            ("+123456789012345", "+123456789012345"),
        ] {
            assert_eq!(Phone::parse(raw).unwrap().as_str(), normal, "{raw}");
        }
    }

    #[test]
    fn invalid_phones() {
        for bad in [
            "0151 234567",
            "49151234567",
            "+0151234567",
            "+1234567",
            "+1234567890123456",
            "+49 151 CALL-ME",
            "++49151234567",
            "+49151234567 ext 3",
            "+49/151/234567",
            "+４９151234567",
        ] {
            assert!(
                matches!(Phone::parse(bad), Err(FieldError::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(Phone::parse(" - ( ) "), Err(FieldError::Empty));
    }

    #[test]
    fn source_names_match_config_names() {
        for ok in ["web", "partner_a", "a-1", &"s".repeat(64)] {
            assert_eq!(SourceName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "Web",
            "web site",
            "web.site",
            " web",
            "wéb",
            &"s".repeat(65),
        ] {
            assert!(SourceName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn page_paths_cannot_carry_queries_or_addresses() {
        for ok in [
            "/",
            "/contact",
            "/en/pricing/",
            "/a_b.c~d-e",
            &format!("/{}", "p".repeat(199)),
        ] {
            assert_eq!(PagePath::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "contact",
            "/contact?email=a@b.co",
            "/a@b.co",
            "/with space",
            "/a%40b",
            "/a+b",
            "//evil.example",
            "/a//b",
            "/a#frag",
            "/é",
            &format!("/{}", "p".repeat(200)),
        ] {
            assert!(PagePath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn utm_values() {
        for ok in ["google", "cpc", "spring_sale-2024.v2+x", &"u".repeat(100)] {
            assert_eq!(UtmValue::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "a b", "a@b.co", "a/b", "a%20b", "ü", &"u".repeat(101)] {
            assert!(UtmValue::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn utm_without_values_is_none() {
        assert_eq!(Utm::new(None, None, None), None);
        let medium = UtmValue::parse("cpc").unwrap();
        let utm = Utm::new(None, Some(medium.clone()), None).unwrap();
        assert_eq!(utm.medium, Some(medium));
    }

    #[test]
    fn debug_of_personal_values_is_redacted() {
        let name = Name::parse("Ada Lovelace").unwrap();
        let email = Email::parse("ada@example.com").unwrap();
        let phone = Phone::parse("+49151234567").unwrap();
        let company = Company::parse("Analytical Engines").unwrap();
        assert_eq!(format!("{name:?}"), "Name(<redacted>)");
        assert_eq!(format!("{email:?}"), "Email(<redacted>)");
        assert_eq!(format!("{phone:?}"), "Phone(<redacted>)");
        assert_eq!(format!("{company:?}"), "Company(<redacted>)");
        let all = format!("{name:#?} {email:#?} {phone:#?} {company:#?}");
        for secret in ["Ada", "example", "151234567", "Analytical"] {
            assert!(!all.contains(secret), "{all}");
        }
    }

    #[test]
    fn error_texts_do_not_echo_values() {
        let err = Email::parse("someone@nowhere").unwrap_err();
        assert!(!err.to_string().contains("someone"));
        assert_eq!(
            FieldError::TooLong { max: 200 }.to_string(),
            "is longer than 200 characters"
        );
    }
}
