//! Lead sources, their API keys, and the HTML forms that post on their behalf.
//! These are lists, so they come from the TOML file only (no env vars).

use serde::{Deserialize, Serialize};

use super::service::RateLimitSettings;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// Closed set: the `lead.source` attribute only ever takes a configured name.
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Leads from this source must carry `consent: true`.
    #[serde(default)]
    pub require_consent: bool,
    #[serde(default)]
    pub keys: Vec<KeySettings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// Names the client in telemetry (`lead.client_id`) and in rate limiting.
    pub id: String,
    /// Hex SHA-256 of the key (`lead-lab hash-key KEY` prints it); keys are never stored.
    pub sha256: String,
    /// `simulator`: may state `submitted_at` (backfilling history).
    #[serde(default)]
    pub roles: Vec<KeyRole>,
    /// Overrides the default `[rate_limit]` for this key.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSettings>,
    /// Sources besides its own that a `simulator` key may state event times for. A
    /// simulator key vouches for nothing else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vouches_for: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    Simulator,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormSettings {
    /// The `{form_id}` of `POST /v1/forms/{form_id}`.
    pub id: String,
    pub source: String,
    pub page: String,
}

fn yes() -> bool {
    true
}

/// Cross-checks the lists: unique names and key ids, well-formed key hashes, forms that
/// point at a configured source, and usable rate limits.
pub fn check(
    sources: &[SourceSettings],
    forms: &[FormSettings],
    default_limit: &RateLimitSettings,
) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    let mut key_ids = std::collections::HashSet::new();
    let mut hashes = std::collections::HashSet::new();
    check_limit("rate_limit", default_limit)?;
    for source in sources {
        if !is_slug(&source.name) {
            return Err(format!(
                "source name `{}` must match [a-z0-9_-]{{1,64}}",
                source.name
            ));
        }
        if !names.insert(source.name.as_str()) {
            return Err(format!("source `{}` is configured twice", source.name));
        }
        for key in &source.keys {
            if !is_slug(&key.id) || !key_ids.insert(key.id.as_str()) {
                return Err(format!(
                    "key id `{}` must be a unique [a-z0-9_-]{{1,64}}",
                    key.id
                ));
            }
            let well_formed =
                key.sha256.len() == 64 && key.sha256.chars().all(|c| c.is_ascii_hexdigit());
            if !well_formed {
                return Err(format!(
                    "key `{}`: sha256 must be 64 hex digits (lead-lab hash-key KEY)",
                    key.id
                ));
            }
            if !hashes.insert(key.sha256.to_ascii_lowercase()) {
                return Err(format!("key `{}` has the same hash as another key", key.id));
            }
            if let Some(limit) = &key.rate_limit {
                check_limit(&key.id, limit)?;
            }
            if !key.vouches_for.is_empty() && !key.roles.contains(&KeyRole::Simulator) {
                return Err(format!(
                    "key `{}`: vouches_for needs the simulator role",
                    key.id
                ));
            }
        }
    }
    for key in sources.iter().flat_map(|s| &s.keys) {
        if let Some(unknown) = key.vouches_for.iter().find(|v| !names.contains(v.as_str())) {
            return Err(format!(
                "key `{}` vouches for unknown source `{unknown}`",
                key.id
            ));
        }
    }
    let mut form_ids = std::collections::HashSet::new();
    for form in forms {
        if !is_slug(&form.id) || !form_ids.insert(form.id.as_str()) {
            return Err(format!(
                "form id `{}` must be a unique [a-z0-9_-]{{1,64}}",
                form.id
            ));
        }
        if !names.contains(form.source.as_str()) {
            return Err(format!(
                "form `{}` names unknown source `{}`",
                form.id, form.source
            ));
        }
    }
    Ok(())
}

fn check_limit(owner: &str, limit: &RateLimitSettings) -> Result<(), String> {
    if limit.burst == 0 || !(limit.per_second > 0.0 && limit.per_second.is_finite()) {
        return Err(format!(
            "{owner}: rate limit needs burst >= 1 and per_second > 0"
        ));
    }
    Ok(())
}

/// Lower-case letters, digits, `_` and `-`; 1 to 64 characters.
pub fn is_slug(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
