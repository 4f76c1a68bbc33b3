//! The `tracing` dispatcher of one app: what its spans and events become.
//!
//! - spans of this crate → OTel spans of the app's tracer (`tracing-opentelemetry`), so
//!   `#[tracing::instrument]` and `info_span!` are the instrumentation API; a span's
//!   OTel parent is the enclosing `tracing` span or else the current OTel context (the
//!   request's server span behind [`super::ServerSpans`]);
//! - events → OTLP log records of the app's logger provider, each with the trace and
//!   span id of the span it happened in, and → stderr lines, both filtered by `log.level`.
//!
//! Span export does not depend on `log.level`: a quiet log must not cost the traces.
//! Other crates' spans are off altogether (their events are not): the ClickHouse
//! client's spans would become children of ours, and one outliving its query (held
//! with a pooled connection) kept an `analysis.run` span from ever ending.

use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracer;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::layer::SubscriberExt as _;

use super::logging::{log_filter, stderr_layer};
use crate::config::LogSettings;

/// Target prefix of the crate's own spans, the only spans there are.
const CRATE_TARGET: &str = "lead_lab";

/// [`super::Telemetry::init`] builds one per app; tests build one on in-memory providers.
pub fn app_dispatch(
    log: &LogSettings,
    tracer: SdkTracer,
    logger_provider: &SdkLoggerProvider,
) -> tracing::Dispatch {
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        // Events are log records (below), not span events as well.
        .with_filter(FilterFn::new(|meta| meta.is_span()));
    let logs = OpenTelemetryTracingBridge::new(logger_provider).with_filter(log_filter(log));
    let subscriber = tracing_subscriber::registry()
        .with(FilterFn::new(|meta| {
            !meta.is_span() || meta.target().starts_with(CRATE_TARGET)
        }))
        .with(stderr_layer(log))
        .with(spans)
        .with(logs);
    tracing::Dispatch::new(subscriber)
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::logs::InMemoryLogExporter;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    use super::*;

    #[test]
    fn an_event_in_a_span_is_a_log_record_of_that_span() {
        let spans = InMemorySpanExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let logs = InMemoryLogExporter::default();
        let logger_provider = SdkLoggerProvider::builder()
            .with_simple_exporter(logs.clone())
            .build();
        let dispatch = app_dispatch(
            &LogSettings::default(),
            tracer_provider.tracer("test"),
            &logger_provider,
        );

        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("analysis.facts", analysis.day = "2026-12-01");
            span.in_scope(|| tracing::warn!(rows = 3_u64, "facts are thin"));
        });

        let finished = spans.get_finished_spans().unwrap();
        assert_eq!(finished.len(), 1);
        let span = &finished[0];
        assert_eq!(span.name, "analysis.facts");
        assert!(span.events.is_empty(), "events are logs, not span events");
        assert!(
            span.attributes
                .iter()
                .any(|kv| kv.key.as_str() == "analysis.day" && kv.value.as_str() == "2026-12-01")
        );
        let records = logs.get_emitted_logs().unwrap();
        assert_eq!(records.len(), 1);
        let record = &records[0].record;
        let trace = record
            .trace_context()
            .expect("the record has its span's ids");
        assert_eq!(trace.trace_id, span.span_context.trace_id());
        assert_eq!(trace.span_id, span.span_context.span_id());
        assert_eq!(record.severity_text(), Some("WARN"));
        assert_eq!(record.target().map(|t| t.as_ref()), Some(module_path!()));
    }

    #[test]
    fn other_crates_spans_are_not_exported() {
        let spans = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let logger_provider = SdkLoggerProvider::builder().build();
        let dispatch = app_dispatch(
            &LogSettings::default(),
            provider.tracer("test"),
            &logger_provider,
        );

        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!(target: "h2::proto", "poll").in_scope(|| {});
        });

        assert!(spans.get_finished_spans().unwrap().is_empty());
    }
}
