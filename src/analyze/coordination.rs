//! How analysis jobs of several instances stay one: a day is analysed under a lease
//! (`analysis-day:<day>`) that its holder renews while it works; a schedule firing is
//! claimed once across the fleet (`schedule:<unix seconds>`), so two instances with the
//! schedule on queue one run. A holder that dies stops renewing; after `state.lease_ttl_ms`
//! another instance's resumer takes the lease and finishes the run.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};

use crate::state::{Lease, StateBackend, StateError};

/// How long a firing's claim is kept: longer than any schedule's clock skew.
const FIRING_CLAIM: Duration = Duration::from_secs(86_400);

/// How long a run stays marked as run under a lease (longer than any run).
pub const RUN_MARK: Duration = Duration::from_secs(2 * 86_400);

/// The lease that marks a run as started by an instance of this service under the
/// shared state, so its replicas may take it up at once when its day's lease is free.
pub fn run_marker(run_id: uuid::Uuid) -> String {
    format!("run:{run_id}")
}

/// Takes the lease of `day`; `None` when another holder works on it.
pub async fn claim_day(
    state: &dyn StateBackend,
    day: NaiveDate,
    ttl: Duration,
) -> Result<Option<Lease>, StateError> {
    state
        .acquire_lease(&format!("analysis-day:{day}"), ttl)
        .await
}

/// Whether this instance won the schedule's firing at `at` (every instance computes
/// the same instant from the same cron expression).
pub async fn claim_firing(state: &dyn StateBackend, at: DateTime<Utc>) -> Result<bool, StateError> {
    let name = format!("schedule:{}", at.timestamp());
    Ok(state.acquire_lease(&name, FIRING_CLAIM).await?.is_some())
}

/// Runs `work` while renewing `lease` every third of `ttl`, then releases the lease.
/// `None` when the lease was lost first: the work is dropped where it stood, and the
/// instance that holds the lease now owns the run.
pub async fn hold<T>(
    state: &dyn StateBackend,
    lease: &Lease,
    ttl: Duration,
    work: impl Future<Output = T>,
) -> Option<T> {
    let outcome = tokio::select! {
        outcome = work => Some(outcome),
        () = keep(state, lease, ttl) => None,
    };
    if let Err(err) = state.release_lease(lease).await {
        tracing::warn!(lease = %lease.name, error = %err, "cannot release a lease; it expires");
    }
    outcome
}

/// Returns when the lease is lost: another holder has it, or it could not be renewed
/// for a whole `ttl` (the state was unreachable, so it has expired).
async fn keep(state: &dyn StateBackend, lease: &Lease, ttl: Duration) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        match state.renew_lease(lease, ttl).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::warn!(lease = %lease.name, fence = lease.fence, "lease lost to another holder");
                return;
            }
            Err(err) if renewed.elapsed() >= ttl => {
                tracing::warn!(lease = %lease.name, error = %err, "lease expired unrenewed");
                return;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::memory::MemoryState;

    fn state() -> MemoryState {
        MemoryState::new(Duration::from_secs(600), 1, 16)
    }

    #[tokio::test]
    async fn a_held_day_is_not_claimed_twice_and_is_free_after_the_work() {
        let state = state();
        let day = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let ttl = Duration::from_millis(300);
        let lease = claim_day(&state, day, ttl).await.unwrap().unwrap();
        let work = async {
            // Longer than the ttl: only the renewals keep the lease.
            tokio::time::sleep(Duration::from_millis(700)).await;
            claim_day(&state, day, ttl).await.unwrap().is_none()
        };
        assert_eq!(hold(&state, &lease, ttl, work).await, Some(true));
        assert!(claim_day(&state, day, ttl).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn work_stops_when_its_lease_is_lost() {
        let state = state();
        let day = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let ttl = Duration::from_millis(300);
        let lease = claim_day(&state, day, ttl).await.unwrap().unwrap();
        state.release_lease(&lease).await.unwrap();
        let _thief = claim_day(&state, day, ttl).await.unwrap().unwrap();
        let work = std::future::pending::<()>();
        assert_eq!(hold(&state, &lease, ttl, work).await, None);
    }

    #[tokio::test]
    async fn a_firing_is_won_once() {
        let state = state();
        let at = Utc::now();
        assert!(claim_firing(&state, at).await.unwrap());
        assert!(!claim_firing(&state, at).await.unwrap());
    }
}
