-- Spans as the OTel collectors write them (rotel locally, otel-collector-contrib in compose).
-- Column names and types are the writers' contract: a missing column or another type
-- makes the collector drop the whole batch (see docs/architecture.md#schema).
CREATE DATABASE IF NOT EXISTS ${DATABASE} ${ON_CLUSTER};

CREATE TABLE IF NOT EXISTS ${DATABASE}.otel_traces ${ON_CLUSTER}
(
    Timestamp          DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    TraceId            String CODEC(ZSTD(1)),
    SpanId             String CODEC(ZSTD(1)),
    ParentSpanId       String CODEC(ZSTD(1)),
    TraceState         String CODEC(ZSTD(1)),
    SpanName           LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind           LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName        LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName          String CODEC(ZSTD(1)),
    ScopeVersion       String CODEC(ZSTD(1)),
    SpanAttributes     Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration           UInt64 CODEC(ZSTD(1)),
    StatusCode         LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage      String CODEC(ZSTD(1)),
    Events Nested
    (
        Timestamp  DateTime64(9, 'UTC'),
        Name       LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested
    (
        TraceId    String,
        SpanId     String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
)
ENGINE = ${ENGINE_PREFIX}MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
TTL toDateTime(Timestamp) + toIntervalDay(${TELEMETRY_TTL_DAYS})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

-- First and last timestamp of every trace: Grafana's trace view looks traces up here
-- before it reads otel_traces, so it only scans the partitions the trace lives in.
CREATE TABLE IF NOT EXISTS ${DATABASE}.otel_traces_trace_id_ts ${ON_CLUSTER}
(
    TraceId String CODEC(ZSTD(1)),
    Start   DateTime('UTC') CODEC(Delta, ZSTD(1)),
    End     DateTime('UTC') CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ${ENGINE_PREFIX}MergeTree
PARTITION BY toDate(Start)
ORDER BY (TraceId, Start)
TTL Start + toIntervalDay(${TELEMETRY_TTL_DAYS})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.otel_traces_trace_id_ts_mv ${ON_CLUSTER}
TO ${DATABASE}.otel_traces_trace_id_ts
AS SELECT
    TraceId,
    toDateTime(min(Timestamp)) AS Start,
    toDateTime(max(Timestamp)) AS End
FROM ${DATABASE}.otel_traces
WHERE TraceId != ''
GROUP BY TraceId;
