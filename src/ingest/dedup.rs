//! Duplicate detection: the same submitter (by hash) for the same source and page within
//! a window. A lead in flight holds a reservation, so an impatient double-click is a
//! duplicate even before the first one finished; a lead whose delivery failed releases
//! its reservation, so the submitter's retry is not mistaken for a duplicate. The
//! reservation is a guard: a request dropped mid-delivery (its client went away)
//! releases it too, so the client's retry is not answered as a duplicate of itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::SubmitterHash;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey {
    pub submitter: SubmitterHash,
    pub source: String,
    pub page: String,
}

impl DedupKey {
    /// The `Idempotency-Key` sent to the CRM: the same for every attempt of one lead
    /// (same submitter, source and page), so a client's retry after a timeout cannot
    /// create a second CRM lead. Built from the submitter's keyed hash: no personal data.
    pub fn idempotency_key(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        for part in [self.submitter.as_str(), &self.source, &self.page] {
            digest.update(part.len().to_le_bytes());
            digest.update(part.as_bytes());
        }
        hex::encode(&digest.finalize()[..16])
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Entry {
    InFlight(DateTime<Utc>),
    Accepted(DateTime<Utc>),
}

impl Entry {
    fn at(self) -> DateTime<Utc> {
        match self {
            Entry::InFlight(at) | Entry::Accepted(at) => at,
        }
    }
}

#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<DedupKey, Entry>,
    inserts: usize,
}

#[derive(Debug)]
pub struct DedupIndex {
    window: chrono::Duration,
    entries: Mutex<Entries>,
    /// Expired entries are swept every this many insertions, bounding memory to roughly
    /// one window of distinct submitters.
    sweep_every: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate;

impl DedupIndex {
    pub fn new(window: Duration) -> Self {
        Self {
            window: chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX),
            entries: Mutex::default(),
            sweep_every: 10_000,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `key` at `at` unless an accepted or in-flight lead holds it within the
    /// window. The reservation is released when dropped unless it was confirmed.
    pub fn reserve(&self, key: DedupKey, at: DateTime<Utc>) -> Result<Reservation<'_>, Duplicate> {
        self.claim(&key, at)?;
        Ok(Reservation {
            index: self,
            key,
            settled: false,
        })
    }

    fn claim(&self, key: &DedupKey, at: DateTime<Utc>) -> Result<(), Duplicate> {
        let mut entries = self.lock();
        let held = entries
            .by_key
            .get(key)
            .is_some_and(|existing| (at - existing.at()).abs() < self.window);
        if held {
            return Err(Duplicate);
        }
        entries.by_key.insert(key.clone(), Entry::InFlight(at));
        entries.inserts += 1;
        if entries.inserts.is_multiple_of(self.sweep_every) {
            let window = self.window;
            entries
                .by_key
                .retain(|_, entry| (at - entry.at()).abs() < window);
        }
        Ok(())
    }

    /// The reserved lead was accepted: it now blocks duplicates for the whole window.
    fn confirm(&self, key: &DedupKey) {
        if let Some(entry) = self.lock().by_key.get_mut(key) {
            *entry = Entry::Accepted(entry.at());
        }
    }

    /// The reserved lead was not accepted (delivery failed): the submitter may retry.
    fn release(&self, key: &DedupKey) {
        let mut entries = self.lock();
        if matches!(entries.by_key.get(key), Some(Entry::InFlight(_))) {
            entries.by_key.remove(key);
        }
    }

    /// Records leads accepted before this process started (read back from ClickHouse).
    pub fn warm(&self, accepted: impl IntoIterator<Item = (DedupKey, DateTime<Utc>)>) -> usize {
        let mut entries = self.lock();
        let before = entries.by_key.len();
        for (key, at) in accepted {
            let newer = entries.by_key.get(&key).is_none_or(|e| e.at() < at);
            if newer {
                entries.by_key.insert(key, Entry::Accepted(at));
            }
        }
        entries.by_key.len() - before
    }

    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A claim on a dedup key while its lead is in flight.
#[derive(Debug)]
pub struct Reservation<'a> {
    index: &'a DedupIndex,
    key: DedupKey,
    settled: bool,
}

impl Reservation<'_> {
    pub fn key(&self) -> &DedupKey {
        &self.key
    }

    /// The lead was accepted: the key now blocks duplicates for the whole window.
    pub fn confirm(mut self) {
        self.settled = true;
        self.index.confirm(&self.key);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.index.release(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;

    use super::*;
    use crate::domain::{Email, SubmitterHasher};

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

    fn index() -> DedupIndex {
        DedupIndex::new(Duration::from_secs(600))
    }

    #[test]
    fn the_same_submitter_source_and_page_within_the_window_is_a_duplicate() {
        let dedup = index();
        let k = key("ann@example.com", "/pricing");
        dedup.reserve(k.clone(), t(0)).unwrap().confirm();
        assert_eq!(dedup.reserve(k.clone(), t(599)).unwrap_err(), Duplicate);
        assert!(dedup.reserve(k, t(600)).is_ok(), "window elapsed");
    }

    #[test]
    fn another_page_or_submitter_is_not_a_duplicate() {
        let dedup = index();
        let _first = dedup
            .reserve(key("ann@example.com", "/pricing"), t(0))
            .unwrap();
        assert!(
            dedup
                .reserve(key("ann@example.com", "/checkout"), t(1))
                .is_ok()
        );
        assert!(
            dedup
                .reserve(key("bob@example.com", "/pricing"), t(1))
                .is_ok()
        );
    }

    #[test]
    fn an_in_flight_lead_blocks_a_double_click() {
        let dedup = index();
        let k = key("ann@example.com", "/pricing");
        let _in_flight = dedup.reserve(k.clone(), t(0)).unwrap();
        assert_eq!(dedup.reserve(k, t(0)).unwrap_err(), Duplicate);
    }

    #[test]
    fn a_released_reservation_lets_the_retry_through() {
        let dedup = index();
        let k = key("ann@example.com", "/pricing");
        drop(dedup.reserve(k.clone(), t(0)).unwrap());
        assert!(dedup.reserve(k, t(5)).is_ok());
    }

    #[test]
    fn a_reservation_dropped_with_its_request_is_released() {
        let dedup = index();
        let k = key("ann@example.com", "/pricing");
        let request = async {
            let _reservation = dedup.reserve(k.clone(), t(0)).unwrap();
            std::future::pending::<()>().await;
        };
        // The client goes away mid-delivery: the request future is dropped unfinished.
        let mut request = Box::pin(request);
        let waker = std::task::Waker::noop();
        let _ = request
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        assert_eq!(dedup.len(), 1);
        drop(request);
        assert!(
            dedup.reserve(k, t(1)).is_ok(),
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

    #[test]
    fn warmed_entries_block_duplicates_after_a_restart() {
        let dedup = index();
        let k = key("ann@example.com", "/pricing");
        assert_eq!(dedup.warm([(k.clone(), t(0))]), 1);
        assert_eq!(dedup.reserve(k, t(10)).unwrap_err(), Duplicate);
    }

    #[test]
    fn expired_entries_are_swept() {
        let mut dedup = index();
        dedup.sweep_every = 2;
        dedup
            .reserve(key("a@example.com", "/p"), t(0))
            .unwrap()
            .confirm();
        dedup
            .reserve(key("b@example.com", "/p"), t(10_000))
            .unwrap()
            .confirm();
        assert_eq!(dedup.len(), 1);
    }
}
