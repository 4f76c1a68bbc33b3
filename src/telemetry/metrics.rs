//! Instruments of lead submissions and deliveries.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

use super::ExportFailures;

/// Bucket boundaries for durations in seconds. The SDK defaults (0..10000) suit
/// milliseconds and would put every request into the first two buckets.
pub(super) const SECONDS_BOUNDARIES: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub(super) fn seconds_histogram(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(SECONDS_BOUNDARIES.to_vec())
        .build()
}

#[derive(Clone)]
pub struct LeadMetrics {
    submissions: Counter<u64>,
    submission_duration: Histogram<f64>,
    delivery_duration: Histogram<f64>,
    state_unavailable: Counter<u64>,
}

impl LeadMetrics {
    /// Also registers `telemetry.export.failures`, so lost telemetry shows up in the
    /// telemetry that does get through.
    pub fn new(meter: &Meter, failures: ExportFailures) -> Self {
        meter
            .u64_observable_counter("telemetry.export.failures")
            .with_unit("{item}")
            .with_description(
                "Spans and metric data points lost to full export queues and failed OTLP exports",
            )
            .with_callback(move |observer| observer.observe(failures.get(), &[]))
            .build();
        Self {
            submissions: meter
                .u64_counter("leads.submissions")
                .with_unit("{submission}")
                .with_description("Lead submission attempts by outcome")
                .build(),
            submission_duration: seconds_histogram(
                meter,
                "leads.submission.duration",
                "Time from request to outcome of one submission attempt",
            ),
            delivery_duration: seconds_histogram(
                meter,
                "leads.delivery.duration",
                "Time to deliver an accepted lead, retries included",
            ),
            state_unavailable: meter
                .u64_counter("lead_lab.state.unavailable")
                .with_unit("{operation}")
                .with_description(
                    "Shared-state (Redis) operations that failed, by feature: dedup refuses \
                     the lead, rate_limit lets it through",
                )
                .build(),
        }
    }

    /// One submission attempt; `reason` is "" for accepted ones; `replayed` for an
    /// attempt at a stated (simulated) time, which the record reconciliation leaves out
    /// (its row lands on the stated day, its count on today). The closed-set values are
    /// `'static`: this runs for every attempt, and static text is not copied.
    pub fn record_submission(
        &self,
        source: &str,
        endpoint: &'static str,
        outcome: &'static str,
        reason: &'static str,
        replayed: bool,
        duration: Duration,
    ) {
        let source = KeyValue::new("lead.source", source.to_owned());
        let endpoint = KeyValue::new("lead.endpoint", endpoint);
        let outcome = KeyValue::new("lead.outcome", outcome);
        self.submission_duration.record(
            duration.as_secs_f64(),
            &[source.clone(), endpoint.clone(), outcome.clone()],
        );
        self.submissions.add(
            1,
            &[
                source,
                endpoint,
                outcome,
                KeyValue::new("lead.reason", reason),
                KeyValue::new("lead.replayed", replayed),
            ],
        );
    }

    /// A state operation of `feature` (`dedup` or `rate_limit`) that did not answer.
    pub fn record_state_unavailable(&self, feature: &'static str) {
        self.state_unavailable
            .add(1, &[KeyValue::new("state.feature", feature)]);
    }

    pub fn record_delivery(&self, source: &str, outcome: &'static str, duration: Duration) {
        self.delivery_duration.record(
            duration.as_secs_f64(),
            &[
                KeyValue::new("lead.source", source.to_owned()),
                KeyValue::new("lead.delivery.outcome", outcome),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{
        AggregatedMetrics, Metric, MetricData, ResourceMetrics,
    };
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    use super::*;

    fn provider() -> (SdkMeterProvider, InMemoryMetricExporter) {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        (provider, exporter)
    }

    fn collect(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter) -> ResourceMetrics {
        provider.force_flush().unwrap();
        let mut exported = exporter.get_finished_metrics().unwrap();
        exported.pop().expect("one export")
    }

    fn find<'a>(metrics: &'a ResourceMetrics, name: &str) -> &'a Metric {
        metrics
            .scope_metrics()
            .flat_map(|scope| scope.metrics())
            .find(|metric| metric.name() == name)
            .unwrap_or_else(|| panic!("metric {name} not exported"))
    }

    fn has<'a>(mut attributes: impl Iterator<Item = &'a KeyValue>, key: &str, value: &str) -> bool {
        attributes.any(|kv| kv.key.as_str() == key && kv.value.as_str() == value)
    }

    /// Sum of the u64 sum points whose attributes include `key=value`.
    fn sum_where(metric: &Metric, key: &str, value: &str) -> u64 {
        let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() else {
            panic!("{} is not a u64 sum", metric.name());
        };
        sum.data_points()
            .filter(|point| has(point.attributes(), key, value))
            .map(|point| point.value())
            .sum()
    }

    /// Count of recordings in the f64 histogram points whose attributes include `key=value`.
    fn count_where(metric: &Metric, key: &str, value: &str) -> u64 {
        let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data() else {
            panic!("{} is not an f64 histogram", metric.name());
        };
        histogram
            .data_points()
            .filter(|point| has(point.attributes(), key, value))
            .map(|point| point.count())
            .sum()
    }

    #[test]
    fn submissions_are_counted_and_timed_by_outcome() {
        let (provider, exporter) = provider();
        let metrics = LeadMetrics::new(&provider.meter("test"), ExportFailures::default());
        let ms = Duration::from_millis;
        metrics.record_submission("site", "/v1/leads", "accepted", "", false, ms(3));
        metrics.record_submission("site", "/v1/leads", "accepted", "", false, ms(40));
        metrics.record_submission(
            "site",
            "/v1/leads",
            "rejected",
            "invalid_payload",
            true,
            ms(1),
        );
        metrics.record_delivery("site", "delivered", ms(120));

        let exported = collect(&provider, &exporter);
        let submissions = find(&exported, "leads.submissions");
        assert_eq!(sum_where(submissions, "lead.outcome", "accepted"), 2);
        assert_eq!(sum_where(submissions, "lead.reason", "invalid_payload"), 1);
        let duration = find(&exported, "leads.submission.duration");
        assert_eq!(duration.unit(), "s");
        assert_eq!(count_where(duration, "lead.outcome", "accepted"), 2);
        assert_eq!(count_where(duration, "lead.outcome", "rejected"), 1);
        let delivery = find(&exported, "leads.delivery.duration");
        assert_eq!(
            count_where(delivery, "lead.delivery.outcome", "delivered"),
            1
        );
    }

    #[test]
    fn durations_use_second_buckets() {
        let (provider, exporter) = provider();
        let metrics = LeadMetrics::new(&provider.meter("test"), ExportFailures::default());
        metrics.record_delivery("site", "delivered", Duration::from_millis(120));

        let exported = collect(&provider, &exporter);
        let AggregatedMetrics::F64(MetricData::Histogram(histogram)) =
            find(&exported, "leads.delivery.duration").data()
        else {
            panic!("not a histogram");
        };
        let point = histogram.data_points().next().unwrap();
        assert_eq!(point.bounds().collect::<Vec<_>>(), SECONDS_BOUNDARIES);
    }

    #[test]
    fn export_failures_are_observed() {
        let (provider, exporter) = provider();
        let failures = ExportFailures::default();
        let _metrics = LeadMetrics::new(&provider.meter("test"), failures.clone());
        failures.add(7);

        let exported = collect(&provider, &exporter);
        let lost = find(&exported, "telemetry.export.failures");
        assert_eq!(lost.unit(), "{item}");
        let AggregatedMetrics::U64(MetricData::Sum(sum)) = lost.data() else {
            panic!("not a u64 sum");
        };
        assert_eq!(sum.data_points().map(|p| p.value()).sum::<u64>(), 7);
    }
}
