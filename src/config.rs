//! Settings, layered: built-in defaults, then a TOML file, then `LEADLAB_*` env vars.
//!
//! Every setting is listed once in [`SETTINGS`]: that table drives the env var mapping,
//! the settings section of `lead-lab --help` and a test that keeps
//! docs/configuration.md complete, so a new setting cannot go undocumented.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

pub mod analyzer;
pub mod schema;
pub mod secret;
pub mod service;
pub mod sources;
pub mod state;

pub use analyzer::{AnalyzerSettings, DetectorSettings, LlmProvider, LlmSettings};
pub use schema::{SETTINGS, SettingDoc};
pub use secret::Secret;
pub use service::{
    DeliveryKind, DeliverySettings, HttpSettings, IngestSettings, KeylessSettings, OtelSettings,
    OtlpProtocol, RateLimitSettings, UnknownFields,
};
pub use sources::{FormSettings, KeyRole, KeySettings, SourceSettings};
pub use state::StateSettings;

/// The prefix of every environment variable this program reads.
pub const ENV_PREFIX: &str = "LEADLAB_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("cannot read config file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("invalid setting {key}: {reason}")]
    OutOfRange { key: &'static str, reason: String },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Bearer token of the analysis endpoints; empty disables them.
    pub admin_token: Secret,
    pub clickhouse: ClickHouseSettings,
    pub schema: SchemaSettings,
    pub log: LogSettings,
    pub http: HttpSettings,
    pub otel: OtelSettings,
    pub ingest: IngestSettings,
    pub delivery: DeliverySettings,
    pub rate_limit: RateLimitSettings,
    pub keyless: KeylessSettings,
    pub state: StateSettings,
    pub analyzer: AnalyzerSettings,
    pub llm: LlmSettings,
    pub detectors: DetectorSettings,
    pub sources: Vec<SourceSettings>,
    pub forms: Vec<FormSettings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseSettings {
    /// HTTP interface of ClickHouse (or of the local dev server).
    pub url: String,
    pub user: String,
    pub password: Secret,
    /// Database that holds every table of this project.
    pub database: String,
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            user: "default".into(),
            password: Secret::default(),
            database: "otel".into(),
        }
    }
}

/// How `lead-lab migrate` renders the versioned SQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaSettings {
    /// When set, DDL runs `ON CLUSTER` this cluster.
    pub cluster: Option<String>,
    /// Use Replicated*MergeTree engines (needs a cluster with Keeper).
    pub replicated: bool,
    /// Spread the data over the cluster's shards: local `*_local` tables under
    /// Distributed tables with the names readers and writers use (needs `cluster`).
    pub sharded: bool,
    /// Retention of raw telemetry (spans, logs, metric points).
    pub telemetry_ttl_days: u32,
    /// Retention of the typed `lead_submissions` rows.
    pub submissions_ttl_days: u32,
}

impl Default for SchemaSettings {
    fn default() -> Self {
        Self {
            cluster: None,
            replicated: false,
            sharded: false,
            telemetry_ttl_days: 30,
            submissions_ttl_days: 400,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A tracing filter directive, e.g. `info` or `lead_lab=debug,info`.
    pub level: String,
    pub format: LogFormat,
    /// Level of the one line per rejected or failed lead attempt.
    pub attempt_level: AttemptLogLevel,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            attempt_level: AttemptLogLevel::Warn,
        }
    }
}

/// The level of the line the pipeline logs for each rejected or failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptLogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
}

impl AttemptLogLevel {
    pub fn level(self) -> Option<tracing::Level> {
        match self {
            Self::Off => None,
            Self::Error => Some(tracing::Level::ERROR),
            Self::Warn => Some(tracing::Level::WARN),
            Self::Info => Some(tracing::Level::INFO),
            Self::Debug => Some(tracing::Level::DEBUG),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Settings {
    /// Loads defaults, then `file` (which must exist when given), then env vars.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // No `Serialized::defaults`: every struct is `#[serde(default)]`, and a secret's
        // serialised form is `[redacted]`, which must never become a value.
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            figment = match file_with_aliases(path)? {
                Some(rewritten) => figment.merge(Toml::string(&rewritten)),
                None => figment.merge(Toml::file(path)),
            };
        }
        // An alias env var (LEADLAB_OLLAMA_URL) first, so the new name (LEADLAB_LLM_URL)
        // wins when both are set.
        let aliases = Env::prefixed(ENV_PREFIX).filter_map(|key| {
            schema::setting_for_alias_env_suffix(key.as_str()).map(|setting| setting.key.into())
        });
        let env = Env::prefixed(ENV_PREFIX).filter_map(|key| {
            schema::setting_for_env_suffix(key.as_str()).map(|setting| setting.key.into())
        });
        let figment = figment.merge(aliases);
        let settings: Settings = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.check_service()?;
        if self.llm.max_output_tokens < 256 {
            return Err(ConfigError::OutOfRange {
                key: "llm.max_output_tokens",
                reason: format!("{} is below 256 tokens", self.llm.max_output_tokens),
            });
        }
        for (key, days) in [
            ("schema.telemetry_ttl_days", self.schema.telemetry_ttl_days),
            (
                "schema.submissions_ttl_days",
                self.schema.submissions_ttl_days,
            ),
        ] {
            if !(1..=36_500).contains(&days) {
                return Err(ConfigError::OutOfRange {
                    key,
                    reason: format!("{days} is not between 1 and 36500 days"),
                });
            }
        }
        Ok(())
    }

    fn check_service(&self) -> Result<(), ConfigError> {
        let fail = |key, reason: String| Err(ConfigError::OutOfRange { key, reason });
        if self.analyzer.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return fail(
                "analyzer.time_zone",
                format!("`{}` is not an IANA time zone", self.analyzer.time_zone),
            );
        }
        if let Err(err) = self.analyzer.schedule.parse::<cron::Schedule>() {
            return fail(
                "analyzer.schedule",
                format!(
                    "`{}` is not a cron expression with seconds: {err}",
                    self.analyzer.schedule
                ),
            );
        }
        if self.delivery.kind == DeliveryKind::Webhook && self.delivery.url.is_empty() {
            return fail(
                "delivery.url",
                "required when delivery.kind = webhook".into(),
            );
        }
        if self.delivery.max_attempts == 0 {
            return fail("delivery.max_attempts", "must be at least 1".into());
        }
        if self.http.batch_max_leads == 0 || self.http.max_body_bytes == 0 {
            return fail(
                "http",
                "batch_max_leads and max_body_bytes must be positive".into(),
            );
        }
        let http = &self.http;
        let limits = [
            http.max_connections,
            http.max_in_flight,
            http.header_read_timeout_ms as usize,
            http.body_read_timeout_ms as usize,
        ];
        if limits.contains(&0) {
            return fail(
                "http",
                "max_connections, max_in_flight and the read timeouts must be positive".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.otel.trace_sample_ratio) {
            return fail(
                "otel.trace_sample_ratio",
                format!("{} is not between 0 and 1", self.otel.trace_sample_ratio),
            );
        }
        let keyless = &self.keyless;
        if keyless.burst == 0
            || !(keyless.per_second > 0.0 && keyless.per_second.is_finite())
            || keyless.max_addresses < 2
        {
            return fail(
                "keyless",
                "burst >= 1, per_second > 0 and max_addresses >= 2 are needed".into(),
            );
        }
        if let Err((key, reason)) = self.state.check() {
            return fail(key, reason);
        }
        sources::check(&self.sources, &self.forms, &self.rate_limit).map_err(|reason| {
            ConfigError::OutOfRange {
                key: "sources",
                reason,
            }
        })
    }

    /// The effective settings as TOML; secrets print as `[redacted]` by their type.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).expect("settings always serialize to TOML")
    }
}

/// The file's text with every alias section (`[ollama]`) folded into its new name
/// (`[llm]`, whose own keys win), or `None` when the file uses no alias.
fn file_with_aliases(path: &Path) -> Result<Option<String>, ConfigError> {
    let unreadable = |reason: String| ConfigError::Unreadable {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|err| unreadable(err.to_string()))?;
    let Ok(mut table) = text.parse::<toml::Table>() else {
        return Ok(None); // figment reports the syntax error with the file's name
    };
    let mut rewritten = false;
    for (old, new) in schema::SECTION_ALIASES {
        let Some(alias) = table.remove(*old) else {
            continue;
        };
        let toml::Value::Table(alias) = alias else {
            return Err(unreadable(format!("[{old}] must be a table")));
        };
        let entry = table
            .entry(new.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(current) = entry else {
            return Err(unreadable(format!("[{new}] must be a table")));
        };
        for (key, value) in alias {
            current.entry(key).or_insert(value);
        }
        rewritten = true;
    }
    if !rewritten {
        return Ok(None);
    }
    toml::to_string(&table)
        .map(Some)
        .map_err(|err| unreadable(err.to_string()))
}

#[cfg(test)]
// figment's Jail closures return figment::Error, whose size is not ours to change.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    /// Runs `test` in a figment jail with no environment variables, so the machine's own
    /// LEADLAB_* variables cannot leak into it.
    fn in_clean_jail(test: impl FnOnce(&mut Jail) -> figment::error::Result<()>) {
        Jail::expect_with(|jail| {
            jail.clear_env();
            test(jail)
        });
    }
    use figment::Jail;

    #[test]
    fn defaults_point_at_the_local_stack() {
        in_clean_jail(|_| {
            let s = Settings::load(None).unwrap();
            assert_eq!(s.clickhouse.url, "http://127.0.0.1:8123");
            assert_eq!(s.clickhouse.user, "default");
            assert_eq!(s.clickhouse.database, "otel");
            Ok(())
        });
    }

    #[test]
    fn env_overrides_file_which_overrides_defaults() {
        in_clean_jail(|jail| {
            jail.create_file(
                "lab.toml",
                "[clickhouse]\nurl = \"http://file:8123\"\ndatabase = \"from_file\"\n",
            )?;
            jail.set_env("LEADLAB_CLICKHOUSE_URL", "http://env:8123");
            jail.set_env("LEADLAB_SCHEMA_TELEMETRY_TTL_DAYS", "7");
            let s = Settings::load(Some(Path::new("lab.toml"))).unwrap();
            assert_eq!(s.clickhouse.url, "http://env:8123");
            assert_eq!(s.clickhouse.database, "from_file");
            assert_eq!(s.schema.telemetry_ttl_days, 7);
            Ok(())
        });
    }

    #[test]
    fn unrelated_leadlab_variables_are_ignored() {
        in_clean_jail(|jail| {
            jail.set_env("LEADLAB_CH_PORT", "18123");
            jail.set_env("LEADLAB_CONFIG", "whatever.toml");
            assert!(Settings::load(None).is_ok());
            Ok(())
        });
    }

    #[test]
    fn a_typo_in_the_file_is_an_error_not_a_silent_default() {
        in_clean_jail(|jail| {
            jail.create_file("lab.toml", "[clickhouse]\nulr = \"http://x\"\n")?;
            let err = Settings::load(Some(Path::new("lab.toml"))).unwrap_err();
            assert!(err.to_string().contains("ulr"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_named() {
        in_clean_jail(|_| {
            let err = Settings::load(Some(Path::new("nope.toml"))).unwrap_err();
            assert!(matches!(err, ConfigError::MissingFile(_)));
            Ok(())
        });
    }

    #[test]
    fn ttl_out_of_range_is_refused() {
        in_clean_jail(|jail| {
            jail.set_env("LEADLAB_SCHEMA_SUBMISSIONS_TTL_DAYS", "0");
            let err = Settings::load(None).unwrap_err();
            assert!(err.to_string().contains("submissions_ttl_days"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_shipped_local_config_loads_and_its_documented_demo_keys_work() {
        in_clean_jail(|_| {
            let file = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/local.toml"));
            let settings = Settings::load(Some(file)).unwrap();
            assert!(!settings.sources.is_empty() && !settings.forms.is_empty());
            for source in &settings.sources {
                let slug = source.name.replace('_', "-");
                for key in [format!("demo-{slug}-key"), format!("demo-{slug}-sim-key")] {
                    let hash = crate::ingest::hash_key(&key);
                    assert!(
                        source.keys.iter().any(|k| k.sha256 == hash),
                        "{key} is not a key of {}",
                        source.name
                    );
                }
            }
            Ok(())
        });
    }

    #[test]
    fn no_printed_form_of_the_settings_shows_a_secret() {
        let mut s = Settings {
            admin_token: "admin-tok-1".into(),
            ..Settings::default()
        };
        s.clickhouse.password = "hunter2".into();
        s.ingest.submitter_secret = "pepper-3".into();
        s.llm.api_key = "sk-very-secret".into();
        s.state.url = "redis://:redis-pw-5@127.0.0.1:6379".into();
        let printed = [s.to_redacted_toml(), format!("{s:?}"), format!("{s:#?}")];
        for shown in &printed {
            for secret in [
                "admin-tok-1",
                "hunter2",
                "pepper-3",
                "sk-very-secret",
                "redis-pw-5",
            ] {
                assert!(!shown.contains(secret), "{secret} printed");
            }
            assert!(shown.contains(secret::REDACTED));
        }
        assert_eq!(s.clickhouse.password.expose(), "hunter2");
    }

    #[test]
    fn secrets_still_load_from_env_and_defaults() {
        in_clean_jail(|jail| {
            jail.set_env("LEADLAB_CLICKHOUSE_PASSWORD", "from-env");
            let s = Settings::load(None).unwrap();
            assert_eq!(s.clickhouse.password.expose(), "from-env");
            assert_eq!(s.ingest.submitter_secret.expose(), "change-me-local-only");
            // Without a file, what loads is the defaults, field for field.
            let mut expected = Settings::default();
            expected.clickhouse.password = "from-env".into();
            assert_eq!(s, expected);
            Ok(())
        });
    }

    #[test]
    fn ollama_settings_are_aliases_of_llm_and_lose_to_it() {
        in_clean_jail(|jail| {
            jail.create_file(
                "lab.toml",
                "[ollama]\nurl = \"http://old:11434\"\nmodel = \"old\"\nseed = 7\n\n[llm]\nmodel = \"new\"\n",
            )?;
            let s = Settings::load(Some(Path::new("lab.toml"))).unwrap();
            assert_eq!(s.llm.url, "http://old:11434");
            assert_eq!(s.llm.model, "new");
            assert_eq!(s.llm.seed, 7);
            jail.set_env("LEADLAB_OLLAMA_MODEL", "env-old");
            jail.set_env("LEADLAB_OLLAMA_TIMEOUT_MS", "5");
            let s = Settings::load(Some(Path::new("lab.toml"))).unwrap();
            assert_eq!(s.llm.model, "env-old", "env beats the file");
            assert_eq!(s.llm.timeout_ms, 5);
            jail.set_env("LEADLAB_LLM_MODEL", "env-new");
            jail.set_env("LEADLAB_LLM_PROVIDER", "openai");
            let s = Settings::load(Some(Path::new("lab.toml"))).unwrap();
            assert_eq!(s.llm.model, "env-new", "the new name beats the alias");
            assert_eq!(s.llm.provider, LlmProvider::Openai);
            jail.create_file("typo.toml", "[ollama]\nulr = \"x\"\n")?;
            let err = Settings::load(Some(Path::new("typo.toml"))).unwrap_err();
            assert!(err.to_string().contains("ulr"), "{err}");
            Ok(())
        });
    }
}
