//! Settings of `lead-lab serve`: HTTP, telemetry export, ingest rules and delivery.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address `serve` listens on; port 0 picks a free one (tests).
    pub listen: String,
    /// Request bodies above this many bytes are refused with 413.
    pub max_body_bytes: usize,
    /// Most leads one `POST /v1/leads/batch` may carry.
    pub batch_max_leads: usize,
    /// On SIGTERM, how long in-flight requests may take before the server stops anyway.
    pub shutdown_grace_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 64 * 1024,
            batch_max_leads: 100,
            shutdown_grace_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP over gRPC (collector port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (collector port 4318).
    Http,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtelSettings {
    /// Export traces and metrics. Off, the service still serves but is not ready (/readyz).
    pub enabled: bool,
    /// Collector base address, e.g. http://127.0.0.1:4317 (gRPC) or http://127.0.0.1:4318 (HTTP).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// `deployment.environment` resource attribute.
    pub environment: String,
    /// Spans buffered before the exporter; beyond it spans are dropped (and counted).
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    /// How often buffered spans are sent.
    pub scheduled_delay_ms: u64,
    /// How often metrics are sent.
    pub metrics_interval_ms: u64,
    /// Timeout of one export request.
    pub export_timeout_ms: u64,
}

impl Default for OtelSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: OtlpProtocol::Grpc,
            service_name: "lead-lab".into(),
            environment: "local".into(),
            max_queue_size: 65_536,
            max_export_batch_size: 2_048,
            scheduled_delay_ms: 500,
            metrics_interval_ms: 5_000,
            export_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownFields {
    /// A field the API does not define ends the attempt as invalid_payload.
    Reject,
    /// Unknown fields are dropped.
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// HMAC key for submitter hashes. Emails never leave the service; this hash does.
    pub submitter_secret: String,
    pub unknown_fields: UnknownFields,
    /// Same submitter + source + page within this window is a duplicate.
    pub dedup_window_secs: u64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            submitter_secret: "change-me-local-only".into(),
            unknown_fields: UnknownFields::Reject,
            dedup_window_secs: 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    /// Accepted leads are not forwarded anywhere.
    None,
    /// Accepted leads are POSTed as JSON to `delivery.url`.
    Webhook,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    pub kind: DeliveryKind,
    pub url: String,
    /// Timeout of one delivery attempt.
    pub timeout_ms: u64,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Pause before the second attempt; doubles after each further one.
    pub retry_backoff_ms: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            kind: DeliveryKind::None,
            url: String::new(),
            timeout_ms: 2_000,
            max_attempts: 3,
            retry_backoff_ms: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests a client may make at once before the bucket is empty.
    pub burst: u32,
    /// Tokens added back per second.
    pub per_second: f64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            burst: 20,
            per_second: 5.0,
        }
    }
}
