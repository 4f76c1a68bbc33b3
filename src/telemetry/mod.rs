//! Telemetry of the service: structured logs on stderr, and the OpenTelemetry trace,
//! metric and log pipeline (OTLP to the collector, which writes into ClickHouse).
//!
//! `tracing` is the instrumentation API: `#[tracing::instrument]` and `info_span!` for
//! internal work (analysis runs, facts, detectors, the model call, schema migrations),
//! `tracing` events for log lines. [`Telemetry::dispatch`] turns them into the app's OTel spans and OTLP log
//! records (and stderr lines). The request spans of the ingest path (the server span,
//! `lead.submit`, `lead.deliver`) use the OpenTelemetry API directly: `lead.submit`
//! needs an explicit start time (replayed history), and the hot path skips the bridge.
//! The simulator's client spans are the same exception: a backfilled request happened
//! at its planned time, which only the OpenTelemetry API can state.
//!
//! - [`init_logging`]: the global log subscriber (every command, outside an app).
//! - [`Telemetry`]: tracer, meter and logger providers of one app, with their OTLP
//!   exporters, and its `tracing` dispatcher. Not installed globally: run the app's
//!   futures under its dispatcher, take tracers and meters from it, and call
//!   [`Telemetry::shutdown`] at the end or buffered spans and logs are lost.
//! - `span_export`: the span pipeline (in place of the SDK's batch processor), which
//!   encodes each span into OTLP protobuf where it ends and sends them in batches
//!   (metrics and logs use `opentelemetry-otlp`'s exporters).
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

mod dispatch;
mod export_failures;
mod http;
mod log_stamp;
mod logging;
mod metrics;
mod otel;
mod sampler;
mod span_export;

pub use dispatch::app_dispatch;
pub use export_failures::ExportFailures;
pub use http::{ServerSpans, ServerSpansEndpoint, current_trace_id, inject_trace_context};
pub use logging::init_logging;
pub use metrics::LeadMetrics;
pub use otel::{CountingMetricExporter, Telemetry, TelemetryError};
pub use sampler::{RECORD_SPAN, RecordSampler};
