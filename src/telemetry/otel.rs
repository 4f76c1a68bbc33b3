//! Tracer and meter providers of one app, exporting over OTLP.
//!
//! The providers are deliberately NOT installed as the global ones: tests run many apps
//! in one process, each with its own exporters, and a global provider would mix their
//! spans. Code that needs a tracer or meter gets it from the [`Telemetry`] of its app.
//! Only the propagator is global (it is stateless and the same for every app).

use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue, global};
use opentelemetry_otlp::{ExporterBuildError, Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    BatchConfigBuilder as LogBatchConfigBuilder, BatchLogProcessor, SdkLoggerProvider,
};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use super::export_failures::{ExportFailures, FailureReporter};
use super::span_export::{
    self, BatchLimits, Destination, EncodingSpanProcessor, SpanPipelineError,
};
use crate::config::{LogSettings, OtelSettings, OtlpProtocol};

/// Instrumentation scope of every tracer and meter of the service.
const SCOPE: &str = "lead-lab";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// tonic spawns the gRPC connection task on the current runtime while building.
    #[error("the OTLP gRPC exporter must be built inside a tokio runtime")]
    NoRuntime,
    #[error("cannot build the OTLP span pipeline: {0}")]
    SpanPipeline(#[source] SpanPipelineError),
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        #[source]
        source: ExporterBuildError,
    },
}

/// The tracer, meter and logger providers of one app, and the `tracing` dispatcher
/// that feeds the first and the last.
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    logger_provider: SdkLoggerProvider,
    dispatch: tracing::Dispatch,
    failures: ExportFailures,
    exporting: bool,
}

impl Telemetry {
    /// Must run inside a tokio runtime. With `enabled = false` it still creates real span
    /// ids (an SDK tracer provider with no exporter) so responses can carry a trace id,
    /// but exports nothing.
    /// `log` sets what the dispatcher writes to stderr and exports as log records.
    pub fn init(settings: &OtelSettings, log: &LogSettings) -> Result<Telemetry, TelemetryError> {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let resource = resource(settings);
        let failures = ExportFailures::default();
        let mut traces = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_sampler(super::RecordSampler::new(settings.trace_sample_ratio));
        let mut metrics = SdkMeterProvider::builder().with_resource(resource.clone());
        let mut logs = SdkLoggerProvider::builder().with_resource(resource);
        if settings.enabled {
            traces = traces.with_span_processor(span_processor(settings, &failures)?);
            metrics = metrics.with_reader(metric_reader(settings, &failures)?);
            logs = logs.with_log_processor(log_processor(settings)?);
        }
        let tracer_provider = traces.build();
        let logger_provider = logs.build();
        let dispatch = super::dispatch::app_dispatch(
            log,
            tracer_provider.tracer_with_scope(scope()),
            &logger_provider,
        );
        Ok(Telemetry {
            tracer_provider,
            meter_provider: metrics.build(),
            logger_provider,
            dispatch,
            failures,
            exporting: settings.enabled,
        })
    }

    /// The app's `tracing` dispatcher: spans become OTel spans of this app's tracer,
    /// events become its OTLP log records and stderr lines. Futures of the app run
    /// under it (`WithSubscriber::with_subscriber`), since no provider is global.
    pub fn dispatch(&self) -> tracing::Dispatch {
        self.dispatch.clone()
    }

    pub fn tracer(&self) -> SdkTracer {
        self.tracer_provider.tracer_with_scope(scope())
    }

    pub fn meter(&self) -> Meter {
        self.meter_provider.meter_with_scope(scope())
    }

    /// True when spans and metrics go to a collector (export enabled and exporters built).
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    pub fn export_failures(&self) -> ExportFailures {
        self.failures.clone()
    }

    /// Flushes and shuts down the providers (blocking work on spawn_blocking); logs what
    /// failed. Without it, buffered spans, logs and the last metric interval are lost.
    pub async fn shutdown(self) {
        let Telemetry {
            tracer_provider,
            meter_provider,
            logger_provider,
            ..
        } = self;
        let shutdown = tokio::task::spawn_blocking(move || {
            (
                tracer_provider.shutdown(),
                meter_provider.shutdown(),
                logger_provider.shutdown(),
            )
        });
        match shutdown.await {
            Ok((traces, metrics, logs)) => {
                log_shutdown_failure("trace", traces);
                log_shutdown_failure("metric", metrics);
                log_shutdown_failure("log", logs);
            }
            Err(error) => tracing::warn!(%error, "telemetry shutdown task failed"),
        }
    }
}

fn log_shutdown_failure(signal: &str, result: OTelSdkResult) {
    if let Err(error) = result {
        tracing::warn!(signal, %error, "telemetry provider shutdown failed");
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn resource(settings: &OtelSettings) -> Resource {
    // One id per process start unless configured: the record reconciliation counts per
    // instance, and a restarted process starts its counters from zero.
    let instance = if settings.instance_id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        settings.instance_id.clone()
    };
    Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes([
            KeyValue::new("service.instance.id", instance),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            // The older key is what most dashboards still filter on; the newer one is the
            // current semantic convention.
            KeyValue::new("deployment.environment", settings.environment.clone()),
            KeyValue::new("deployment.environment.name", settings.environment.clone()),
        ])
        .build()
}

/// The service's own span pipeline (`span_export`), sized from settings: the SDK's
/// default queue (2048) drops spans under load, and its 5 s delay makes traces show up
/// late. Two spans per request make it the telemetry's largest cost, so it encodes each
/// span where it ends instead of moving it to the export thread.
fn span_processor(
    settings: &OtelSettings,
    failures: &ExportFailures,
) -> Result<EncodingSpanProcessor, TelemetryError> {
    require_runtime()?;
    let limits = BatchLimits {
        max_queue_size: settings.max_queue_size,
        max_export_batch_size: settings.max_export_batch_size,
        scheduled_delay: Duration::from_millis(settings.scheduled_delay_ms),
        export_timeout: export_timeout(settings),
    };
    let url;
    let destination = match settings.protocol {
        OtlpProtocol::Grpc => Destination::Grpc {
            endpoint: &settings.endpoint,
        },
        OtlpProtocol::Http => {
            url = signal_url(&settings.endpoint, "/v1/traces");
            Destination::Http { url: &url }
        }
    };
    span_export::span_processor(destination, limits, failures.clone())
        .map_err(TelemetryError::SpanPipeline)
}

/// Periodic reader on the configured interval (the SDK default is 60 s).
fn metric_reader(
    settings: &OtelSettings,
    failures: &ExportFailures,
) -> Result<
    PeriodicReader<CountingMetricExporter<opentelemetry_otlp::MetricExporter>>,
    TelemetryError,
> {
    let exporter = CountingMetricExporter::new(metric_exporter(settings)?, failures.clone());
    Ok(PeriodicReader::builder(exporter)
        .with_interval(Duration::from_millis(settings.metrics_interval_ms))
        .build())
}

/// One `opentelemetry-otlp` exporter of the configured protocol; the signals' builders
/// share no trait, so one macro keeps their setup in one place.
macro_rules! otlp_exporter {
    ($exporter:ty, $settings:expr, $path:literal, $signal:literal) => {{
        let settings: &OtelSettings = $settings;
        let builder = <$exporter>::builder();
        let built = match settings.protocol {
            OtlpProtocol::Grpc => {
                require_runtime()?;
                builder
                    .with_tonic()
                    .with_protocol(Protocol::Grpc)
                    .with_endpoint(&settings.endpoint)
                    .with_timeout(export_timeout(settings))
                    .build()
            }
            OtlpProtocol::Http => builder
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(signal_url(&settings.endpoint, $path))
                .with_timeout(export_timeout(settings))
                .build(),
        };
        built.map_err(|source| TelemetryError::Exporter {
            signal: $signal,
            source,
        })
    }};
}

fn metric_exporter(
    settings: &OtelSettings,
) -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
    otlp_exporter!(
        opentelemetry_otlp::MetricExporter,
        settings,
        "/v1/metrics",
        "metric"
    )
}

fn log_exporter(
    settings: &OtelSettings,
) -> Result<opentelemetry_otlp::LogExporter, TelemetryError> {
    otlp_exporter!(opentelemetry_otlp::LogExporter, settings, "/v1/logs", "log")
}

/// Log records batched like spans, from the same queue and batch settings: a log line
/// per failed attempt under a flood must not grow memory without bound.
fn log_processor(
    settings: &OtelSettings,
) -> Result<super::log_stamp::Stamped<BatchLogProcessor>, TelemetryError> {
    let config = LogBatchConfigBuilder::default()
        .with_max_queue_size(settings.max_queue_size)
        .with_max_export_batch_size(settings.max_export_batch_size)
        .with_scheduled_delay(Duration::from_millis(settings.scheduled_delay_ms))
        .build();
    Ok(super::log_stamp::Stamped(
        BatchLogProcessor::builder(log_exporter(settings)?)
            .with_batch_config(config)
            .build(),
    ))
}

/// Bounds one export including the exporter's retries (they stop at this deadline).
fn export_timeout(settings: &OtelSettings) -> Duration {
    Duration::from_millis(settings.export_timeout_ms)
}

/// A programmatic HTTP endpoint is used as given, so the signal path is ours to add.
fn signal_url(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

fn require_runtime() -> Result<(), TelemetryError> {
    tokio::runtime::Handle::try_current()
        .map(drop)
        .map_err(|_| TelemetryError::NoRuntime)
}

/// A metric exporter that counts the data points of failed exports into
/// [`ExportFailures`]. Everything else, retries included, is the wrapped exporter's.
pub struct CountingMetricExporter<E> {
    inner: E,
    reporter: FailureReporter,
}

impl<E: PushMetricExporter> CountingMetricExporter<E> {
    pub fn new(inner: E, failures: ExportFailures) -> Self {
        Self {
            inner,
            reporter: FailureReporter::new("metrics", failures),
        }
    }
}

impl<E: PushMetricExporter> PushMetricExporter for CountingMetricExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        if let Err(error) = &result {
            self.reporter.record(data_points(metrics), error);
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

fn data_points(metrics: &ResourceMetrics) -> u64 {
    metrics
        .scope_metrics()
        .flat_map(|scope| scope.metrics())
        .map(|metric| match metric.data() {
            AggregatedMetrics::F64(data) => points_of(data),
            AggregatedMetrics::U64(data) => points_of(data),
            AggregatedMetrics::I64(data) => points_of(data),
        })
        .sum()
}

fn points_of<T>(data: &MetricData<T>) -> u64 {
    let points = match data {
        MetricData::Gauge(gauge) => gauge.data_points().count(),
        MetricData::Sum(sum) => sum.data_points().count(),
        MetricData::Histogram(histogram) => histogram.data_points().count(),
        MetricData::ExponentialHistogram(histogram) => histogram.data_points().count(),
    };
    points as u64
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _};
    use opentelemetry_sdk::error::OTelSdkError;

    use super::*;

    /// A collector that refuses everything.
    #[derive(Debug)]
    struct Refusing;

    fn refused() -> OTelSdkError {
        OTelSdkError::InternalFailure("collector down".into())
    }

    impl PushMetricExporter for Refusing {
        async fn export(&self, _metrics: &ResourceMetrics) -> OTelSdkResult {
            Err(refused())
        }

        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }

        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }

        fn temporality(&self) -> Temporality {
            Temporality::Cumulative
        }
    }

    fn settings(enabled: bool, protocol: OtlpProtocol) -> OtelSettings {
        OtelSettings {
            enabled,
            endpoint: "http://127.0.0.1:9".into(),
            protocol,
            export_timeout_ms: 200,
            scheduled_delay_ms: 60_000,
            ..OtelSettings::default()
        }
    }

    #[test]
    fn failed_metric_exports_count_data_points() {
        let failures = ExportFailures::default();
        let exporter = CountingMetricExporter::new(Refusing, failures.clone());
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter).build())
            .build();
        let counter = provider.meter("test").u64_counter("things").build();
        counter.add(1, &[KeyValue::new("kind", "a")]);
        counter.add(1, &[KeyValue::new("kind", "b")]);

        assert!(provider.force_flush().is_err());

        assert_eq!(failures.get(), 2);
    }

    #[test]
    fn http_signal_paths_are_appended() {
        assert_eq!(
            signal_url("http://collector:4318/", "/v1/traces"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            signal_url("http://collector:4318", "/v1/metrics"),
            "http://collector:4318/v1/metrics"
        );
    }

    #[tokio::test]
    async fn disabled_telemetry_still_makes_trace_ids() {
        let telemetry = Telemetry::init(
            &settings(false, OtlpProtocol::Grpc),
            &LogSettings::default(),
        )
        .unwrap();

        let span = telemetry.tracer().start("work");

        assert!(span.span_context().is_valid());
        assert!(!telemetry.exporting());
        telemetry.shutdown().await;
    }

    /// Ends one span, shuts down, and returns what the dead collector cost.
    async fn failures_after_one_span(protocol: OtlpProtocol) -> u64 {
        let telemetry =
            Telemetry::init(&settings(true, protocol), &LogSettings::default()).unwrap();
        assert!(telemetry.exporting());
        let failures = telemetry.export_failures();
        let cx = opentelemetry::Context::current_with_span(telemetry.tracer().start("work"));
        cx.span().end();

        telemetry.shutdown().await;
        failures.get()
    }

    #[tokio::test]
    async fn grpc_export_to_a_dead_collector_counts_failures() {
        assert!(failures_after_one_span(OtlpProtocol::Grpc).await > 0);
    }

    #[tokio::test]
    async fn http_export_to_a_dead_collector_counts_failures() {
        assert!(failures_after_one_span(OtlpProtocol::Http).await > 0);
    }
}
