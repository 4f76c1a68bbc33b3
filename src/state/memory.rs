//! The in-process backend: right for one instance (and the one-command run), where
//! nothing else needs to see the state. It never fails.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};

use super::dedup_index::DedupIndex;
use super::rate_limit::{RateLimiter, RetryAfter};
use super::{BucketKey, Claim, Fingerprint, Holder, Lease, StateBackend, StateError};
use crate::config::RateLimitSettings;

#[derive(Debug, Default)]
struct Leases {
    held: HashMap<String, (String, Instant)>,
    /// One counter for all names: fences grow per name too, and nothing is kept per
    /// name once its lease is gone.
    fence: u64,
}

/// Expired leases are dropped once this many are held (schedule firings add one each).
const PRUNE_LEASES_ABOVE: usize = 1_024;

#[derive(Debug)]
pub struct MemoryState {
    dedup: Mutex<DedupIndex>,
    clients: RateLimiter<String>,
    addresses: RateLimiter<IpAddr>,
    leases: Mutex<Leases>,
    versions: Mutex<HashMap<NaiveDate, u32>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryState {
    /// `dedup_max_mb` caps the dedup index, `addresses` the keyless buckets.
    pub fn new(window: Duration, dedup_max_mb: u64, addresses: usize) -> Self {
        let max_bytes = usize::try_from(dedup_max_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        Self {
            dedup: Mutex::new(DedupIndex::new(window, max_bytes)),
            clients: RateLimiter::default(),
            addresses: RateLimiter::with_capacity(addresses),
            leases: Mutex::default(),
            versions: Mutex::default(),
        }
    }

    pub fn dedup_len(&self) -> usize {
        lock(&self.dedup).len()
    }
}

#[async_trait::async_trait]
impl StateBackend for MemoryState {
    fn is_shared(&self) -> bool {
        false
    }

    async fn reserve(
        &self,
        key: Fingerprint,
        holder: Holder,
        at: DateTime<Utc>,
    ) -> Result<Claim, StateError> {
        Ok(lock(&self.dedup).reserve(key, holder, at))
    }

    async fn confirm(
        &self,
        key: Fingerprint,
        holder: Holder,
        _at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        lock(&self.dedup).confirm(key, holder);
        Ok(())
    }

    fn release(&self, key: Fingerprint, holder: Holder) {
        lock(&self.dedup).release(key, holder);
    }

    async fn warm(&self, accepted: Vec<(Fingerprint, DateTime<Utc>)>) -> Result<usize, StateError> {
        let mut dedup = lock(&self.dedup);
        Ok(accepted
            .into_iter()
            .filter(|(key, at)| dedup.warm(*key, *at))
            .count())
    }

    async fn take_token(
        &self,
        bucket: BucketKey<'_>,
        limit: RateLimitSettings,
        at: DateTime<Utc>,
    ) -> Result<Result<(), RetryAfter>, StateError> {
        Ok(match bucket {
            BucketKey::Client(id) => self.clients.check(id, limit, at),
            BucketKey::Address(address) => self.addresses.check(&address, limit, at),
        })
    }

    async fn acquire_lease(&self, name: &str, ttl: Duration) -> Result<Option<Lease>, StateError> {
        let mut leases = lock(&self.leases);
        let now = Instant::now();
        if leases.held.get(name).is_some_and(|(_, until)| *until > now) {
            return Ok(None);
        }
        if leases.held.len() >= PRUNE_LEASES_ABOVE {
            leases.held.retain(|_, (_, until)| *until > now);
        }
        leases.fence += 1;
        let lease = Lease::new(name, leases.fence, Holder::fresh());
        leases
            .held
            .insert(name.to_owned(), (lease.token(), now + ttl));
        Ok(Some(lease))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StateError> {
        let mut leases = lock(&self.leases);
        let now = Instant::now();
        match leases.held.get_mut(&lease.name) {
            Some((token, until)) if *token == lease.token() && *until > now => {
                *until = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StateError> {
        let mut leases = lock(&self.leases);
        if leases
            .held
            .get(&lease.name)
            .is_some_and(|(token, _)| *token == lease.token())
        {
            leases.held.remove(&lease.name);
        }
        Ok(())
    }

    async fn was_leased(&self, _name: &str) -> Result<bool, StateError> {
        Ok(false)
    }

    async fn allocate_version(&self, day: NaiveDate, floor: u32) -> Result<u32, StateError> {
        let mut versions = lock(&self.versions);
        let last = versions.entry(day).or_default();
        *last = (*last).max(floor) + 1;
        Ok(*last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> MemoryState {
        MemoryState::new(Duration::from_secs(600), 1, 16)
    }

    #[tokio::test]
    async fn a_lease_is_held_once_until_released_or_expired() {
        let state = state();
        let ttl = Duration::from_secs(60);
        let first = state.acquire_lease("day", ttl).await.unwrap().unwrap();
        assert!(state.acquire_lease("day", ttl).await.unwrap().is_none());
        assert!(state.renew_lease(&first, ttl).await.unwrap());
        state.release_lease(&first).await.unwrap();
        let second = state
            .acquire_lease("day", Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        assert!(second.fence > first.fence, "fencing tokens grow");
        assert!(
            !state.renew_lease(&first, ttl).await.unwrap(),
            "an old lease is gone"
        );
        let third = state.acquire_lease("day", ttl).await.unwrap();
        assert!(third.is_some(), "an expired lease is free");
    }

    #[tokio::test]
    async fn versions_are_never_handed_out_twice_and_start_above_the_floor() {
        let state = state();
        let day = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        assert_eq!(state.allocate_version(day, 3).await.unwrap(), 4);
        assert_eq!(state.allocate_version(day, 3).await.unwrap(), 5);
        assert_eq!(state.allocate_version(day, 9).await.unwrap(), 10);
    }
}
