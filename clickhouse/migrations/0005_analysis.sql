-- The analyzer's own records. Both tables are append-only: a run's status changes are
-- new rows (the latest `updated_at` wins), and a day's report is regenerated as a new
-- version, so earlier runs and reports are never overwritten.
CREATE TABLE IF NOT EXISTS ${DATABASE}.analysis_runs ${ON_CLUSTER}
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
ENGINE = ${ENGINE_PREFIX}ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(day)
ORDER BY (day, run_id);

CREATE TABLE IF NOT EXISTS ${DATABASE}.ai_summaries ${ON_CLUSTER}
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
ENGINE = ${ENGINE_PREFIX}MergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, version, run_id);
