-- The analyzer's run states, append-only for real. `analysis_runs` (0005) is a
-- ReplacingMergeTree ordered by (day, run_id): background merges keep only a run's
-- latest state, so its queued/running history could vanish. Its rows move here, into a
-- plain MergeTree where every state change stays a row of its own (the latest
-- `updated_at` is the run's state); the old table is dropped once they are copied.
CREATE TABLE IF NOT EXISTS ${DATABASE}.analysis_run_states ${ON_CLUSTER}
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
ENGINE = ${ENGINE_PREFIX}MergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, run_id, updated_at);

-- The old table as 0005 made it, so the copy below has a source also when this
-- migration runs again after an interruption past the DROP (it then copies nothing).
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

-- A state already copied (same run and time) is not copied again.
INSERT INTO ${DATABASE}.analysis_run_states
SELECT run_id, day, status, trigger, attempts, queued_at, started_at, finished_at, facts_ms,
       llm_ms, total_ms, model, prompt_tokens, output_tokens, error, updated_at
FROM ${DATABASE}.analysis_runs
WHERE (run_id, updated_at) NOT IN (SELECT run_id, updated_at FROM ${DATABASE}.analysis_run_states);

DROP TABLE IF EXISTS ${DATABASE}.analysis_runs ${ON_CLUSTER};
