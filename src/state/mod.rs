//! The state replicas of the service must agree on, behind one trait: dedup
//! reservations, rate-limit buckets, analysis leases and report versions. In-process
//! ([`memory::MemoryState`], the default: one instance) or Redis ([`redis::RedisState`],
//! `state.url`: any number of instances behave as one).
//!
//! When Redis cannot be reached each caller decides what that means for its feature
//! (docs/scaling.md): dedup fails closed, rate limits fail open, analysis runs wait.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use crate::config::{RateLimitSettings, Settings};

pub mod dedup_index;
pub mod memory;
pub mod rate_limit;
pub mod redis;

pub use rate_limit::RetryAfter;

/// The state backend could not answer (Redis down, slow or refusing).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the shared state is unavailable: {0}")]
pub struct StateError(pub String);

/// A dedup key reduced to 16 bytes (a keyed hash of submitter, source and page): what
/// the index and Redis hold, so an entry costs a fixed few dozen bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 16]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Who a reservation belongs to, so only its holder releases it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder(pub u128);

impl Holder {
    pub fn fresh() -> Self {
        Self(uuid::Uuid::new_v4().as_u128())
    }
}

/// The answer to a dedup reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Reserved,
    Duplicate,
}

/// Whose token bucket a request takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketKey<'a> {
    /// An API key's client id.
    Client(&'a str),
    /// A request without a valid key, by address (IPv6 by /64).
    Address(IpAddr),
}

/// A held lease: only the holder renews or releases it. `fence` grows with every
/// acquisition of the same name, so a later holder's writes are told from an earlier's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub fence: u64,
    holder: Holder,
}

impl Lease {
    fn new(name: &str, fence: u64, holder: Holder) -> Self {
        Self {
            name: name.to_owned(),
            fence,
            holder,
        }
    }

    /// What the lease's key holds while this lease is alive.
    fn token(&self) -> String {
        format!("{:032x}:{}", self.holder.0, self.fence)
    }
}

#[async_trait::async_trait]
pub trait StateBackend: Send + Sync + fmt::Debug {
    /// Whether other instances see this state (false for the in-process backend).
    fn is_shared(&self) -> bool;

    /// Claims `key` for `holder` unless a lead within the dedup window holds it.
    async fn reserve(
        &self,
        key: Fingerprint,
        holder: Holder,
        at: DateTime<Utc>,
    ) -> Result<Claim, StateError>;

    /// The reserved lead was accepted: it blocks duplicates for the whole window.
    async fn confirm(
        &self,
        key: Fingerprint,
        holder: Holder,
        at: DateTime<Utc>,
    ) -> Result<(), StateError>;

    /// The reserved lead was not accepted; called from a drop guard, so it must not
    /// block (a shared backend sends the release in the background).
    fn release(&self, key: Fingerprint, holder: Holder);

    /// Records leads accepted before this process started (read back from ClickHouse);
    /// returns how many were not known yet.
    async fn warm(&self, accepted: Vec<(Fingerprint, DateTime<Utc>)>) -> Result<usize, StateError>;

    /// Takes one token from `bucket` at `at`, or says when one will be there.
    async fn take_token(
        &self,
        bucket: BucketKey<'_>,
        limit: RateLimitSettings,
        at: DateTime<Utc>,
    ) -> Result<Result<(), RetryAfter>, StateError>;

    /// Takes the lease `name` for `ttl` unless someone else holds it.
    async fn acquire_lease(&self, name: &str, ttl: Duration) -> Result<Option<Lease>, StateError>;

    /// Extends a held lease; false when it expired or another holder has it now.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StateError>;

    async fn release_lease(&self, lease: &Lease) -> Result<(), StateError>;

    /// Whether `name` was ever leased through this state. An in-process state answers
    /// false: nobody else could take up what its leases guarded.
    async fn was_leased(&self, name: &str) -> Result<bool, StateError>;

    /// The next report version of `day`, above `floor` (the highest version stored) and
    /// never handed out twice.
    async fn allocate_version(&self, day: NaiveDate, floor: u32) -> Result<u32, StateError>;
}

pub type SharedState = Arc<dyn StateBackend>;

/// The backend `settings` ask for: Redis when `state.url` is set, else in-process.
/// A Redis backend connects lazily, so a service starts while Redis is still down.
pub fn from_settings(settings: &Settings, addresses: usize) -> Result<SharedState, StateError> {
    let window = Duration::from_secs(settings.ingest.dedup_window_secs);
    match settings.state.shared_url() {
        Some(url) => Ok(Arc::new(redis::RedisState::new(
            url,
            &settings.otel.service_name,
            window,
            Duration::from_millis(settings.state.timeout_ms),
        )?)),
        None => Ok(in_process(settings, addresses)),
    }
}

/// An in-process backend with the dedup window and memory caps of `settings`.
pub fn in_process(settings: &Settings, addresses: usize) -> SharedState {
    let window = Duration::from_secs(settings.ingest.dedup_window_secs);
    Arc::new(memory::MemoryState::new(
        window,
        settings.state.dedup_max_mb,
        addresses,
    ))
}
