//! Structured logs on stderr.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

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

/// Installs the global log subscriber. `RUST_LOG`, when set, wins over the setting so a
/// developer can turn up one module without touching config.
pub fn init_logging(settings: &LogSettings) {
    let directives = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|value| EnvFilter::try_new(value).is_ok())
        .unwrap_or_else(|| settings.level.clone());
    let filter = EnvFilter::try_new(with_otel_internals_off(&directives))
        .unwrap_or_else(|_| EnvFilter::new(with_otel_internals_off("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    // A second init (tests calling the CLI twice in one process) keeps the first one.
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
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
