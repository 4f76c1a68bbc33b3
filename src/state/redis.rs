//! The Redis backend: every replica of a service (same `otel.service_name`) shares its
//! keys under `leadlab:{service}:`, and every decision is one atomic command or script,
//! so two instances can never both win. One round trip per dedup reservation and per
//! token taken; a release or confirmation is one more.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, Script};

use super::rate_limit::RetryAfter;
use super::{BucketKey, Claim, Fingerprint, Holder, Lease, StateError};
use crate::config::RateLimitSettings;

/// A token bucket, refilled by event time, in one step: KEYS[1] the bucket; ARGV at
/// (ms), burst, tokens per second, key lifetime (ms). Returns {1, 0} when a token was
/// taken, else {0, ms until one is there}. Time never runs backwards for a bucket.
const TAKE_TOKEN: &str = r"
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local at = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local rate = tonumber(ARGV[3])
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or at
if at > updated then
  tokens = math.min(burst, tokens + (at - updated) / 1000 * rate)
  updated = at
end
local taken, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(updated))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {taken, wait}
";

/// Deletes KEYS[1] if it still holds ARGV[1] (only its holder releases a claim).
const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Extends KEYS[1] by ARGV[2] ms if it still holds ARGV[1].
const EXTEND_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

/// Takes lease KEYS[1] for ARGV[2] ms unless held; the fence is the next value of the
/// counter KEYS[2]. ARGV[1] is the holder; the key holds `holder:fence`. Returns the
/// fence, or 0 when the lease is held.
const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return fence
";

/// The next version of KEYS[1], above ARGV[1] (the highest stored); kept ARGV[2] s.
const NEXT_VERSION: &str = r"
local version = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if version <= floor then
  version = floor + 1
  redis.call('SET', KEYS[1], version)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return version
";

/// A version counter outlives the days it is asked for; ClickHouse's highest stored
/// version is the floor after that.
const VERSION_TTL_SECS: u64 = 30 * 86_400;

/// The most a bucket key lives without traffic: a bucket left alone this long is full
/// again for any sane limit, and a fresh one starts full.
const MAX_BUCKET_TTL_MS: u64 = 86_400_000;

pub struct RedisState {
    connection: ConnectionManager,
    prefix: String,
    window_ms: u64,
    timeout: Duration,
    take_token: Script,
    delete_if: Script,
    extend_if: Script,
    acquire: Script,
    next_version: Script,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: not shown.
        f.debug_struct("RedisState")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(err: impl std::fmt::Display) -> StateError {
    StateError(err.to_string())
}

impl RedisState {
    /// Connects lazily: the first operation dials, a lost connection is redialled.
    pub fn new(
        url: &str,
        service: &str,
        window: Duration,
        timeout: Duration,
    ) -> Result<Self, StateError> {
        let client = redis::Client::open(url)
            .map_err(|_| StateError("state.url is not a redis:// URL (value not shown)".into()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(Self {
            connection,
            prefix: format!("leadlab:{service}:"),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
            timeout,
            take_token: Script::new(TAKE_TOKEN),
            delete_if: Script::new(DELETE_IF),
            extend_if: Script::new(EXTEND_IF),
            acquire: Script::new(ACQUIRE),
            next_version: Script::new(NEXT_VERSION),
        })
    }

    fn key(&self, kind: &str, name: impl std::fmt::Display) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    /// One operation, bounded by `state.timeout_ms` whatever the connection does.
    async fn run<T, F>(&self, operation: F) -> Result<T, StateError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(StateError(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

fn holder_text(holder: Holder) -> String {
    format!("{:032x}", holder.0)
}

#[async_trait::async_trait]
impl super::StateBackend for RedisState {
    fn is_shared(&self) -> bool {
        true
    }

    /// `SET NX PX window`: the first claim wins, and it expires with the window.
    async fn reserve(
        &self,
        key: Fingerprint,
        holder: Holder,
        _at: DateTime<Utc>,
    ) -> Result<Claim, StateError> {
        let mut connection = self.connection.clone();
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.key("dedup", key))
                    .arg(holder_text(holder))
                    .arg("NX")
                    .arg("PX")
                    .arg(self.window_ms)
                    .query_async(&mut connection),
            )
            .await?;
        Ok(if set.is_some() {
            Claim::Reserved
        } else {
            Claim::Duplicate
        })
    }

    async fn confirm(
        &self,
        key: Fingerprint,
        _holder: Holder,
        _at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let mut connection = self.connection.clone();
        let options =
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(self.window_ms));
        self.run(connection.set_options::<_, _, ()>(self.key("dedup", key), "accepted", options))
            .await
    }

    fn release(&self, key: Fingerprint, holder: Holder) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut connection = self.connection.clone();
        let script = self.delete_if.clone();
        let key = self.key("dedup", key);
        let timeout = self.timeout;
        // Should the release be lost, the reservation expires with the window: the
        // retry is then answered as a duplicate (fail closed), never accepted twice.
        runtime.spawn(async move {
            let mut invocation = script.key(&key);
            invocation.arg(holder_text(holder));
            let release = invocation.invoke_async::<i64>(&mut connection);
            if !matches!(tokio::time::timeout(timeout, release).await, Ok(Ok(_))) {
                tracing::warn!("cannot release a dedup reservation; it expires with the window");
            }
        });
    }

    /// `SET NX PX` for the rest of each lead's window: what Redis already holds wins.
    async fn warm(&self, accepted: Vec<(Fingerprint, DateTime<Utc>)>) -> Result<usize, StateError> {
        let now = Utc::now();
        let mut pipe = redis::pipe();
        let mut count = 0;
        for (key, at) in accepted {
            let age_ms = u64::try_from((now - at).num_milliseconds()).unwrap_or(0);
            let Some(rest) = self.window_ms.checked_sub(age_ms).filter(|ms| *ms > 0) else {
                continue;
            };
            pipe.cmd("SET")
                .arg(self.key("dedup", key))
                .arg("accepted")
                .arg("NX")
                .arg("PX")
                .arg(rest);
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        let mut connection = self.connection.clone();
        let set: Vec<Option<String>> = self.run(pipe.query_async(&mut connection)).await?;
        Ok(set.iter().filter(|s| s.is_some()).count())
    }

    async fn take_token(
        &self,
        bucket: BucketKey<'_>,
        limit: RateLimitSettings,
        at: DateTime<Utc>,
    ) -> Result<Result<(), RetryAfter>, StateError> {
        let key = match bucket {
            BucketKey::Client(id) => self.key("rate:key", id),
            BucketKey::Address(address) => self.key("rate:addr", address),
        };
        let refill_ms = f64::from(limit.burst) / limit.per_second * 1000.0;
        let ttl_ms = (refill_ms.ceil() as u64).clamp(1_000, MAX_BUCKET_TTL_MS);
        let mut connection = self.connection.clone();
        let (taken, wait_ms): (i64, i64) = self
            .run(
                self.take_token
                    .key(key)
                    .arg(at.timestamp_millis())
                    .arg(limit.burst)
                    .arg(limit.per_second)
                    .arg(ttl_ms)
                    .invoke_async(&mut connection),
            )
            .await?;
        Ok(if taken == 1 {
            Ok(())
        } else {
            Err(RetryAfter(Duration::from_millis(
                u64::try_from(wait_ms).unwrap_or(0),
            )))
        })
    }

    async fn acquire_lease(&self, name: &str, ttl: Duration) -> Result<Option<Lease>, StateError> {
        let holder = Holder::fresh();
        let mut connection = self.connection.clone();
        let fence: u64 = self
            .run(
                self.acquire
                    .key(self.key("lease", name))
                    .key(self.key("fence", name))
                    .arg(holder_text(holder))
                    .arg(ttl.as_millis().max(1) as u64)
                    .invoke_async(&mut connection),
            )
            .await?;
        Ok((fence > 0).then(|| Lease::new(name, fence, holder)))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StateError> {
        let mut connection = self.connection.clone();
        let extended: i64 = self
            .run(
                self.extend_if
                    .key(self.key("lease", &lease.name))
                    .arg(lease.token())
                    .arg(ttl.as_millis().max(1) as u64)
                    .invoke_async(&mut connection),
            )
            .await?;
        Ok(extended == 1)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StateError> {
        let mut connection = self.connection.clone();
        self.run(
            self.delete_if
                .key(self.key("lease", &lease.name))
                .arg(lease.token())
                .invoke_async::<i64>(&mut connection),
        )
        .await
        .map(drop)
    }

    /// The lease's fence counter outlives the lease: it exists once the name was leased.
    async fn was_leased(&self, name: &str) -> Result<bool, StateError> {
        let mut connection = self.connection.clone();
        self.run(connection.exists(self.key("fence", name))).await
    }

    async fn allocate_version(&self, day: NaiveDate, floor: u32) -> Result<u32, StateError> {
        let mut connection = self.connection.clone();
        let version: u64 = self
            .run(
                self.next_version
                    .key(self.key("version", day))
                    .arg(floor)
                    .arg(VERSION_TTL_SECS)
                    .invoke_async(&mut connection),
            )
            .await?;
        u32::try_from(version).map_err(unavailable)
    }
}
