//! The submission pipeline: what happens to every lead, from bytes to verdict.

pub mod auth;
pub mod body;
pub mod dedup;
pub mod delivery;
pub mod pipeline;
mod record;
pub mod setup;

pub use auth::{Credentials, hash_key};
pub use body::{BodyError, RawBody};
pub use pipeline::{Endpoint, Ingest, Verdict};
pub use setup::IngestError;
