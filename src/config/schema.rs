//! The one list of settings: key in the TOML file, env var, default and meaning.

/// One documented setting. `key` is `section.name` in the TOML file; the env var is
/// `LEADLAB_` + the key upper-cased with the dot replaced by `_`.
#[derive(Debug, Clone, Copy)]
pub struct SettingDoc {
    pub key: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

impl SettingDoc {
    pub fn env_var(&self) -> String {
        format!("{}{}", super::ENV_PREFIX, self.env_suffix())
    }

    fn env_suffix(&self) -> String {
        self.key.replace('.', "_").to_ascii_uppercase()
    }
}

pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc {
        key: "clickhouse.url",
        default: "http://127.0.0.1:8123",
        meaning: "ClickHouse HTTP interface (the local dev server or clickhouse-server)",
    },
    SettingDoc {
        key: "clickhouse.user",
        default: "default",
        meaning: "ClickHouse user",
    },
    SettingDoc {
        key: "clickhouse.password",
        default: "(empty)",
        meaning: "ClickHouse password (never printed)",
    },
    SettingDoc {
        key: "clickhouse.database",
        default: "otel",
        meaning: "database holding the OTel tables, lead_submissions and the analyzer's tables",
    },
    SettingDoc {
        key: "schema.cluster",
        default: "(none)",
        meaning: "run migrations ON CLUSTER this cluster",
    },
    SettingDoc {
        key: "schema.replicated",
        default: "false",
        meaning: "create Replicated*MergeTree tables (clusters with Keeper)",
    },
    SettingDoc {
        key: "schema.sharded",
        default: "false",
        meaning: "spread the data over the cluster's shards: `*_local` tables under Distributed tables that keep the names readers use (needs `schema.cluster`; docs/scaling.md#clickhouse)",
    },
    SettingDoc {
        key: "schema.telemetry_ttl_days",
        default: "30",
        meaning: "days raw spans, logs and metric points are kept (applied when a table is created)",
    },
    SettingDoc {
        key: "schema.submissions_ttl_days",
        default: "400",
        meaning: "days lead_submissions rows are kept (applied when the table is created)",
    },
    SettingDoc {
        key: "log.level",
        default: "info",
        meaning: "log filter, e.g. `info` or `lead_lab=debug,info` (RUST_LOG wins when set)",
    },
    SettingDoc {
        key: "log.format",
        default: "text",
        meaning: "log format on stderr: text or json",
    },
    SettingDoc {
        key: "log.attempt_level",
        default: "warn",
        meaning: "level of the one log line per rejected or failed lead attempt (trace and span id, endpoint, source, outcome, reason; never lead data): off, error, warn, info or debug",
    },
    SettingDoc {
        key: "http.listen",
        default: "127.0.0.1:8080",
        meaning: "address `serve` listens on (port 0 picks a free one)",
    },
    SettingDoc {
        key: "http.max_body_bytes",
        default: "65536",
        meaning: "request bodies above this size are refused with 413 payload_too_large",
    },
    SettingDoc {
        key: "http.batch_max_leads",
        default: "100",
        meaning: "most leads one POST /v1/leads/batch may carry",
    },
    SettingDoc {
        key: "http.shutdown_grace_secs",
        default: "10",
        meaning: "on SIGTERM/SIGINT, how long in-flight requests and running analyses may still take (unfinished analyses resume at the next start)",
    },
    SettingDoc {
        key: "http.max_connections",
        default: "4096",
        meaning: "open connections at most; beyond it new ones wait in the listen backlog",
    },
    SettingDoc {
        key: "http.max_in_flight",
        default: "1024",
        meaning: "requests handled at once at most; beyond it 503 overloaded (health probes exempt)",
    },
    SettingDoc {
        key: "http.header_read_timeout_ms",
        default: "30000",
        meaning: "a request's headers must arrive within this; also the idle keep-alive limit",
    },
    SettingDoc {
        key: "http.body_read_timeout_ms",
        default: "10000",
        meaning: "a request's whole body must arrive within this (408 request_timeout)",
    },
    SettingDoc {
        key: "otel.enabled",
        default: "true",
        meaning: "export traces and metrics over OTLP (off: the service serves but /readyz says not ready)",
    },
    SettingDoc {
        key: "otel.endpoint",
        default: "http://127.0.0.1:4317",
        meaning: "collector address (gRPC 4317 or HTTP 4318)",
    },
    SettingDoc {
        key: "otel.protocol",
        default: "grpc",
        meaning: "grpc or http (protobuf over HTTP)",
    },
    SettingDoc {
        key: "otel.service_name",
        default: "lead-lab",
        meaning: "service.name resource attribute",
    },
    SettingDoc {
        key: "otel.environment",
        default: "local",
        meaning: "deployment.environment resource attribute",
    },
    SettingDoc {
        key: "otel.max_queue_size",
        default: "65536",
        meaning: "spans buffered for export, and log records in a queue of their own; beyond it new ones are dropped and counted",
    },
    SettingDoc {
        key: "otel.max_export_batch_size",
        default: "512",
        meaning: "spans (and log records) per export batch; a batch that fills is sent at once, and batches waiting behind an export go together in one request of up to 2 MiB",
    },
    SettingDoc {
        key: "otel.scheduled_delay_ms",
        default: "500",
        meaning: "how often buffered spans (and log records) are exported; a batch that fills goes at once",
    },
    SettingDoc {
        key: "otel.metrics_interval_ms",
        default: "5000",
        meaning: "how often metrics are exported",
    },
    SettingDoc {
        key: "otel.export_timeout_ms",
        default: "5000",
        meaning: "timeout of one export, its retries included",
    },
    SettingDoc {
        key: "otel.trace_sample_ratio",
        default: "1.0",
        meaning: "share of request traces sampled at the root (0–1); lead.submit spans are always recorded",
    },
    SettingDoc {
        key: "otel.instance_id",
        default: "(a new UUID per start)",
        meaning: "service.instance.id resource attribute",
    },
    SettingDoc {
        key: "ingest.submitter_secret",
        default: "change-me-local-only",
        meaning: "HMAC key of submitter hashes (never printed)",
    },
    SettingDoc {
        key: "ingest.unknown_fields",
        default: "reject",
        meaning: "fields the API does not define: reject (invalid_payload) or ignore",
    },
    SettingDoc {
        key: "ingest.dedup_window_secs",
        default: "86400",
        meaning: "same submitter + source + page within this many seconds is a duplicate",
    },
    SettingDoc {
        key: "delivery.kind",
        default: "none",
        meaning: "where accepted leads go: none or webhook",
    },
    SettingDoc {
        key: "delivery.url",
        default: "(empty)",
        meaning: "webhook URL (delivery.kind = webhook)",
    },
    SettingDoc {
        key: "delivery.timeout_ms",
        default: "2000",
        meaning: "timeout of one delivery attempt",
    },
    SettingDoc {
        key: "delivery.max_attempts",
        default: "3",
        meaning: "delivery attempts in all, the first included",
    },
    SettingDoc {
        key: "delivery.retry_backoff_ms",
        default: "100",
        meaning: "pause before the second attempt, doubled after each further one",
    },
    SettingDoc {
        key: "rate_limit.burst",
        default: "20",
        meaning: "requests a client key may make at once (token bucket size)",
    },
    SettingDoc {
        key: "rate_limit.per_second",
        default: "5.0",
        meaning: "tokens a client key gets back per second",
    },
    SettingDoc {
        key: "keyless.burst",
        default: "10",
        meaning: "requests without a valid key an address may make at once (checked before the body is read)",
    },
    SettingDoc {
        key: "keyless.per_second",
        default: "1.0",
        meaning: "tokens an address without a valid key gets back per second",
    },
    SettingDoc {
        key: "keyless.max_addresses",
        default: "65536",
        meaning: "addresses the keyless limit tracks at most (memory bound)",
    },
    SettingDoc {
        key: "state.url",
        default: "(empty)",
        meaning: "Redis URL (redis://host:6379) for dedup, rate limits and analysis leases shared by replicas; empty keeps them in this process; never printed",
    },
    SettingDoc {
        key: "state.timeout_ms",
        default: "250",
        meaning: "how long one Redis operation may take before the state counts as unavailable",
    },
    SettingDoc {
        key: "state.lease_ttl_ms",
        default: "30000",
        meaning: "lifetime of an analysis-day lease without renewal: another instance resumes a crashed holder's run after it",
    },
    SettingDoc {
        key: "state.dedup_max_mb",
        default: "64",
        meaning: "memory cap (MiB) of each in-process dedup index; past it the oldest entries are forgotten",
    },
    SettingDoc {
        key: "admin_token",
        default: "(empty)",
        meaning: "Bearer token of the analysis endpoints (empty: they answer 401); never printed",
    },
    SettingDoc {
        key: "analyzer.time_zone",
        default: "UTC",
        meaning: "IANA time zone whose calendar days are analysed",
    },
    SettingDoc {
        key: "analyzer.baseline_days",
        default: "7",
        meaning: "previous days the baseline is computed over",
    },
    SettingDoc {
        key: "analyzer.schedule",
        default: "0 15 1 * * *",
        meaning: "when serve analyses yesterday: cron with seconds, in analyzer.time_zone",
    },
    SettingDoc {
        key: "analyzer.schedule_enabled",
        default: "true",
        meaning: "run the daily schedule inside serve",
    },
    SettingDoc {
        key: "analyzer.workers",
        default: "2",
        meaning: "analyses that may run at once (one per day at most)",
    },
    SettingDoc {
        key: "analyzer.max_attempts",
        default: "3",
        meaning: "attempts of a run before it ends failed or degraded",
    },
    SettingDoc {
        key: "analyzer.retry_backoff_ms",
        default: "2000",
        meaning: "pause before the second attempt, doubled after each further one",
    },
    SettingDoc {
        key: "llm.provider",
        default: "ollama",
        meaning: "API the model server speaks: ollama (/api/chat) or openai (/v1/chat/completions: llama.cpp's llama-server, vLLM, LM Studio, Ollama's /v1)",
    },
    SettingDoc {
        key: "llm.url",
        default: "http://127.0.0.1:11434",
        meaning: "base URL of the model server (openai: without /v1, e.g. http://127.0.0.1:11435)",
    },
    SettingDoc {
        key: "llm.model",
        default: "llama3.1:8b",
        meaning: "model asked to narrate the day (the dev model server serves smollm2:135m)",
    },
    SettingDoc {
        key: "llm.api_key",
        default: "(empty)",
        meaning: "sent as Authorization: Bearer when set (never printed)",
    },
    SettingDoc {
        key: "llm.connect_timeout_ms",
        default: "2000",
        meaning: "connect timeout of a call to the model server",
    },
    SettingDoc {
        key: "llm.timeout_ms",
        default: "120000",
        meaning: "whole-request timeout of one chat call",
    },
    SettingDoc {
        key: "llm.keep_alive",
        default: "10m",
        meaning: "how long Ollama keeps the model loaded after a call (ollama provider only)",
    },
    SettingDoc {
        key: "llm.seed",
        default: "42",
        meaning: "sampling seed, so the same facts give the same words",
    },
    SettingDoc {
        key: "llm.max_context_tokens",
        default: "32768",
        meaning: "upper bound of the context used (the model's own length from the server wins when smaller)",
    },
    SettingDoc {
        key: "llm.max_output_tokens",
        default: "3072",
        meaning: "most tokens the answer may take (num_predict / max_tokens); at most a quarter of the context",
    },
    SettingDoc {
        key: "detectors.min_attempts",
        default: "20",
        meaning: "attempts below which a subject's rates are not compared",
    },
    SettingDoc {
        key: "detectors.volume_change_ratio",
        default: "0.5",
        meaning: "relative change vs baseline that is a volume drop (and, doubled, a spike)",
    },
    SettingDoc {
        key: "detectors.failure_rate_rise",
        default: "0.15",
        meaning: "rise of the failure share (0-1) over baseline that is flagged",
    },
    SettingDoc {
        key: "detectors.concentration_share",
        default: "0.6",
        meaning: "share of a day's failures on one subject that is a concentration",
    },
    SettingDoc {
        key: "detectors.auth_cluster_min",
        default: "10",
        meaning: "source_key_mismatch or unauthorized attempts that make a cluster",
    },
    SettingDoc {
        key: "detectors.burst_per_minute",
        default: "20",
        meaning: "attempts of one client in one minute that make a burst",
    },
    SettingDoc {
        key: "detectors.outage_min_minutes",
        default: "5",
        meaning: "consecutive minutes of downstream failures that make an outage",
    },
    SettingDoc {
        key: "detectors.silence_min_hours",
        default: "3",
        meaning: "hours without traffic that make a usually busy source silent",
    },
    SettingDoc {
        key: "detectors.duplicate_surge_ratio",
        default: "3.0",
        meaning: "duplicates vs the baseline daily mean that make a surge",
    },
    SettingDoc {
        key: "detectors.latency_regression_ratio",
        default: "2.0",
        meaning: "p95 latency vs baseline that is a regression",
    },
    SettingDoc {
        key: "detectors.latency_regression_min_ms",
        default: "100.0",
        meaning: "milliseconds a p95 must also rise above the baseline's to be a regression",
    },
    SettingDoc {
        key: "detectors.trend_significance",
        default: "0.01",
        meaning: "significance level of the gradual-change (Mann-Kendall) test, split over the subjects tested",
    },
    SettingDoc {
        key: "detectors.trend_min_rise",
        default: "0.05",
        meaning: "rise of the failure share (0-1) over baseline, from the hour a trend started, that a gradual change must reach",
    },
    SettingDoc {
        key: "detectors.change_significance",
        default: "0.01",
        meaning: "false discovery rate (Benjamini-Hochberg) of the what-changed detector's tests",
    },
];

/// Settings that are lists of tables, so they come from the TOML file only.
pub const FILE_ONLY_SECTIONS: &[&str] = &["sources", "forms"];

/// Older names of a section, still read: `[ollama]` in the file and `LEADLAB_OLLAMA_*` in
/// the environment mean `[llm]` and `LEADLAB_LLM_*`; the new name wins when both are set.
pub const SECTION_ALIASES: &[(&str, &str)] = &[("ollama", "llm")];

/// The setting an env var (without the `LEADLAB_` prefix, any case) stands for.
pub fn setting_for_env_suffix(suffix: &str) -> Option<&'static SettingDoc> {
    SETTINGS
        .iter()
        .find(|s| s.env_suffix().eq_ignore_ascii_case(suffix))
}

/// The setting an alias env var (e.g. `OLLAMA_URL`, without the prefix) stands for.
pub fn setting_for_alias_env_suffix(suffix: &str) -> Option<&'static SettingDoc> {
    SECTION_ALIASES.iter().find_map(|(old, new)| {
        let rest = suffix.get(old.len()..)?.strip_prefix('_')?;
        if !suffix[..old.len()].eq_ignore_ascii_case(old) {
            return None;
        }
        setting_for_env_suffix(&format!("{new}_{rest}")).filter(|s| s.key != "llm.provider")
    })
}

/// The settings section of `lead-lab --help`.
pub fn help_text() -> String {
    let mut text = String::from(
        "Settings (TOML file given by --config / LEADLAB_CONFIG, each overridden by its env var):\n",
    );
    for s in SETTINGS {
        text.push_str(&format!(
            "  {:<28} {:<36} default {}\n      {}\n",
            s.key,
            s.env_var(),
            s.default,
            s.meaning
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    /// The documented default of every number and flag is the one the code has: a default
    /// changed in one place only would mislead whoever reads `--help` or the docs.
    #[test]
    fn documented_numeric_and_boolean_defaults_are_the_codes() {
        let defaults = toml::Value::try_from(Settings::default()).unwrap();
        let mut differing = Vec::new();
        for doc in SETTINGS {
            let mut value = Some(&defaults);
            for part in doc.key.split('.') {
                value = value.and_then(|v| v.get(part));
            }
            let actual = match value {
                Some(toml::Value::Integer(n)) => n.to_string(),
                Some(toml::Value::Boolean(b)) => b.to_string(),
                Some(toml::Value::Float(f)) => format!("{f:?}"),
                _ => continue,
            };
            if doc.default != actual {
                differing.push(format!(
                    "{}: documented {}, code {actual}",
                    doc.key, doc.default
                ));
            }
        }
        assert!(differing.is_empty(), "{differing:#?}");
    }

    /// Every leaf of the settings struct is documented, and nothing documented is gone.
    #[test]
    fn the_table_lists_exactly_the_settings_that_exist() {
        let mut defaults = Settings::default();
        defaults.schema.cluster = Some(String::new()); // Option::None is not serialized
        let value = toml::Value::try_from(defaults).unwrap();
        let mut keys = Vec::new();
        for (section, value) in value.as_table().unwrap() {
            match value.as_table() {
                _ if FILE_ONLY_SECTIONS.contains(&section.as_str()) => {}
                Some(table) => keys.extend(table.keys().map(|name| format!("{section}.{name}"))),
                None => keys.push(section.clone()),
            }
        }
        keys.sort();
        let mut documented: Vec<String> = SETTINGS.iter().map(|s| s.key.to_string()).collect();
        documented.sort();
        assert_eq!(keys, documented);
    }

    #[test]
    fn docs_configuration_md_mentions_every_setting_and_env_var() {
        let doc = include_str!("../../docs/configuration.md");
        for section in FILE_ONLY_SECTIONS {
            let heading = format!("[[{section}]]");
            assert!(
                doc.contains(&heading),
                "docs/configuration.md lacks {heading}"
            );
        }
        for s in SETTINGS {
            assert!(doc.contains(s.key), "docs/configuration.md lacks {}", s.key);
            assert!(
                doc.contains(&s.env_var()),
                "docs/configuration.md lacks {}",
                s.env_var()
            );
        }
    }

    #[test]
    fn env_names_map_back_to_keys() {
        assert_eq!(
            setting_for_env_suffix("CLICKHOUSE_URL").unwrap().key,
            "clickhouse.url"
        );
        assert_eq!(
            setting_for_env_suffix("schema_telemetry_ttl_days")
                .unwrap()
                .key,
            "schema.telemetry_ttl_days"
        );
        assert!(setting_for_env_suffix("CH_PORT").is_none());
        assert_eq!(
            setting_for_alias_env_suffix("OLLAMA_URL").unwrap().key,
            "llm.url"
        );
        assert!(setting_for_alias_env_suffix("OLLAMA_PROVIDER").is_none());
        assert!(setting_for_alias_env_suffix("LLM_URL").is_none());
    }
}
