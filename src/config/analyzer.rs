//! Settings of the daily analyzer: its day and schedule, the model it asks, and the
//! thresholds of its detectors.

use serde::{Deserialize, Serialize};

use super::Secret;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyzerSettings {
    /// IANA time zone whose calendar days are analysed.
    pub time_zone: String,
    /// Previous days the baseline is computed over.
    pub baseline_days: u32,
    /// When `serve` analyses yesterday: cron with a seconds field, in `time_zone`.
    pub schedule: String,
    /// Run the schedule at all (the API and CLI work either way).
    pub schedule_enabled: bool,
    /// Analyses that may run at once (one per day at most).
    pub workers: usize,
    /// Attempts of a run before it is marked failed or degraded.
    pub max_attempts: u32,
    /// Pause before the second attempt; doubles after each further one.
    pub retry_backoff_ms: u64,
}

impl Default for AnalyzerSettings {
    fn default() -> Self {
        Self {
            time_zone: "UTC".into(),
            baseline_days: 7,
            schedule: "0 15 1 * * *".into(),
            schedule_enabled: true,
            workers: 2,
            max_attempts: 3,
            retry_backoff_ms: 2_000,
        }
    }
}

/// The API a model server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    /// Ollama's own API: `/api/chat`, `/api/tags`, `/api/show`.
    Ollama,
    /// The OpenAI-compatible API: `/v1/chat/completions`, `/v1/models` (llama.cpp's
    /// llama-server, vLLM, LM Studio, Ollama's `/v1`).
    Openai,
}

impl LlmProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ollama => "ollama",
            Self::Openai => "openai",
        }
    }
}

/// The model server the analyzer asks (`[llm]`; `[ollama]` is read as an alias).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSettings {
    pub provider: LlmProvider,
    /// Base URL of the server (for `openai`, without the `/v1`).
    pub url: String,
    pub model: String,
    /// Bearer token sent when not empty. Never printed.
    pub api_key: Secret,
    pub connect_timeout_ms: u64,
    /// Whole-request timeout of one chat call.
    pub timeout_ms: u64,
    /// How long Ollama keeps the model loaded after a call (Ollama duration, e.g. "10m").
    pub keep_alive: String,
    /// Fixed sampling seed, so the same facts give the same words.
    pub seed: i64,
    /// Upper bound of the context used (the model's own length wins when smaller).
    pub max_context_tokens: u32,
    /// Most tokens the answer may take; at most a quarter of the context is used.
    pub max_output_tokens: u32,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            provider: LlmProvider::Ollama,
            url: "http://127.0.0.1:11434".into(),
            model: "llama3.1:8b".into(),
            api_key: Secret::default(),
            connect_timeout_ms: 2_000,
            timeout_ms: 120_000,
            keep_alive: "10m".into(),
            seed: 42,
            max_context_tokens: 32_768,
            max_output_tokens: 3_072,
        }
    }
}

/// Thresholds of the deterministic detectors (docs/analyzer.md explains each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorSettings {
    /// Fewer attempts than this (for a subject, in the day or its baseline) are too few
    /// to compare rates on.
    pub min_attempts: u64,
    /// Volume below baseline × (1 − this) is a drop; above baseline × (1 + this) × 2 a spike.
    pub volume_change_ratio: f64,
    /// A failure share this many points (0–1) above the baseline's is a rise.
    pub failure_rate_rise: f64,
    /// One subject holding at least this share of a day's failures is a concentration.
    pub concentration_share: f64,
    /// At least this many source_key_mismatch or unauthorized attempts make a cluster.
    pub auth_cluster_min: u64,
    /// Attempts from one client in one minute at or above this make a burst.
    pub burst_per_minute: u64,
    /// Consecutive minutes with downstream failures that make an outage window.
    pub outage_min_minutes: u64,
    /// Hours without traffic, for a source that had traffic in every baseline day, that
    /// make it silent.
    pub silence_min_hours: u64,
    /// Duplicates at least this many times the baseline's daily mean are a surge.
    pub duplicate_surge_ratio: f64,
    /// A p95 latency at least this many times the baseline's is a regression.
    pub latency_regression_ratio: f64,
    /// A p95 must also be at least this many milliseconds above the baseline's: under
    /// it a large ratio of small numbers (7 ms to 30 ms) is nobody's problem, and it is
    /// within what a busy machine adds to the service's own timing.
    pub latency_regression_min_ms: f64,
    /// Significance level of the gradual-change test (Mann–Kendall on a subject's hourly
    /// failure share above its baseline's), before the Bonferroni split over subjects.
    pub trend_significance: f64,
    /// Rise of the failure share (0–1) above the baseline's, from the hour a trend
    /// started, that a gradual change must reach.
    pub trend_min_rise: f64,
    /// False discovery rate (Benjamini–Hochberg) of the what-changed detector's binomial
    /// tests over every value of every dimension.
    pub change_significance: f64,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            min_attempts: 20,
            volume_change_ratio: 0.5,
            failure_rate_rise: 0.15,
            concentration_share: 0.6,
            auth_cluster_min: 10,
            burst_per_minute: 20,
            outage_min_minutes: 5,
            silence_min_hours: 3,
            duplicate_surge_ratio: 3.0,
            latency_regression_ratio: 2.0,
            latency_regression_min_ms: 100.0,
            trend_significance: 0.01,
            trend_min_rise: 0.05,
            change_significance: 0.01,
        }
    }
}
