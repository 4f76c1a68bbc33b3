//! Telemetry of the service: structured logs on stderr, and the OpenTelemetry trace and
//! metric pipeline of `serve` (OTLP to the collector, which writes into ClickHouse).
//!
//! - [`init_logging`]: the global log subscriber (every command).
//! - [`Telemetry`]: tracer and meter providers of one app, with their OTLP exporters.
//!   Not installed globally: take tracers and meters from it, and call
//!   [`Telemetry::shutdown`] at the end or buffered spans are lost.
//! - [`ServerSpans`]: poem middleware giving every request a server span and a duration
//!   metric.
//! - [`LeadMetrics`]: the lead-specific instruments.
//!
//! Behind [`ServerSpans`], `opentelemetry::Context::current()` in a handler carries the
//! request's server span; child spans start from it. The context follows the handler's
//! future, not spawned tasks: pass it on with `opentelemetry::context::FutureExt::with_context`.
//! A span for an event that happened earlier (backfill) takes an explicit start time:
//!
//! ```no_run
//! use opentelemetry::Context;
//! use opentelemetry::trace::{Span as _, Tracer as _};
//! # fn demo(telemetry: &lead_lab::telemetry::Telemetry, at: std::time::SystemTime) {
//! let tracer = telemetry.tracer();
//! let cx = Context::current();
//! let mut span = tracer
//!     .span_builder("lead.delivery")
//!     .with_start_time(at)
//!     .start_with_context(&tracer, &cx);
//! span.end();
//! # }
//! ```

mod http;
mod logging;
mod metrics;
mod otel;
mod sampler;

pub use http::{ServerSpans, ServerSpansEndpoint, current_trace_id, inject_trace_context};
pub use logging::init_logging;
pub use metrics::LeadMetrics;
pub use otel::{
    CountingMetricExporter, CountingSpanExporter, ExportFailures, Telemetry, TelemetryError,
};
pub use sampler::{RECORD_SPAN, RecordSampler};
