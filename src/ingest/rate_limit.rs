//! Token buckets per client key. Time is passed in (the request's event time), so a
//! backfill at simulated time is limited exactly as live traffic would have been.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::RateLimitSettings;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
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

impl RateLimiter {
    /// Takes one token from `client`'s bucket at time `at`, or says when one will be there.
    pub fn check(
        &self,
        client: &str,
        limit: RateLimitSettings,
        at: DateTime<Utc>,
    ) -> Result<(), RetryAfter> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(client.to_owned()).or_insert(Bucket {
            tokens: f64::from(limit.burst),
            updated: at,
        });
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

    #[test]
    fn a_burst_passes_then_the_next_request_waits() {
        let limiter = RateLimiter::default();
        for _ in 0..3 {
            assert!(limiter.check("k", LIMIT, t(0)).is_ok());
        }
        let wait = limiter.check("k", LIMIT, t(0)).unwrap_err();
        assert_eq!(wait.header_secs(), 1);
    }

    #[test]
    fn tokens_come_back_with_time() {
        let limiter = RateLimiter::default();
        for _ in 0..3 {
            limiter.check("k", LIMIT, t(0)).unwrap();
        }
        assert!(limiter.check("k", LIMIT, t(500)).is_err());
        assert!(limiter.check("k", LIMIT, t(1_000)).is_ok());
    }

    #[test]
    fn clients_have_their_own_buckets() {
        let limiter = RateLimiter::default();
        for _ in 0..3 {
            limiter.check("a", LIMIT, t(0)).unwrap();
        }
        assert!(limiter.check("a", LIMIT, t(0)).is_err());
        assert!(limiter.check("b", LIMIT, t(0)).is_ok());
    }

    #[test]
    fn an_earlier_event_time_does_not_refill_or_panic() {
        let limiter = RateLimiter::default();
        for _ in 0..3 {
            limiter.check("k", LIMIT, t(10_000)).unwrap();
        }
        assert!(limiter.check("k", LIMIT, t(0)).is_err());
    }
}
