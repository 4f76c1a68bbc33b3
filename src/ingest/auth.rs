//! Which source a request speaks for: API keys are looked up by their SHA-256, so the
//! service never holds a key itself, only the hashes from config.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::config::{KeyRole, RateLimitSettings, SourceSettings};
use crate::domain::Reason;

/// A configured source as the pipeline needs it.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub enabled: bool,
    pub require_consent: bool,
}

/// The client behind a valid key.
#[derive(Debug, Clone)]
pub struct Client {
    /// `lead.client_id`: names the key, never reveals it.
    pub id: String,
    pub source: String,
    pub limit: RateLimitSettings,
    /// Sources this key may state event times for: empty unless it has the simulator
    /// role, then its own source and its `vouches_for`.
    pub vouches_for: Vec<String>,
}

/// `X-Submitted-At` was sent but is not an RFC 3339 date-time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedStatedTime;

/// A request's credentials, resolved against the registry.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'r> {
    client: Option<&'r Client>,
    /// The simulator key that vouches for stated times: the request's own key when it
    /// has the simulator role, else `X-Simulator-Key`.
    voucher: Option<&'r Client>,
    /// `X-Submitted-At`, parsed; whether anyone vouches for it is decided per source.
    pub stated: Result<Option<chrono::DateTime<chrono::Utc>>, MalformedStatedTime>,
}

impl Caller<'_> {
    /// Whether any key of the request is one the registry knows. Requests without one
    /// are limited by address before their body is read.
    pub fn has_valid_key(&self) -> bool {
        self.client.is_some() || self.voucher.is_some()
    }

    /// The source the request's keys speak for, before the body names one.
    pub fn key_source(&self) -> Option<&str> {
        self.client.or(self.voucher).map(|c| c.source.as_str())
    }

    /// Whether a simulator key of this request may state event times for `source`.
    pub fn vouches_for(&self, source: &str) -> bool {
        self.voucher
            .is_some_and(|v| v.vouches_for.iter().any(|s| s == source))
    }
}

#[derive(Debug)]
pub struct SourceRegistry {
    sources: HashMap<String, Source>,
    clients_by_key_hash: HashMap<String, Client>,
}

/// Hex SHA-256 of an API key, as config stores it (`lead-lab hash-key`).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// What a request presents: the key of the source it posts for and, from the simulator
/// only, its own key with the time the replayed event happened. The two are separate so
/// a replayed attempt can carry a wrong source key (that is the incident being replayed)
/// and still land on its simulated day.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// `Authorization: Bearer KEY` or `X-Api-Key: KEY`.
    pub key: Option<&'a str>,
    /// `X-Simulator-Key: KEY` (a key with the simulator role).
    pub simulator_key: Option<&'a str>,
    /// `X-Submitted-At: RFC 3339`, honoured only with a valid simulator key.
    pub submitted_at: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    pub fn from_headers(headers: &'a poem::http::HeaderMap) -> Self {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer "));
        Self {
            key: bearer.map(str::trim).or_else(|| header("x-api-key")),
            simulator_key: header("x-simulator-key"),
            submitted_at: header("x-submitted-at"),
        }
    }

    pub fn stated_time(
        &self,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, MalformedStatedTime> {
        let Some(text) = self.submitted_at else {
            return Ok(None);
        };
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|at| Some(at.to_utc()))
            .map_err(|_| MalformedStatedTime)
    }
}

impl SourceRegistry {
    pub fn new(sources: &[SourceSettings], default_limit: RateLimitSettings) -> Self {
        let mut clients_by_key_hash = HashMap::new();
        for source in sources {
            for key in &source.keys {
                let simulator = key.roles.contains(&KeyRole::Simulator);
                let vouches_for = if simulator {
                    std::iter::once(&source.name)
                        .chain(&key.vouches_for)
                        .cloned()
                        .collect()
                } else {
                    Vec::new()
                };
                let client = Client {
                    id: key.id.clone(),
                    source: source.name.clone(),
                    limit: key.rate_limit.unwrap_or(default_limit),
                    vouches_for,
                };
                clients_by_key_hash.insert(key.sha256.to_ascii_lowercase(), client);
            }
        }
        let sources = sources
            .iter()
            .map(|s| {
                let source = Source {
                    name: s.name.clone(),
                    enabled: s.enabled,
                    require_consent: s.require_consent,
                };
                (s.name.clone(), source)
            })
            .collect();
        Self {
            sources,
            clients_by_key_hash,
        }
    }

    /// Looks the request's keys up once (hashing is per request, not per lead of a
    /// batch): whose key it carries, and which simulator key, if any, vouches for stated
    /// times (its own key with the simulator role, or `X-Simulator-Key`).
    pub fn identify(&self, creds: &Credentials<'_>) -> Caller<'_> {
        let client_of =
            |key: Option<&str>| key.and_then(|k| self.clients_by_key_hash.get(&hash_key(k)));
        let is_simulator = |c: &&Client| !c.vouches_for.is_empty();
        let client = client_of(creds.key);
        let voucher = client
            .filter(is_simulator)
            .or_else(|| client_of(creds.simulator_key).filter(is_simulator));
        Caller {
            client,
            voucher,
            stated: creds.stated_time(),
        }
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.get(name)
    }

    /// Checks the presented key against the source the lead claims to come from.
    /// A valid key of *another* source is its own reason: it is the classic
    /// misconfiguration (a site deployed with a sibling's key), not an attack.
    pub fn authenticate<'r>(
        &'r self,
        caller: &Caller<'r>,
        claimed_source: &str,
    ) -> Result<&'r Client, Reason> {
        let client = caller.client.ok_or(Reason::Unauthorized)?;
        if client.source != claimed_source {
            return Err(Reason::SourceKeyMismatch);
        }
        match self.sources.get(&client.source) {
            Some(source) if source.enabled => Ok(client),
            _ => Err(Reason::SourceDisabled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySettings;

    fn registry() -> SourceRegistry {
        let source = |name: &str, enabled: bool, key: &str| SourceSettings {
            name: name.into(),
            enabled,
            require_consent: false,
            keys: vec![KeySettings {
                id: format!("{name}-key"),
                sha256: hash_key(key),
                roles: vec![],
                rate_limit: None,
                vouches_for: vec![],
            }],
        };
        SourceRegistry::new(
            &[
                source("quiz", true, "quiz-secret"),
                source("qr_code", false, "qr-secret"),
            ],
            RateLimitSettings::default(),
        )
    }

    fn creds(key: Option<&'static str>) -> Credentials<'static> {
        Credentials {
            key,
            ..Credentials::default()
        }
    }

    #[test]
    fn a_valid_key_for_the_claimed_source_is_accepted() {
        let registry = registry();
        let client = registry
            .authenticate(&registry.identify(&creds(Some("quiz-secret"))), "quiz")
            .unwrap();
        assert_eq!(client.id, "quiz-key");
    }

    #[test]
    fn refusals_name_why() {
        let registry = registry();
        for (key, source, why) in [
            (None, "quiz", Reason::Unauthorized),
            (Some("guess"), "quiz", Reason::Unauthorized),
            // Another source's key is a mismatch, not unauthorized.
            (Some("quiz-secret"), "qr_code", Reason::SourceKeyMismatch),
            // A disabled source is refused even with its own key.
            (Some("qr-secret"), "qr_code", Reason::SourceDisabled),
        ] {
            assert_eq!(refusal(&registry, key, source), why, "{key:?} for {source}");
        }
    }

    /// Why `registry` refuses a request with this key (if any) for `source`.
    fn refusal(registry: &SourceRegistry, key: Option<&'static str>, source: &str) -> Reason {
        registry
            .authenticate(&registry.identify(&creds(key)), source)
            .unwrap_err()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> poem::http::HeaderMap {
        let mut headers = poem::http::HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        let h = headers(&[("authorization", "Bearer abc")]);
        assert_eq!(Credentials::from_headers(&h).key, Some("abc"));
        let h = headers(&[("x-api-key", " def ")]);
        assert_eq!(Credentials::from_headers(&h).key, Some("def"));
        let h = headers(&[]);
        assert_eq!(Credentials::from_headers(&h).key, None);
    }

    fn simulator_registry() -> SourceRegistry {
        let key = |id: &str, secret: &str, roles: Vec<KeyRole>, vouches: &[&str]| KeySettings {
            id: id.into(),
            sha256: hash_key(secret),
            roles,
            rate_limit: None,
            vouches_for: vouches.iter().map(|s| s.to_string()).collect(),
        };
        let settings = vec![
            SourceSettings {
                name: "quiz".into(),
                enabled: true,
                require_consent: false,
                keys: vec![
                    key("quiz-sim", "sim-secret", vec![KeyRole::Simulator], &[]),
                    key("quiz-live", "live-secret", vec![], &[]),
                ],
            },
            SourceSettings {
                name: "partner_api".into(),
                enabled: true,
                require_consent: false,
                keys: vec![key(
                    "partner-sim",
                    "partner-sim-secret",
                    vec![KeyRole::Simulator],
                    &["quiz"],
                )],
            },
        ];
        SourceRegistry::new(&settings, RateLimitSettings::default())
    }

    #[test]
    fn a_simulator_key_vouches_only_for_its_configured_sources() {
        let registry = simulator_registry();
        let h = headers(&[
            ("authorization", "Bearer rotated-key"),
            ("x-simulator-key", "sim-secret"),
            ("x-submitted-at", "2026-11-20T10:00:00Z"),
        ]);
        let creds = Credentials::from_headers(&h);
        let caller = registry.identify(&creds);
        assert!(caller.has_valid_key());
        assert!(caller.vouches_for("quiz"));
        assert!(!caller.vouches_for("partner_api"), "not its source");
        assert_eq!(
            caller.stated.unwrap().unwrap().to_rfc3339(),
            "2026-11-20T10:00:00+00:00"
        );
        let h = headers(&[("x-simulator-key", "partner-sim-secret")]);
        let caller = registry.identify(&Credentials::from_headers(&h));
        assert!(caller.vouches_for("partner_api") && caller.vouches_for("quiz"));
    }

    #[test]
    fn a_live_key_vouches_for_nothing() {
        let registry = simulator_registry();
        let h = headers(&[
            ("authorization", "Bearer live-secret"),
            ("x-simulator-key", "guess"),
        ]);
        let caller = registry.identify(&Credentials::from_headers(&h));
        assert!(caller.has_valid_key());
        assert!(!caller.vouches_for("quiz"));
        assert_eq!(caller.key_source(), Some("quiz"));
    }

    #[test]
    fn a_malformed_stated_time_is_reported_not_ignored() {
        let h = headers(&[("x-submitted-at", "yesterday")]);
        assert_eq!(
            Credentials::from_headers(&h).stated_time(),
            Err(MalformedStatedTime)
        );
        let h = headers(&[]);
        assert_eq!(Credentials::from_headers(&h).stated_time(), Ok(None));
    }
}
