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
    pub simulator: bool,
    pub limit: RateLimitSettings,
}

/// A request's credentials, resolved against the registry.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'r> {
    client: Option<&'r Client>,
    /// A simulator vouches for stated event times.
    pub trusted: bool,
    /// The event time the request states, when trusted.
    pub stated: Option<chrono::DateTime<chrono::Utc>>,
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

    pub fn stated_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let stated = chrono::DateTime::parse_from_rfc3339(self.submitted_at?).ok()?;
        Some(stated.to_utc())
    }
}

impl SourceRegistry {
    pub fn new(sources: &[SourceSettings], default_limit: RateLimitSettings) -> Self {
        let mut clients_by_key_hash = HashMap::new();
        for source in sources {
            for key in &source.keys {
                let client = Client {
                    id: key.id.clone(),
                    source: source.name.clone(),
                    simulator: key.roles.contains(&KeyRole::Simulator),
                    limit: key.rate_limit.unwrap_or(default_limit),
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
    /// batch): whose key it carries, and whether a simulator vouches for its stated time
    /// (its own key, or a source key with the simulator role).
    pub fn identify(&self, creds: &Credentials<'_>) -> Caller<'_> {
        let client_of =
            |key: Option<&str>| key.and_then(|k| self.clients_by_key_hash.get(&hash_key(k)));
        let client = client_of(creds.key);
        let trusted = client.is_some_and(|c| c.simulator)
            || client_of(creds.simulator_key).is_some_and(|c| c.simulator);
        Caller {
            client,
            trusted,
            stated: creds.stated_time().filter(|_| trusted),
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
    fn missing_or_unknown_keys_are_unauthorized() {
        let registry = registry();
        assert_eq!(
            registry
                .authenticate(&registry.identify(&creds(None)), "quiz")
                .unwrap_err(),
            Reason::Unauthorized
        );
        assert_eq!(
            registry
                .authenticate(&registry.identify(&creds(Some("guess"))), "quiz")
                .unwrap_err(),
            Reason::Unauthorized
        );
    }

    #[test]
    fn another_sources_key_is_a_mismatch_not_unauthorized() {
        let registry = registry();
        assert_eq!(
            registry
                .authenticate(&registry.identify(&creds(Some("quiz-secret"))), "qr_code")
                .unwrap_err(),
            Reason::SourceKeyMismatch
        );
    }

    #[test]
    fn a_disabled_source_is_refused_even_with_its_own_key() {
        let registry = registry();
        assert_eq!(
            registry
                .authenticate(&registry.identify(&creds(Some("qr-secret"))), "qr_code")
                .unwrap_err(),
            Reason::SourceDisabled
        );
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

    #[test]
    fn only_a_simulator_key_makes_a_request_trusted() {
        let mut settings = vec![SourceSettings {
            name: "quiz".into(),
            enabled: true,
            require_consent: false,
            keys: vec![KeySettings {
                id: "quiz-sim".into(),
                sha256: hash_key("sim-secret"),
                roles: vec![KeyRole::Simulator],
                rate_limit: None,
            }],
        }];
        settings[0].keys.push(KeySettings {
            id: "quiz-live".into(),
            sha256: hash_key("live-secret"),
            roles: vec![],
            rate_limit: None,
        });
        let registry = SourceRegistry::new(&settings, RateLimitSettings::default());
        let h = headers(&[
            ("authorization", "Bearer rotated-key"),
            ("x-simulator-key", "sim-secret"),
            ("x-submitted-at", "2026-11-20T10:00:00Z"),
        ]);
        let creds = Credentials::from_headers(&h);
        assert!(registry.identify(&creds).trusted);
        assert_eq!(
            creds.stated_time().unwrap().to_rfc3339(),
            "2026-11-20T10:00:00+00:00"
        );
        let h = headers(&[
            ("authorization", "Bearer live-secret"),
            ("x-simulator-key", "guess"),
        ]);
        let caller = registry.identify(&Credentials::from_headers(&h));
        assert!(!caller.trusted && caller.stated.is_none());
    }
}
