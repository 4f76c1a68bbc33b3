-- One typed row per submission attempt, projected from the `lead.submit` spans.
-- The service never writes here itself: the span is the record (DESIGN decision 1), and
-- this view is the one place that knows how span attributes map to lead columns.
CREATE TABLE IF NOT EXISTS ${DATABASE}.lead_submissions ${ON_CLUSTER}
(
    event_time        DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    trace_id          String CODEC(ZSTD(1)),
    span_id           String CODEC(ZSTD(1)),
    service           LowCardinality(String),
    source            LowCardinality(String),
    endpoint          LowCardinality(String),
    page              LowCardinality(String),
    form_id           LowCardinality(String),
    outcome           LowCardinality(String),
    reason            LowCardinality(String),
    field             LowCardinality(String),
    submitter_hash    String CODEC(ZSTD(1)),
    client_id         LowCardinality(String),
    lead_id           String CODEC(ZSTD(1)),
    http_status       UInt16,
    delivery_attempts UInt8,
    duration_ns       UInt64 CODEC(ZSTD(1)),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_submitter submitter_hash TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ${ENGINE_PREFIX}MergeTree
PARTITION BY toDate(event_time)
ORDER BY (toStartOfHour(event_time), source, endpoint, outcome, event_time)
TTL toDateTime(event_time) + toIntervalDay(${SUBMISSIONS_TTL_DAYS})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.lead_submissions_mv ${ON_CLUSTER}
TO ${DATABASE}.lead_submissions
AS SELECT
    Timestamp                                                  AS event_time,
    TraceId                                                    AS trace_id,
    SpanId                                                     AS span_id,
    ServiceName                                                AS service,
    SpanAttributes['lead.source']                              AS source,
    SpanAttributes['lead.endpoint']                            AS endpoint,
    SpanAttributes['lead.page']                                AS page,
    SpanAttributes['lead.form_id']                             AS form_id,
    SpanAttributes['lead.outcome']                             AS outcome,
    SpanAttributes['lead.reason']                              AS reason,
    SpanAttributes['lead.field']                               AS field,
    SpanAttributes['lead.submitter_hash']                      AS submitter_hash,
    SpanAttributes['lead.client_id']                           AS client_id,
    SpanAttributes['lead.id']                                  AS lead_id,
    toUInt16OrZero(SpanAttributes['http.response.status_code']) AS http_status,
    toUInt8OrZero(SpanAttributes['lead.delivery.attempts'])    AS delivery_attempts,
    Duration                                                   AS duration_ns
FROM ${DATABASE}.otel_traces
WHERE SpanName = 'lead.submit';
