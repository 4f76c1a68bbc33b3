//! lead-lab: an observability-first lead submission service and lab.
//!
//! See docs/architecture.md for how the pieces fit together.

pub mod analyze;
pub mod cli;
pub mod config;
pub mod domain;
pub mod evaluate;
pub mod http;
pub mod ingest;
pub mod simulate;
pub mod state;
pub mod store;
pub mod telemetry;
