//! Settings of `lead-lab serve`: HTTP, telemetry export, ingest rules and delivery.

use serde::{Deserialize, Serialize};

use super::Secret;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address `serve` listens on; port 0 picks a free one (tests).
    pub listen: String,
    /// Request bodies above this many bytes are refused with 413.
    pub max_body_bytes: usize,
    /// Most leads one `POST /v1/leads/batch` may carry.
    pub batch_max_leads: usize,
    /// On SIGTERM, how long in-flight requests and running analyses may take before the
    /// service stops anyway (an unfinished analysis is handed back for the next start).
    pub shutdown_grace_secs: u64,
    /// Open connections at most; beyond it new connections wait in the listen backlog.
    pub max_connections: usize,
    /// Requests being handled at most; beyond it requests get 503 `overloaded`
    /// (health probes are exempt).
    pub max_in_flight: usize,
    /// A request's headers must arrive within this; it is also how long an idle
    /// keep-alive connection stays open.
    pub header_read_timeout_ms: u64,
    /// A request's whole body must arrive within this (408 `request_timeout` after).
    pub body_read_timeout_ms: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 64 * 1024,
            batch_max_leads: 100,
            shutdown_grace_secs: 10,
            max_connections: 4_096,
            max_in_flight: 1_024,
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 10_000,
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
    /// Share of request traces (server, delivery and analyzer spans) sampled at the
    /// root; children follow their parent. `lead.submit` spans are always recorded.
    pub trace_sample_ratio: f64,
    /// `service.instance.id` resource attribute; empty: a fresh UUID at every start.
    pub instance_id: String,
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
            max_export_batch_size: 512,
            scheduled_delay_ms: 500,
            metrics_interval_ms: 5_000,
            export_timeout_ms: 5_000,
            trace_sample_ratio: 1.0,
            instance_id: String::new(),
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
    pub submitter_secret: Secret,
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

/// Limits of requests that carry no valid API key, per client address (IPv6 by /64),
/// checked before their body is read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeylessSettings {
    pub burst: u32,
    pub per_second: f64,
    /// Addresses tracked at most (memory bound; about 100 bytes each).
    pub max_addresses: usize,
}

impl Default for KeylessSettings {
    fn default() -> Self {
        Self {
            burst: 10,
            per_second: 1.0,
            max_addresses: 65_536,
        }
    }
}

impl KeylessSettings {
    pub fn limit(&self) -> RateLimitSettings {
        RateLimitSettings {
            burst: self.burst,
            per_second: self.per_second,
        }
    }
}
