//! Duplicate detection: the same submitter (by hash) for the same source and page within
//! a window. A lead in flight holds a reservation, so an impatient double-click is a
//! duplicate even before the first one finished; a lead whose delivery failed releases
//! its reservation, so the submitter's retry is not mistaken for a duplicate. The
//! reservation is a guard: a request dropped mid-delivery (its client went away)
//! releases it too, so the client's retry is not answered as a duplicate of itself.
//! Where the reservations live is the state backend's business (in-process or Redis).

use chrono::{DateTime, Utc};

use crate::domain::SubmitterHash;
use crate::state::{Claim, Fingerprint, Holder, StateBackend, StateError};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey {
    pub submitter: SubmitterHash,
    pub source: String,
    pub page: String,
}

impl DedupKey {
    /// 16 bytes of a hash of submitter, source and page: what the state holds.
    pub fn fingerprint(&self) -> Fingerprint {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        for part in [self.submitter.as_str(), &self.source, &self.page] {
            digest.update(part.len().to_le_bytes());
            digest.update(part.as_bytes());
        }
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest.finalize()[..16]);
        Fingerprint(bytes)
    }

    /// The `Idempotency-Key` sent to the CRM: the same for every attempt of one lead
    /// (same submitter, source and page), so a client's retry after a timeout cannot
    /// create a second CRM lead. Built from the submitter's keyed hash: no personal data.
    pub fn idempotency_key(&self) -> String {
        self.fingerprint().to_string()
    }
}

/// Why a lead could not be reserved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotReserved {
    #[error("a lead with the same key is in flight or was accepted within the window")]
    Duplicate,
    #[error(transparent)]
    Unavailable(#[from] StateError),
}

/// Claims `key` at `at` unless an accepted or in-flight lead holds it within the
/// window. The reservation is released when dropped unless it was confirmed.
pub async fn reserve<'a>(
    state: &'a dyn StateBackend,
    key: &DedupKey,
    at: DateTime<Utc>,
) -> Result<Reservation<'a>, NotReserved> {
    let fingerprint = key.fingerprint();
    let holder = Holder::fresh();
    match state.reserve(fingerprint, holder, at).await? {
        Claim::Duplicate => Err(NotReserved::Duplicate),
        Claim::Reserved => Ok(Reservation {
            state,
            fingerprint,
            holder,
            at,
            settled: false,
        }),
    }
}

/// A claim on a dedup key while its lead is in flight.
#[derive(Debug)]
pub struct Reservation<'a> {
    state: &'a dyn StateBackend,
    fingerprint: Fingerprint,
    holder: Holder,
    at: DateTime<Utc>,
    settled: bool,
}

impl Reservation<'_> {
    /// The lead was accepted: the key now blocks duplicates for the whole window. Should
    /// the state not answer, the reservation itself still blocks them until it expires
    /// with the window, so the lead stays accepted.
    pub async fn confirm(mut self) {
        self.settled = true;
        if let Err(err) = self
            .state
            .confirm(self.fingerprint, self.holder, self.at)
            .await
        {
            tracing::warn!(error = %err, "cannot confirm a dedup reservation; it holds until the window ends");
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.state.release(self.fingerprint, self.holder);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;
    use std::time::Duration;

    use super::*;
    use crate::domain::{Email, SubmitterHasher};
    use crate::state::memory::MemoryState;

    fn key(email: &str, page: &str) -> DedupKey {
        let hasher = SubmitterHasher::new("test-secret");
        DedupKey {
            submitter: hasher.hash(&Email::parse(email).unwrap()),
            source: "quiz".into(),
            page: page.into(),
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn state() -> MemoryState {
        MemoryState::new(Duration::from_secs(600), 1, 16)
    }

    #[tokio::test]
    async fn a_confirmed_lead_blocks_its_duplicates_for_the_window() {
        let state = state();
        let k = key("ann@example.com", "/pricing");
        reserve(&state, &k, t(0)).await.unwrap().confirm().await;
        let again = reserve(&state, &k, t(599)).await.unwrap_err();
        assert!(matches!(again, NotReserved::Duplicate));
        assert!(reserve(&state, &k, t(600)).await.is_ok(), "window elapsed");
        let other = key("ann@example.com", "/checkout");
        assert!(reserve(&state, &other, t(1)).await.is_ok());
    }

    #[tokio::test]
    async fn an_in_flight_lead_blocks_a_double_click_and_its_release_lets_the_retry_through() {
        let state = state();
        let k = key("ann@example.com", "/pricing");
        let in_flight = reserve(&state, &k, t(0)).await.unwrap();
        assert!(reserve(&state, &k, t(0)).await.is_err());
        drop(in_flight);
        assert!(reserve(&state, &k, t(5)).await.is_ok());
    }

    #[tokio::test]
    async fn a_reservation_dropped_with_its_request_is_released() {
        let state = state();
        let k = key("ann@example.com", "/pricing");
        let request = async {
            let _reservation = reserve(&state, &k, t(0)).await.unwrap();
            std::future::pending::<()>().await;
        };
        // The client goes away mid-delivery: the request future is dropped unfinished.
        let mut request = Box::pin(request);
        let waker = std::task::Waker::noop();
        let _ = request
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        assert_eq!(state.dedup_len(), 1);
        drop(request);
        assert!(
            reserve(&state, &k, t(1)).await.is_ok(),
            "the retry is not a duplicate"
        );
    }

    #[test]
    fn the_idempotency_key_is_the_same_for_the_same_lead_only() {
        let a = key("ann@example.com", "/pricing");
        assert_eq!(
            a.idempotency_key(),
            key("ann@example.com", "/pricing").idempotency_key()
        );
        assert_ne!(
            a.idempotency_key(),
            key("ann@example.com", "/demo").idempotency_key()
        );
        assert_ne!(
            a.idempotency_key(),
            key("bob@example.com", "/pricing").idempotency_key()
        );
        assert_eq!(a.idempotency_key().len(), 32);
        assert!(!a.idempotency_key().contains("ann"));
    }
}
