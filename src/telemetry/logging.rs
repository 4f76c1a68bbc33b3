//! Structured logs on stderr: text or JSON, coloured only when stderr is a terminal
//! (a log file or a pipe gets no ANSI codes).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogFormat, LogSettings};

/// Targets of the OpenTelemetry crates' own diagnostics. The SDK logs an error for every
/// failed export (several a second with a dead collector); the counting exporters report
/// those failures instead, throttled, so these targets are off unless a filter names them.
const OTEL_INTERNAL_TARGETS: [&str; 4] = [
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry-otlp",
    "opentelemetry-http",
];

/// Installs the global log subscriber, for work outside an app (an app's futures run
/// under its own dispatcher, see [`super::Telemetry::dispatch`]).
pub fn init_logging(settings: &LogSettings) {
    // A second init (tests calling the CLI twice in one process) keeps the first one.
    let _ = tracing_subscriber::registry()
        .with(stderr_layer(settings))
        .try_init();
}

/// `log.level`, or `RUST_LOG` when set (a developer can turn up one module without
/// touching config), with the OpenTelemetry crates' diagnostics off.
pub(super) fn log_filter(settings: &LogSettings) -> EnvFilter {
    let directives = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|value| EnvFilter::try_new(value).is_ok())
        .unwrap_or_else(|| settings.level.clone());
    EnvFilter::try_new(with_otel_internals_off(&directives))
        .unwrap_or_else(|_| EnvFilter::new(with_otel_internals_off("info")))
}

/// The stderr lines, filtered by [`log_filter`].
pub(super) fn stderr_layer<S>(settings: &LogSettings) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_span_events(FmtSpan::NONE);
    match settings.format {
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_filter(log_filter(settings))
            .boxed(),
        LogFormat::Text => layer.with_filter(log_filter(settings)).boxed(),
    }
}

/// Appends `target=off` for the OpenTelemetry crates, unless the directives mention
/// them: whoever writes `RUST_LOG=opentelemetry_sdk=debug` wants to see them.
fn with_otel_internals_off(directives: &str) -> String {
    if directives.contains("opentelemetry") {
        return directives.to_owned();
    }
    OTEL_INTERNAL_TARGETS
        .iter()
        .fold(directives.to_owned(), |all, target| {
            format!("{all},{target}=off")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otel_internals_are_off_by_default() {
        let directives = with_otel_internals_off("info");
        assert_eq!(
            directives,
            "info,opentelemetry=off,opentelemetry_sdk=off,opentelemetry-otlp=off,opentelemetry-http=off"
        );
        assert!(EnvFilter::try_new(&directives).is_ok());
    }

    #[test]
    fn a_filter_naming_otel_is_kept() {
        assert_eq!(
            with_otel_internals_off("info,opentelemetry_sdk=debug"),
            "info,opentelemetry_sdk=debug"
        );
    }
}
