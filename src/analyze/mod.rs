//! The daily analyzer: facts from SQL, deterministic detectors, a model's narration
//! checked against those facts, written back as versioned records.

pub mod budget;
pub mod coordination;
pub mod detect;
pub mod eval;
pub mod facts;
pub mod finding;
pub mod grounding;
pub mod jobs;
pub mod llm;
pub mod narrate;
pub mod prompt;
pub mod recording;
pub mod records;
pub mod report;
pub mod rules;

pub use finding::{Dimension, Finding, FindingKind, RateInterval, Severity, Subject};
