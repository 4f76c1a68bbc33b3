//! The daily analyzer: facts from SQL, deterministic detectors, a model's narration
//! checked against those facts, written back as versioned records.

pub mod detect;
pub mod facts;
pub mod finding;
pub mod grounding;
pub mod jobs;
pub mod narrate;
pub mod ollama;
pub mod prompt;
pub mod recording;
pub mod records;
pub mod render;
pub mod report;
pub mod rules;

pub use finding::{Finding, FindingKind, Severity, Subject};
