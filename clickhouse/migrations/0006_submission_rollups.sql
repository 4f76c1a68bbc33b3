-- Quarter-hour rollups of lead_submissions, kept by materialized views, for what the
-- analyzer reads over many days: the 7-day baseline (volume, hourly profile, pages) and
-- latency quantiles. Their size follows the number of distinct sources, pages and
-- outcomes, not the traffic, so a baseline of busy days is read in milliseconds.
-- Quarter hours because every time zone's offset is a multiple of 15 minutes: a local
-- day or hour is always a whole number of buckets.
CREATE TABLE IF NOT EXISTS ${DATABASE}.lead_submissions_15m ${ON_CLUSTER}
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
ENGINE = ${ENGINE_PREFIX}AggregatingMergeTree
PARTITION BY toDate(bucket)
ORDER BY (bucket, service, source, endpoint, page, form_id, outcome, reason)
TTL bucket + toIntervalDay(${SUBMISSIONS_TTL_DAYS})
SETTINGS ttl_only_drop_parts = 1;

-- Latency per source as t-digest states: merged over any range of buckets they give
-- p50/p95/p99 within about 1 % without reading the submissions again.
CREATE TABLE IF NOT EXISTS ${DATABASE}.lead_latency_15m ${ON_CLUSTER}
(
    bucket      DateTime('UTC'),
    service     LowCardinality(String),
    source      LowCardinality(String),
    submissions SimpleAggregateFunction(sum, UInt64),
    duration_ns AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64)
)
ENGINE = ${ENGINE_PREFIX}AggregatingMergeTree
PARTITION BY toDate(bucket)
ORDER BY (bucket, service, source)
TTL bucket + toIntervalDay(${SUBMISSIONS_TTL_DAYS})
SETTINGS ttl_only_drop_parts = 1;

-- Submissions already stored are rolled up once, before the views exist. The guard
-- keeps a re-run (after a failure further down) from counting them twice.
INSERT INTO ${DATABASE}.lead_submissions_15m
SELECT toStartOfFifteenMinutes(event_time) AS bucket, service, source, endpoint, page,
       form_id, outcome, reason, count() AS submissions
FROM ${DATABASE}.lead_submissions
WHERE (SELECT count() FROM ${DATABASE}.lead_submissions_15m) = 0
GROUP BY bucket, service, source, endpoint, page, form_id, outcome, reason;

INSERT INTO ${DATABASE}.lead_latency_15m
SELECT toStartOfFifteenMinutes(event_time) AS bucket, service, source, count() AS submissions,
       quantilesTDigestState(0.5, 0.95, 0.99)(duration_ns) AS duration_ns
FROM ${DATABASE}.lead_submissions
WHERE (SELECT count() FROM ${DATABASE}.lead_latency_15m) = 0
GROUP BY bucket, service, source;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.lead_submissions_15m_mv ${ON_CLUSTER}
TO ${DATABASE}.lead_submissions_15m
AS SELECT
    toStartOfFifteenMinutes(event_time) AS bucket, service, source, endpoint, page, form_id,
    outcome, reason, count() AS submissions
FROM ${DATABASE}.lead_submissions
GROUP BY bucket, service, source, endpoint, page, form_id, outcome, reason;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${DATABASE}.lead_latency_15m_mv ${ON_CLUSTER}
TO ${DATABASE}.lead_latency_15m
AS SELECT
    toStartOfFifteenMinutes(event_time) AS bucket, service, source, count() AS submissions,
    quantilesTDigestState(0.5, 0.95, 0.99)(duration_ns) AS duration_ns
FROM ${DATABASE}.lead_submissions
GROUP BY bucket, service, source;
