//! Integration tests against the real local stack (scripts/stack up; scripts/test starts it).
//! One binary, so the modules share support code.

mod app;
mod fake_ollama;
mod support;

mod analyzer;
mod analyzer_facts;
mod attribution;
mod clickhouse_http;
mod collector_outage;
mod compose;
mod console;
mod dashboards;
mod evaluation;
mod faults;
mod house;
mod ingest;
mod logs;
mod migrate;
mod narration;
mod openapi;
mod otel_pipeline;
mod real_model;
mod reconcile;
mod replicas;
mod sampling;
mod schema_layouts;
mod shedding;
mod shutdown;
mod simulate;
mod stated_time;
