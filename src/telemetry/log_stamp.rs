//! Log records with an event time.
//!
//! `opentelemetry-appender-tracing` sets only a record's observed time; OTLP leaves
//! the event time optional. The contrib collector's ClickHouse exporter falls back to
//! the observed time, the pinned rotel writes the missing time as 1970 — and the table's
//! TTL drops such rows at once. Stamping the event time here fits both collectors.

use std::time::{Duration, SystemTime};

use opentelemetry::InstrumentationScope;
use opentelemetry::logs::LogRecord as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogProcessor, SdkLogRecord};

/// Gives every record without an event time its observed time (or now), then hands
/// it to `inner`.
#[derive(Debug)]
pub(super) struct Stamped<P>(pub P);

impl<P: LogProcessor> LogProcessor for Stamped<P> {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        if record.timestamp().is_none() {
            let at = record.observed_timestamp().unwrap_or_else(SystemTime::now);
            record.set_timestamp(at);
        }
        self.0.emit(record, scope);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn event_enabled(
        &self,
        level: opentelemetry::logs::Severity,
        target: &str,
        name: Option<&str>,
    ) -> bool {
        self.0.event_enabled(level, target, name)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::logs::{Logger as _, LoggerProvider as _};
    use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider, SimpleLogProcessor};

    use super::*;

    #[test]
    fn a_record_without_an_event_time_gets_its_observed_time() {
        let logs = InMemoryLogExporter::default();
        let provider = SdkLoggerProvider::builder()
            .with_log_processor(Stamped(SimpleLogProcessor::new(logs.clone())))
            .build();
        let logger = provider.logger("test");
        let mut record = logger.create_log_record();
        record.set_observed_timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(7));
        logger.emit(record);

        let emitted = logs.get_emitted_logs().unwrap();
        assert_eq!(
            emitted[0].record.timestamp(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(7))
        );
    }
}
