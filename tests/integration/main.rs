//! Integration tests against the real local stack (scripts/stack up; scripts/test starts it).
//! One binary, so the stack is checked once and the modules share support code.

mod support;

mod clickhouse_http;
mod compose;
mod migrate;
mod otel_pipeline;
