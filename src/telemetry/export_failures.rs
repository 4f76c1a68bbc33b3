//! What the telemetry lost: spans and metric data points that never reached the
//! collector (a full export queue, a failed export), counted and warned about.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A dead collector fails every export; one warning per this period is enough.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Running total of telemetry items (spans, metric data points) the collector never got.
/// Cheap to clone; every clone reads the same total.
#[derive(Debug, Clone, Default)]
pub struct ExportFailures(Arc<AtomicU64>);

impl ExportFailures {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds `items` and returns the new total.
    pub(super) fn add(&self, items: u64) -> u64 {
        self.0.fetch_add(items, Ordering::Relaxed) + items
    }
}

/// Counts lost items into [`ExportFailures`] and warns about them, at most once per
/// [`WARN_EVERY`].
#[derive(Debug)]
pub(super) struct FailureReporter {
    signal: &'static str,
    failures: ExportFailures,
    last_warning: Mutex<Option<Instant>>,
}

impl FailureReporter {
    pub fn new(signal: &'static str, failures: ExportFailures) -> Self {
        Self {
            signal,
            failures,
            last_warning: Mutex::new(None),
        }
    }

    /// `items` lost, and why (a failed export's error, or the full queue).
    pub fn record(&self, items: u64, why: &dyn std::fmt::Display) {
        let total = self.failures.add(items);
        if self.warning_due() {
            tracing::warn!(
                signal = self.signal,
                lost = items,
                total_lost = total,
                error = %why,
                "telemetry lost on its way to the collector"
            );
        }
    }

    fn warning_due(&self) -> bool {
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_throttled() {
        let reporter = FailureReporter::new("traces", ExportFailures::default());

        assert!(reporter.warning_due());
        assert!(!reporter.warning_due());
    }

    #[test]
    fn every_lost_item_is_counted() {
        let failures = ExportFailures::default();
        let reporter = FailureReporter::new("traces", failures.clone());

        reporter.record(3, &"collector down");
        reporter.record(2, &"collector down");

        assert_eq!(failures.get(), 5);
    }
}
