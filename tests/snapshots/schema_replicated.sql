-- bookkeeping
CREATE DATABASE IF NOT EXISTS otel ON CLUSTER 'lab';

CREATE TABLE IF NOT EXISTS otel.schema_migrations ON CLUSTER 'lab' (
                 version    UInt32,
                 name       String,
                 checksum   String,
                 applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
             ) ENGINE = ReplicatedReplacingMergeTree ORDER BY version;

-- 0001_otel_traces
CREATE DATABASE IF NOT EXISTS otel ON CLUSTER 'lab';

CREATE TABLE IF NOT EXISTS otel.otel_traces ON CLUSTER 'lab'
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
ENGINE = ReplicatedMergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
TTL toDateTime(Timestamp) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS otel.otel_traces_trace_id_ts ON CLUSTER 'lab'
(
    TraceId String CODEC(ZSTD(1)),
    Start   DateTime('UTC') CODEC(Delta, ZSTD(1)),
    End     DateTime('UTC') CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplicatedMergeTree
PARTITION BY toDate(Start)
ORDER BY (TraceId, Start)
TTL Start + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS otel.otel_traces_trace_id_ts_mv ON CLUSTER 'lab'
TO otel.otel_traces_trace_id_ts
AS SELECT
    TraceId,
    toDateTime(min(Timestamp)) AS Start,
    toDateTime(max(Timestamp)) AS End
FROM otel.otel_traces
WHERE TraceId != ''
GROUP BY TraceId;

-- 0002_otel_logs
CREATE TABLE IF NOT EXISTS otel.otel_logs ON CLUSTER 'lab'
(
    Timestamp          DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    TimestampTime      DateTime('UTC') DEFAULT toDateTime(Timestamp),
    TraceId            String CODEC(ZSTD(1)),
    SpanId             String CODEC(ZSTD(1)),
    TraceFlags         UInt8,
    SeverityText       LowCardinality(String) CODEC(ZSTD(1)),
    SeverityNumber     UInt8,
    ServiceName        LowCardinality(String) CODEC(ZSTD(1)),
    Body               String CODEC(ZSTD(1)),
    ResourceSchemaUrl  LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeSchemaUrl     LowCardinality(String) CODEC(ZSTD(1)),
    ScopeName          String CODEC(ZSTD(1)),
    ScopeVersion       LowCardinality(String) CODEC(ZSTD(1)),
    ScopeAttributes    Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    LogAttributes      Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    EventName          String DEFAULT '' CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_body Body TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
)
ENGINE = ReplicatedMergeTree
PARTITION BY toDate(TimestampTime)
ORDER BY (ServiceName, TimestampTime, Timestamp)
TTL TimestampTime + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

-- 0003_otel_metrics
CREATE TABLE IF NOT EXISTS otel.otel_metrics_sum ON CLUSTER 'lab'
(
    ResourceAttributes    Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ResourceSchemaUrl     String CODEC(ZSTD(1)),
    ScopeName             String CODEC(ZSTD(1)),
    ScopeVersion          String CODEC(ZSTD(1)),
    ScopeAttributes       Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeDroppedAttrCount UInt32 CODEC(ZSTD(1)),
    ScopeSchemaUrl        String CODEC(ZSTD(1)),
    ServiceName           LowCardinality(String) CODEC(ZSTD(1)),
    MetricName            String CODEC(ZSTD(1)),
    MetricDescription     String CODEC(ZSTD(1)),
    MetricUnit            String CODEC(ZSTD(1)),
    Attributes            Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    StartTimeUnix         DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    TimeUnix              DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    Value                 Float64 CODEC(ZSTD(1)),
    Flags                 UInt32 CODEC(ZSTD(1)),
    Exemplars Nested
    (
        FilteredAttributes Map(LowCardinality(String), String),
        TimeUnix           DateTime64(9, 'UTC'),
        Value              Float64,
        SpanId             String,
        TraceId            String
    ) CODEC(ZSTD(1)),
    AggregationTemporality Int32 CODEC(ZSTD(1)),
    IsMonotonic           Bool CODEC(Delta, ZSTD(1)),
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_value mapValues(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplicatedMergeTree
PARTITION BY toDate(TimeUnix)
ORDER BY (ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix))
TTL toDateTime(TimeUnix) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS otel.otel_metrics_gauge ON CLUSTER 'lab'
(
    ResourceAttributes    Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ResourceSchemaUrl     String CODEC(ZSTD(1)),
    ScopeName             String CODEC(ZSTD(1)),
    ScopeVersion          String CODEC(ZSTD(1)),
    ScopeAttributes       Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeDroppedAttrCount UInt32 CODEC(ZSTD(1)),
    ScopeSchemaUrl        String CODEC(ZSTD(1)),
    ServiceName           LowCardinality(String) CODEC(ZSTD(1)),
    MetricName            String CODEC(ZSTD(1)),
    MetricDescription     String CODEC(ZSTD(1)),
    MetricUnit            String CODEC(ZSTD(1)),
    Attributes            Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    StartTimeUnix         DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    TimeUnix              DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    Value                 Float64 CODEC(ZSTD(1)),
    Flags                 UInt32 CODEC(ZSTD(1)),
    Exemplars Nested
    (
        FilteredAttributes Map(LowCardinality(String), String),
        TimeUnix           DateTime64(9, 'UTC'),
        Value              Float64,
        SpanId             String,
        TraceId            String
    ) CODEC(ZSTD(1)),
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_value mapValues(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplicatedMergeTree
PARTITION BY toDate(TimeUnix)
ORDER BY (ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix))
TTL toDateTime(TimeUnix) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS otel.otel_metrics_histogram ON CLUSTER 'lab'
(
    ResourceAttributes    Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ResourceSchemaUrl     String CODEC(ZSTD(1)),
    ScopeName             String CODEC(ZSTD(1)),
    ScopeVersion          String CODEC(ZSTD(1)),
    ScopeAttributes       Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeDroppedAttrCount UInt32 CODEC(ZSTD(1)),
    ScopeSchemaUrl        String CODEC(ZSTD(1)),
    ServiceName           LowCardinality(String) CODEC(ZSTD(1)),
    MetricName            String CODEC(ZSTD(1)),
    MetricDescription     String CODEC(ZSTD(1)),
    MetricUnit            String CODEC(ZSTD(1)),
    Attributes            Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    StartTimeUnix         DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    TimeUnix              DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    Count                 UInt64 CODEC(Delta, ZSTD(1)),
    Sum                   Float64 CODEC(ZSTD(1)),
    BucketCounts          Array(UInt64) CODEC(ZSTD(1)),
    ExplicitBounds        Array(Float64) CODEC(ZSTD(1)),
    Exemplars Nested
    (
        FilteredAttributes Map(LowCardinality(String), String),
        TimeUnix           DateTime64(9, 'UTC'),
        Value              Float64,
        SpanId             String,
        TraceId            String
    ) CODEC(ZSTD(1)),
    Flags                 UInt32 CODEC(ZSTD(1)),
    Min                   Float64 CODEC(ZSTD(1)),
    Max                   Float64 CODEC(ZSTD(1)),
    AggregationTemporality Int32 CODEC(ZSTD(1)),
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_value mapValues(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplicatedMergeTree
PARTITION BY toDate(TimeUnix)
ORDER BY (ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix))
TTL toDateTime(TimeUnix) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS otel.otel_metrics_exponential_histogram ON CLUSTER 'lab'
(
    ResourceAttributes    Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ResourceSchemaUrl     String CODEC(ZSTD(1)),
    ScopeName             String CODEC(ZSTD(1)),
    ScopeVersion          String CODEC(ZSTD(1)),
    ScopeAttributes       Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeDroppedAttrCount UInt32 CODEC(ZSTD(1)),
    ScopeSchemaUrl        String CODEC(ZSTD(1)),
    ServiceName           LowCardinality(String) CODEC(ZSTD(1)),
    MetricName            String CODEC(ZSTD(1)),
    MetricDescription     String CODEC(ZSTD(1)),
    MetricUnit            String CODEC(ZSTD(1)),
    Attributes            Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    StartTimeUnix         DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    TimeUnix              DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    Count                 UInt64 CODEC(Delta, ZSTD(1)),
    Sum                   Float64 CODEC(ZSTD(1)),
    Scale                 Int32 CODEC(ZSTD(1)),
    ZeroCount             UInt64 CODEC(ZSTD(1)),
    PositiveOffset        Int32 CODEC(ZSTD(1)),
    PositiveBucketCounts  Array(UInt64) CODEC(ZSTD(1)),
    NegativeOffset        Int32 CODEC(ZSTD(1)),
    NegativeBucketCounts  Array(UInt64) CODEC(ZSTD(1)),
    Exemplars Nested
    (
        FilteredAttributes Map(LowCardinality(String), String),
        TimeUnix           DateTime64(9, 'UTC'),
        Value              Float64,
        SpanId             String,
        TraceId            String
    ) CODEC(ZSTD(1)),
    Flags                 UInt32 CODEC(ZSTD(1)),
    Min                   Float64 CODEC(ZSTD(1)),
    Max                   Float64 CODEC(ZSTD(1)),
    AggregationTemporality Int32 CODEC(ZSTD(1)),
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_value mapValues(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplicatedMergeTree
PARTITION BY toDate(TimeUnix)
ORDER BY (ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix))
TTL toDateTime(TimeUnix) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS otel.otel_metrics_summary ON CLUSTER 'lab'
(
    ResourceAttributes    Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ResourceSchemaUrl     String CODEC(ZSTD(1)),
    ScopeName             String CODEC(ZSTD(1)),
    ScopeVersion          String CODEC(ZSTD(1)),
    ScopeAttributes       Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeDroppedAttrCount UInt32 CODEC(ZSTD(1)),
    ScopeSchemaUrl        String CODEC(ZSTD(1)),
    ServiceName           LowCardinality(String) CODEC(ZSTD(1)),
    MetricName            String CODEC(ZSTD(1)),
    MetricDescription     String CODEC(ZSTD(1)),
    MetricUnit            String CODEC(ZSTD(1)),
    Attributes            Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    StartTimeUnix         DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    TimeUnix              DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    Count                 UInt64 CODEC(Delta, ZSTD(1)),
    Sum                   Float64 CODEC(ZSTD(1)),
    ValueAtQuantiles Nested
    (
        Quantile Float64,
        Value    Float64
    ) CODEC(ZSTD(1)),
    Exemplars Nested
    (
        FilteredAttributes Map(LowCardinality(String), String),
        TimeUnix           DateTime64(9, 'UTC'),
        Value              Float64,
        SpanId             String,
        TraceId            String
    ) CODEC(ZSTD(1)),
    Flags                 UInt32 CODEC(ZSTD(1)),
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_value mapValues(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplicatedMergeTree
PARTITION BY toDate(TimeUnix)
ORDER BY (ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix))
TTL toDateTime(TimeUnix) + toIntervalDay(30)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

-- 0004_lead_submissions
CREATE TABLE IF NOT EXISTS otel.lead_submissions ON CLUSTER 'lab'
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
ENGINE = ReplicatedMergeTree
PARTITION BY toDate(event_time)
ORDER BY (toStartOfHour(event_time), source, endpoint, outcome, event_time)
TTL toDateTime(event_time) + toIntervalDay(400)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS otel.lead_submissions_mv ON CLUSTER 'lab'
TO otel.lead_submissions
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
FROM otel.otel_traces
WHERE SpanName = 'lead.submit';

-- 0005_analysis
CREATE TABLE IF NOT EXISTS otel.analysis_runs ON CLUSTER 'lab'
(
    run_id        UUID,
    day           Date,
    status        LowCardinality(String),
    trigger       LowCardinality(String),
    attempts      UInt8,
    queued_at     DateTime64(3, 'UTC'),
    started_at    Nullable(DateTime64(3, 'UTC')),
    finished_at   Nullable(DateTime64(3, 'UTC')),
    facts_ms      UInt32,
    llm_ms        UInt32,
    total_ms      UInt32,
    model         LowCardinality(String),
    prompt_tokens UInt32,
    output_tokens UInt32,
    error         String,
    updated_at    DateTime64(3, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(day)
ORDER BY (day, run_id);

CREATE TABLE IF NOT EXISTS otel.ai_summaries ON CLUSTER 'lab'
(
    run_id                   UUID,
    day                      Date,
    version                  UInt32,
    generated_at             DateTime64(3, 'UTC'),
    generator                LowCardinality(String),
    model                    LowCardinality(String),
    time_zone                LowCardinality(String),
    executive_summary        String,
    user_behavior            String,
    system_behavior          String,
    misconfiguration_signals String,
    confidence               LowCardinality(String),
    confidence_reasons       Array(String),
    scope                    String,
    findings                 String,
    grounding_violations     Array(String)
)
ENGINE = ReplicatedMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, version, run_id);

-- 0006_submission_rollups
CREATE TABLE IF NOT EXISTS otel.lead_submissions_15m ON CLUSTER 'lab'
(
    bucket   DateTime('UTC'),
    service  LowCardinality(String),
    source   LowCardinality(String),
    endpoint LowCardinality(String),
    page     LowCardinality(String),
    form_id  LowCardinality(String),
    outcome  LowCardinality(String),
    reason   LowCardinality(String),
    submissions SimpleAggregateFunction(sum, UInt64)
)
ENGINE = ReplicatedAggregatingMergeTree
PARTITION BY toDate(bucket)
ORDER BY (bucket, service, source, endpoint, page, form_id, outcome, reason)
TTL bucket + toIntervalDay(400)
SETTINGS ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS otel.lead_latency_15m ON CLUSTER 'lab'
(
    bucket      DateTime('UTC'),
    service     LowCardinality(String),
    source      LowCardinality(String),
    submissions SimpleAggregateFunction(sum, UInt64),
    duration_ns AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64)
)
ENGINE = ReplicatedAggregatingMergeTree
PARTITION BY toDate(bucket)
ORDER BY (bucket, service, source)
TTL bucket + toIntervalDay(400)
SETTINGS ttl_only_drop_parts = 1;

INSERT INTO otel.lead_submissions_15m
SELECT toStartOfFifteenMinutes(event_time) AS bucket, service, source, endpoint, page,
       form_id, outcome, reason, count() AS submissions
FROM otel.lead_submissions
WHERE (SELECT count() FROM otel.lead_submissions_15m) = 0
GROUP BY bucket, service, source, endpoint, page, form_id, outcome, reason;

INSERT INTO otel.lead_latency_15m
SELECT toStartOfFifteenMinutes(event_time) AS bucket, service, source, count() AS submissions,
       quantilesTDigestState(0.5, 0.95, 0.99)(duration_ns) AS duration_ns
FROM otel.lead_submissions
WHERE (SELECT count() FROM otel.lead_latency_15m) = 0
GROUP BY bucket, service, source;

CREATE MATERIALIZED VIEW IF NOT EXISTS otel.lead_submissions_15m_mv ON CLUSTER 'lab'
TO otel.lead_submissions_15m
AS SELECT
    toStartOfFifteenMinutes(event_time) AS bucket, service, source, endpoint, page, form_id,
    outcome, reason, count() AS submissions
FROM otel.lead_submissions
GROUP BY bucket, service, source, endpoint, page, form_id, outcome, reason;

CREATE MATERIALIZED VIEW IF NOT EXISTS otel.lead_latency_15m_mv ON CLUSTER 'lab'
TO otel.lead_latency_15m
AS SELECT
    toStartOfFifteenMinutes(event_time) AS bucket, service, source, count() AS submissions,
    quantilesTDigestState(0.5, 0.95, 0.99)(duration_ns) AS duration_ns
FROM otel.lead_submissions
GROUP BY bucket, service, source;

-- 0007_record_attribution
ALTER TABLE otel.lead_submissions ON CLUSTER 'lab'
    ADD COLUMN IF NOT EXISTS instance LowCardinality(String) AFTER service;

ALTER TABLE otel.lead_submissions ON CLUSTER 'lab'
    ADD COLUMN IF NOT EXISTS replayed UInt8 AFTER duration_ns;

ALTER TABLE otel.lead_submissions_mv ON CLUSTER 'lab' MODIFY QUERY
SELECT
    Timestamp                                                  AS event_time,
    TraceId                                                    AS trace_id,
    SpanId                                                     AS span_id,
    ServiceName                                                AS service,
    ResourceAttributes['service.instance.id']                  AS instance,
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
    Duration                                                   AS duration_ns,
    toUInt8(SpanAttributes['lead.replayed'] = 'true')          AS replayed
FROM otel.otel_traces
WHERE SpanName = 'lead.submit';

-- 0008_analysis_run_states
CREATE TABLE IF NOT EXISTS otel.analysis_run_states ON CLUSTER 'lab'
(
    run_id        UUID,
    day           Date,
    status        LowCardinality(String),
    trigger       LowCardinality(String),
    attempts      UInt8,
    queued_at     DateTime64(3, 'UTC'),
    started_at    Nullable(DateTime64(3, 'UTC')),
    finished_at   Nullable(DateTime64(3, 'UTC')),
    facts_ms      UInt32,
    llm_ms        UInt32,
    total_ms      UInt32,
    model         LowCardinality(String),
    prompt_tokens UInt32,
    output_tokens UInt32,
    error         String,
    updated_at    DateTime64(3, 'UTC')
)
ENGINE = ReplicatedMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, run_id, updated_at);

CREATE TABLE IF NOT EXISTS otel.analysis_runs ON CLUSTER 'lab'
(
    run_id        UUID,
    day           Date,
    status        LowCardinality(String),
    trigger       LowCardinality(String),
    attempts      UInt8,
    queued_at     DateTime64(3, 'UTC'),
    started_at    Nullable(DateTime64(3, 'UTC')),
    finished_at   Nullable(DateTime64(3, 'UTC')),
    facts_ms      UInt32,
    llm_ms        UInt32,
    total_ms      UInt32,
    model         LowCardinality(String),
    prompt_tokens UInt32,
    output_tokens UInt32,
    error         String,
    updated_at    DateTime64(3, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(day)
ORDER BY (day, run_id);

INSERT INTO otel.analysis_run_states
SELECT run_id, day, status, trigger, attempts, queued_at, started_at, finished_at, facts_ms,
       llm_ms, total_ms, model, prompt_tokens, output_tokens, error, updated_at
FROM otel.analysis_runs
WHERE (run_id, updated_at) NOT IN (SELECT run_id, updated_at FROM otel.analysis_run_states);

DROP TABLE IF EXISTS otel.analysis_runs ON CLUSTER 'lab';

-- distributed tables
