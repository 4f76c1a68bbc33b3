//! Integration tests against the real local stack (scripts/stack up; scripts/test starts it).
//! One binary, so the modules share support code.

mod app;
mod support;

mod clickhouse_http;
mod collector_outage;
mod compose;
mod ingest;
mod migrate;
mod openapi;
mod otel_pipeline;
