//! Telemetry sent with the Rust OTel SDK goes through the local collector into
//! ClickHouse: spans named `lead.submit` land in `lead_submissions`, metrics in the
//! metrics tables. Each test tags its data with a unique service name, because the
//! collector writes every test's data into the same `otel` database.

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{MetricExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::app::TestApp;
use crate::ingest::{expect_accepted, lead, rows_of};
use crate::support::{ARRIVAL, Stack, eventually, logged, unique_name};

enum Transport {
    Grpc,
    HttpProtobuf,
}

fn tracer_provider(stack: &Stack, service: &str, transport: Transport) -> SdkTracerProvider {
    let exporter = match transport {
        Transport::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&stack.otlp_grpc)
            .build(),
        Transport::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", stack.otlp_http))
            .build(),
    }
    .expect("span exporter builds");
    SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .with_batch_exporter(exporter)
        .build()
}

/// What a test sent, to compare with what arrived.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, clickhouse::Row, serde::Deserialize)]
struct Submission {
    span_id: String,
    source: String,
    endpoint: String,
    page: String,
    outcome: String,
    reason: String,
    http_status: u16,
}

fn send_submissions(provider: &SdkTracerProvider, count: usize) -> Vec<Submission> {
    let tracer = provider.tracer("lead-lab-tests");
    let sources = ["web_form", "quiz", "partner_api"];
    (0..count)
        .map(|i| {
            let (outcome, reason, status) = match i % 3 {
                0 => ("accepted", "", 201u16),
                1 => ("rejected", "invalid_field", 422),
                _ => ("failed", "downstream_timeout", 504),
            };
            let sent = Submission {
                span_id: String::new(),
                source: sources[i % sources.len()].into(),
                endpoint: "leads".into(),
                page: format!("/pricing/{}", i % 5),
                outcome: outcome.into(),
                reason: reason.into(),
                http_status: status,
            };
            let mut span = tracer
                .span_builder("lead.submit")
                .with_attributes([
                    KeyValue::new("lead.source", sent.source.clone()),
                    KeyValue::new("lead.endpoint", sent.endpoint.clone()),
                    KeyValue::new("lead.page", sent.page.clone()),
                    KeyValue::new("lead.outcome", sent.outcome.clone()),
                    KeyValue::new("lead.reason", sent.reason.clone()),
                    KeyValue::new("http.response.status_code", i64::from(sent.http_status)),
                ])
                .start(&tracer);
            let span_id = span.span_context().span_id().to_string();
            span.end();
            // Another span in the same service must not become a submission.
            tracer.span_builder("lead.deliver").start(&tracer).end();
            Submission { span_id, ..sent }
        })
        .collect()
}

async fn shutdown_tracer(provider: SdkTracerProvider) {
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .expect("spans flushed to the collector");
}

async fn arrived_submissions(stack: &Stack, service: &str, expected: usize) -> Vec<Submission> {
    let client = stack.client();
    let sql = format!(
        "SELECT span_id, source, endpoint, page, outcome, reason, http_status \
         FROM {}.lead_submissions WHERE service = ? ORDER BY span_id",
        stack.clickhouse.database
    );
    eventually(
        "all lead.submit spans in lead_submissions",
        ARRIVAL,
        async || {
            let query = client.query(&sql).bind(service);
            let rows: Vec<Submission> = logged(query.fetch_all().await)?;
            (rows.len() >= expected).then_some(rows)
        },
    )
    .await
}

async fn assert_spans_become_submissions(transport: Transport) {
    let stack = Stack::require().await;
    let service = unique_name("otel-test");
    let provider = tracer_provider(&stack, &service, transport);
    let mut sent = send_submissions(&provider, 30);
    shutdown_tracer(provider).await;

    let arrived = arrived_submissions(&stack, &service, sent.len()).await;
    sent.sort();
    assert_eq!(
        arrived, sent,
        "every span arrives once, with its attributes"
    );

    let spans: u64 = stack
        .client()
        .query(&format!(
            "SELECT count() FROM {}.otel_traces WHERE ServiceName = ?",
            stack.clickhouse.database
        ))
        .bind(&service)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(spans, 60, "both span kinds reach otel_traces");
}

#[tokio::test(flavor = "multi_thread")]
async fn lead_submit_spans_over_grpc_land_in_lead_submissions_exactly_once() {
    assert_spans_become_submissions(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lead_submit_spans_over_http_land_in_lead_submissions_exactly_once() {
    assert_spans_become_submissions(Transport::HttpProtobuf).await;
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct HistogramPoint {
    count: u64,
    sum: f64,
    bucket_counts: Vec<u64>,
    explicit_bounds: Vec<f64>,
    source: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn sums_and_histograms_land_in_the_metrics_tables_with_their_values() {
    let stack = Stack::require().await;
    let service = unique_name("otel-metrics-test");
    let exporter = MetricExporter::builder()
        .with_tonic()
        .with_endpoint(&stack.otlp_grpc)
        .build()
        .unwrap();
    let provider = SdkMeterProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.clone())
                .build(),
        )
        .with_periodic_exporter(exporter)
        .build();
    let meter = provider.meter("lead-lab-tests");
    let counter = meter.u64_counter("leads.submissions").build();
    let histogram = meter
        .f64_histogram("leads.submission.duration")
        .with_unit("s")
        .with_boundaries(vec![0.01, 0.1, 1.0])
        .build();
    let source = [KeyValue::new("source", "quiz")];
    counter.add(3, &source);
    counter.add(4, &source);
    for seconds in [0.005, 0.05, 0.07, 2.5] {
        histogram.record(seconds, &source);
    }
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .expect("metrics flushed to the collector");

    let client = stack.client();
    let db = &stack.clickhouse.database;
    let sum_sql = format!(
        "SELECT Value FROM {db}.otel_metrics_sum \
         WHERE ServiceName = ? AND MetricName = 'leads.submissions' AND Attributes['source'] = 'quiz' \
         ORDER BY TimeUnix DESC LIMIT 1"
    );
    let total = eventually("the counter in otel_metrics_sum", ARRIVAL, async || {
        let query = client.query(&sum_sql).bind(&service);
        logged(query.fetch_optional::<f64>().await).flatten()
    })
    .await;
    assert_eq!(total, 7.0);

    let histogram_sql = format!(
        "SELECT Count AS count, Sum AS sum, BucketCounts AS bucket_counts, \
         ExplicitBounds AS explicit_bounds, Attributes['source'] AS source \
         FROM {db}.otel_metrics_histogram \
         WHERE ServiceName = ? AND MetricName = 'leads.submission.duration' \
         ORDER BY TimeUnix DESC LIMIT 1"
    );
    let point: HistogramPoint = eventually(
        "the histogram in otel_metrics_histogram",
        ARRIVAL,
        async || {
            let query = client.query(&histogram_sql).bind(&service);
            logged(query.fetch_optional().await).flatten()
        },
    )
    .await;
    assert_eq!(point.count, 4);
    assert!((point.sum - 2.625).abs() < 1e-9, "sum {}", point.sum);
    assert_eq!(point.explicit_bounds, vec![0.01, 0.1, 1.0]);
    assert_eq!(point.bucket_counts, vec![1, 2, 0, 1]);
    assert_eq!(point.source, "quiz");
}

/// The service's own span exporter over OTLP/HTTP (every other test exports over gRPC):
/// a request's server span and its record arrive with their kind, parent, status and
/// attributes, and the record becomes its `lead_submissions` row.
#[tokio::test(flavor = "multi_thread")]
async fn the_services_spans_over_http_arrive_whole() {
    let http_endpoint = Stack::from_env().otlp_http;
    let mut app = TestApp::spawn_with(|s| {
        s.otel.protocol = lead_lab::config::OtlpProtocol::Http;
        s.otel.endpoint = http_endpoint;
    })
    .await;
    let accepted = expect_accepted(
        app.post_lead(Some(&app.keys.quiz), &lead("quiz", "/quiz/http"))
            .await,
    )
    .await;
    app.stop().await;

    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    struct Exported {
        name: String,
        kind: String,
        status: String,
        has_parent: bool,
        outcome: String,
        page: String,
        http_status: String,
        trace_id: String,
    }
    let spans: Vec<Exported> = app
        .rows_when(
            "the request's two spans",
            "SELECT SpanName AS name, SpanKind AS kind, StatusCode AS status, \
             ParentSpanId != '' AS has_parent, SpanAttributes['lead.outcome'] AS outcome, \
             SpanAttributes['lead.page'] AS page, \
             SpanAttributes['http.response.status_code'] AS http_status, TraceId AS trace_id \
             FROM otel_traces WHERE ServiceName = ? ORDER BY name",
            |spans: &[Exported]| spans.len() >= 2,
        )
        .await;
    let [server, record] = spans.as_slice() else {
        panic!("two spans, got {spans:?}");
    };
    assert_eq!(
        (server.name.as_str(), server.kind.as_str()),
        ("POST /v1/leads", "Server")
    );
    assert_eq!(server.http_status, "201");
    assert_eq!(
        (
            record.name.as_str(),
            record.kind.as_str(),
            record.has_parent
        ),
        ("lead.submit", "Internal", true)
    );
    assert_eq!(
        (record.outcome.as_str(), record.page.as_str()),
        ("accepted", "/quiz/http")
    );
    assert_eq!(record.status, "Unset");
    for span in [server, record] {
        assert_eq!(span.trace_id, accepted["trace_id"].as_str().unwrap());
    }
    assert_eq!(rows_of(&app, 1).await.len(), 1, "its lead_submissions row");
}
