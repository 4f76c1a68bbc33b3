//! Every span the service exports lands with its full resource, also the first exports
//! after a start under full load. The pinned rotel dropped the resource of the part of
//! a request it split off to fill a batch (about one batch in the first second of a
//! fast backfill); the stack runs it without batching (docs/reliability.md). This test
//! sends requests that would straddle rotel's 8192-span batches and counts rows
//! without a service name.

use std::time::Duration;

use lead_lab::config::OtelSettings;
use lead_lab::telemetry::Telemetry;
use opentelemetry::trace::{Span as _, Tracer as _};

use crate::support::{Stack, eventually, logged, unique_name};

const SPANS: u64 = 20_000;

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Landed {
    rows: u64,
    unattributed: u64,
    without_instance: u64,
}

#[tokio::test]
async fn spans_sent_at_full_speed_after_a_start_keep_their_resource() {
    let stack = Stack::require().await;
    let service = unique_name("lead-lab-attribution");
    let span_name = unique_name("attribution.probe");
    let settings = OtelSettings {
        endpoint: stack.otlp_grpc.clone(),
        service_name: service.clone(),
        // Large export requests, sent at once: rotel's batches (8192 spans) fill
        // within one request, which is where it split off a part without its resource.
        max_export_batch_size: 4_096,
        max_queue_size: 65_536,
        scheduled_delay_ms: 50,
        ..OtelSettings::default()
    };
    let telemetry = Telemetry::init(&settings, &Default::default()).unwrap();
    let tracer = telemetry.tracer();
    for _ in 0..SPANS {
        tracer.start(span_name.clone()).end();
    }
    telemetry.shutdown().await;

    let client = stack.client();
    let sql = "SELECT count() AS rows, countIf(ServiceName = '') AS unattributed, \
               countIf(ResourceAttributes['service.instance.id'] = '') AS without_instance \
               FROM otel_traces WHERE SpanName = ?";
    let landed = eventually(
        "every probe span in otel_traces",
        Duration::from_secs(60),
        async || {
            let query = client.query(sql).bind(&span_name);
            logged(query.fetch_one::<Landed>().await).filter(|l: &Landed| l.rows >= SPANS)
        },
    )
    .await;
    assert_eq!(landed.rows, SPANS);
    assert_eq!(landed.unattributed, 0, "spans without service.name");
    assert_eq!(
        landed.without_instance, 0,
        "spans without service.instance.id"
    );
}
