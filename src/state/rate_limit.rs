//! Token buckets per client: per API key for authenticated requests, per address for
//! requests without a valid key. Time is passed in (the request's event time), so a
//! backfill at simulated time is limited exactly as live traffic would have been.
//!
//! Memory is bounded: buckets live in two generations of at most `capacity / 2` keys
//! each. When the current generation is full it becomes the previous one and the older
//! one is dropped; a key seen again moves back into the current generation. A dropped
//! bucket starts full the next time: only a client idle through a whole generation,
//! or one of more than `capacity / 2` clients churning, gets its burst back early.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::RateLimitSettings;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: DateTime<Utc>,
}

#[derive(Debug)]
struct Generations<K> {
    current: HashMap<K, Bucket>,
    previous: HashMap<K, Bucket>,
}

#[derive(Debug)]
pub struct RateLimiter<K = String> {
    buckets: Mutex<Generations<K>>,
    generation_size: usize,
}

/// How long until the client may try again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, at least 1.
    pub fn header_secs(self) -> u64 {
        self.0.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// Buckets kept per limiter unless configured otherwise.
pub const DEFAULT_CAPACITY: usize = 65_536;

impl<K: Hash + Eq + Clone> Default for RateLimiter<K> {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// At most `capacity` buckets (at least 2) are kept.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buckets: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
            }),
            generation_size: (capacity / 2).max(1),
        }
    }

    /// Takes one token from `client`'s bucket at time `at`, or says when one will be there.
    /// A borrowed key (`&str` for `String`) is copied only when its bucket is new.
    pub fn check<Q>(
        &self,
        client: &Q,
        limit: RateLimitSettings,
        at: DateTime<Utc>,
    ) -> Result<(), RetryAfter>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.bucket(client, self.generation_size, || Bucket {
            tokens: f64::from(limit.burst),
            updated: at,
        });
        take(bucket, limit, at)
    }

    /// Buckets held now (both generations).
    pub fn len(&self) -> usize {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.current.len() + buckets.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone> Generations<K> {
    fn bucket<Q>(
        &mut self,
        key: &Q,
        generation_size: usize,
        fresh: impl FnOnce() -> Bucket,
    ) -> &mut Bucket
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if !self.current.contains_key(key) {
            let bucket = self.previous.remove(key).unwrap_or_else(fresh);
            if self.current.len() >= generation_size {
                self.previous = std::mem::take(&mut self.current);
            }
            self.current.insert(key.to_owned(), bucket);
        }
        self.current.get_mut(key).expect("inserted above")
    }
}

fn take(
    bucket: &mut Bucket,
    limit: RateLimitSettings,
    at: DateTime<Utc>,
) -> Result<(), RetryAfter> {
    // Events may arrive slightly out of order; time never runs backwards for a bucket.
    let elapsed = (at - bucket.updated).to_std().unwrap_or_default();
    if at > bucket.updated {
        bucket.updated = at;
    }
    bucket.tokens =
        (bucket.tokens + elapsed.as_secs_f64() * limit.per_second).min(f64::from(limit.burst));
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Ok(())
    } else {
        let missing = 1.0 - bucket.tokens;
        Err(RetryAfter(Duration::from_secs_f64(
            missing / limit.per_second,
        )))
    }
}

/// The key an address is limited by: IPv4 addresses as they are, IPv6 by their /64
/// (one host usually holds a whole /64, and rotating inside it must not reset a limit).
pub fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimitSettings = RateLimitSettings {
        burst: 3,
        per_second: 1.0,
    };

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn key(name: &str) -> String {
        name.to_owned()
    }

    /// A limiter whose bucket `name` spent its whole burst at `at_ms`.
    fn drained(name: &str, at_ms: i64) -> RateLimiter {
        let limiter = RateLimiter::default();
        for _ in 0..LIMIT.burst {
            limiter.check(&key(name), LIMIT, t(at_ms)).unwrap();
        }
        limiter
    }

    fn passes(limiter: &RateLimiter, name: &str, at_ms: i64) -> bool {
        limiter.check(&key(name), LIMIT, t(at_ms)).is_ok()
    }

    #[test]
    fn a_burst_passes_then_the_next_request_waits() {
        let limiter = RateLimiter::default();
        for _ in 0..3 {
            assert!(limiter.check(&key("k"), LIMIT, t(0)).is_ok());
        }
        let wait = limiter.check(&key("k"), LIMIT, t(0)).unwrap_err();
        assert_eq!(wait.header_secs(), 1);
    }

    #[test]
    fn tokens_come_back_with_time() {
        let limiter = drained("k", 0);
        assert!(!passes(&limiter, "k", 500));
        assert!(passes(&limiter, "k", 1_000));
    }

    #[test]
    fn clients_have_their_own_buckets() {
        let limiter = drained("a", 0);
        assert!(!passes(&limiter, "a", 0));
        assert!(passes(&limiter, "b", 0));
    }

    #[test]
    fn an_earlier_event_time_does_not_refill_or_panic() {
        assert!(!passes(&drained("k", 10_000), "k", 0));
    }

    #[test]
    fn memory_is_bounded_by_the_capacity() {
        let limiter = RateLimiter::with_capacity(100);
        for i in 0..10_000u32 {
            let _ = limiter.check(&i, LIMIT, t(0));
        }
        assert!(limiter.len() <= 100, "{} buckets", limiter.len());
    }

    #[test]
    fn a_busy_client_keeps_its_bucket_while_others_churn() {
        let limiter = RateLimiter::with_capacity(10);
        for _ in 0..3 {
            limiter.check(&u32::MAX, LIMIT, t(0)).unwrap();
        }
        for i in 0..1_000u32 {
            let _ = limiter.check(&i, LIMIT, t(0));
            assert!(
                limiter.check(&u32::MAX, LIMIT, t(0)).is_err(),
                "the busy client's empty bucket survived {i} others"
            );
        }
    }

    #[test]
    fn ipv6_addresses_share_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(address_key(v4), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), v4);
    }
}
