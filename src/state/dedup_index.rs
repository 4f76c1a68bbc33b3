//! The in-process dedup index: fingerprints of leads in flight or accepted, each
//! blocking duplicates within the window around its event time.
//!
//! Memory is capped. Entries are 16-byte fingerprints with a timestamp in seconds and
//! a holder tag (25 bytes per hash-table slot, control byte included) in two generations; each generation holds
//! at most 7/8 of a fixed power-of-two slot count, so its table never grows past the
//! cap. When the current generation is full the previous one is forgotten whole: the
//! oldest entries go first, and a duplicate of a lead forgotten that way is accepted.
//! Expired entries are swept as the index goes, so the cap only bites when more
//! distinct leads arrive within one window than it holds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Claim, Fingerprint, Holder};

/// Bytes of one hash-table slot: key, value and hashbrown's control byte.
const SLOT_BYTES: usize = size_of::<(Fingerprint, Entry)>() + 1;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    /// Unix seconds (u32 lasts until 2106).
    at: u32,
    /// Low bits of the reservation's holder while in flight; 0 once accepted.
    holder: u32,
}

impl Entry {
    fn in_flight(&self) -> bool {
        self.holder != 0
    }
}

#[derive(Debug)]
pub struct DedupIndex {
    window_secs: i64,
    current: HashMap<Fingerprint, Entry>,
    previous: HashMap<Fingerprint, Entry>,
    generation_size: usize,
    inserts: usize,
    /// Expired entries are swept every this many insertions.
    sweep_every: usize,
    evicted: u64,
}

impl DedupIndex {
    /// An index whose two tables together stay within `max_bytes`.
    pub fn new(window: std::time::Duration, max_bytes: usize) -> Self {
        let generation_size = generation_size(max_bytes);
        Self {
            window_secs: i64::try_from(window.as_secs()).unwrap_or(i64::MAX),
            current: HashMap::new(),
            previous: HashMap::new(),
            generation_size,
            inserts: 0,
            sweep_every: 10_000.min(generation_size),
            evicted: 0,
        }
    }

    /// Entries the index holds at most.
    pub fn capacity(&self) -> usize {
        2 * self.generation_size
    }

    fn held(&self, key: &Fingerprint, at: u32) -> Option<Entry> {
        self.current
            .get(key)
            .or_else(|| self.previous.get(key))
            .filter(|entry| within(at, entry.at, self.window_secs))
            .copied()
    }

    pub fn reserve(&mut self, key: Fingerprint, holder: Holder, at: DateTime<Utc>) -> Claim {
        let at = seconds(at);
        if self.held(&key, at).is_some() {
            return Claim::Duplicate;
        }
        self.previous.remove(&key);
        self.insert(
            key,
            Entry {
                at,
                holder: holder_bits(holder),
            },
        );
        Claim::Reserved
    }

    pub fn confirm(&mut self, key: Fingerprint, holder: Holder) {
        let bits = holder_bits(holder);
        for table in [&mut self.current, &mut self.previous] {
            if let Some(entry) = table.get_mut(&key).filter(|e| e.holder == bits) {
                entry.holder = 0;
            }
        }
    }

    pub fn release(&mut self, key: Fingerprint, holder: Holder) {
        let bits = holder_bits(holder);
        for table in [&mut self.current, &mut self.previous] {
            if table
                .get(&key)
                .is_some_and(|e| e.in_flight() && e.holder == bits)
            {
                table.remove(&key);
            }
        }
    }

    /// Records a lead accepted before this process started.
    pub fn warm(&mut self, key: Fingerprint, at: DateTime<Utc>) -> bool {
        let at = seconds(at);
        let newer = self
            .current
            .get(&key)
            .or_else(|| self.previous.get(&key))
            .is_none_or(|e| e.at < at);
        if newer {
            self.previous.remove(&key);
            self.insert(key, Entry { at, holder: 0 });
        }
        newer
    }

    fn insert(&mut self, key: Fingerprint, entry: Entry) {
        self.inserts += 1;
        if self.inserts.is_multiple_of(self.sweep_every) {
            self.sweep(entry.at);
        }
        if self.current.len() >= self.generation_size && !self.current.contains_key(&key) {
            self.evicted += self.previous.len() as u64;
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, entry);
        // Deletions leave tombstones, and hashbrown may grow a table instead of
        // rehashing it in place: back to the cap's slot count (rare, O(n)).
        if self.current.capacity() > self.generation_size {
            self.current.shrink_to(self.generation_size);
        }
    }

    fn sweep(&mut self, now: u32) {
        let window = self.window_secs;
        for table in [&mut self.current, &mut self.previous] {
            table.retain(|_, entry| within(now, entry.at, window));
        }
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries forgotten at the cap before their window ended.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Bytes the two tables' slots take now.
    pub fn table_bytes(&self) -> usize {
        (slots(self.current.capacity()) + slots(self.previous.capacity())) * SLOT_BYTES
    }
}

fn holder_bits(holder: Holder) -> u32 {
    // Never 0: that marks an accepted entry.
    (holder.0 as u32).max(1)
}

fn seconds(at: DateTime<Utc>) -> u32 {
    u32::try_from(at.timestamp().max(0)).unwrap_or(u32::MAX)
}

fn within(a: u32, b: u32, window_secs: i64) -> bool {
    (i64::from(a) - i64::from(b)).abs() < window_secs
}

/// The slot count of a table with `capacity` usable entries (7/8 of its slots).
fn slots(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        (capacity * 8).div_ceil(7).next_power_of_two()
    }
}

/// Entries per generation such that two generations' tables fit `max_bytes`: hashbrown
/// keeps a power-of-two slot count filled to at most 7/8.
fn generation_size(max_bytes: usize) -> usize {
    let slots_per_table = (max_bytes / 2 / SLOT_BYTES).max(16);
    let slots = if slots_per_table.is_power_of_two() {
        slots_per_table
    } else {
        slots_per_table.next_power_of_two() / 2
    };
    slots / 8 * 7
}

/// Entries an index holds per MiB of cap (docs/scaling.md quotes it).
pub fn entries_per_mib() -> usize {
    2 * generation_size(1 << 20)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn key(n: u64) -> Fingerprint {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        Fingerprint(bytes)
    }

    fn index() -> DedupIndex {
        DedupIndex::new(Duration::from_secs(600), 1 << 20)
    }

    #[test]
    fn a_key_within_the_window_is_a_duplicate() {
        let mut dedup = index();
        let holder = Holder::fresh();
        assert_eq!(dedup.reserve(key(1), holder, t(0)), Claim::Reserved);
        dedup.confirm(key(1), holder);
        assert_eq!(
            dedup.reserve(key(1), Holder::fresh(), t(599)),
            Claim::Duplicate
        );
        assert_eq!(
            dedup.reserve(key(1), Holder::fresh(), t(600)),
            Claim::Reserved
        );
    }

    #[test]
    fn only_the_holder_releases_and_never_an_accepted_entry() {
        let mut dedup = index();
        let (first, other) = (Holder::fresh(), Holder::fresh());
        dedup.reserve(key(1), first, t(0));
        dedup.release(key(1), other);
        assert_eq!(dedup.reserve(key(1), other, t(1)), Claim::Duplicate);
        dedup.confirm(key(1), first);
        dedup.release(key(1), first);
        assert_eq!(dedup.reserve(key(1), other, t(1)), Claim::Duplicate);
    }

    #[test]
    fn a_released_reservation_lets_the_retry_through() {
        let mut dedup = index();
        let holder = Holder::fresh();
        dedup.reserve(key(1), holder, t(0));
        dedup.release(key(1), holder);
        assert_eq!(dedup.reserve(key(1), holder, t(5)), Claim::Reserved);
    }

    #[test]
    fn warmed_entries_block_duplicates() {
        let mut dedup = index();
        assert!(dedup.warm(key(1), t(0)));
        assert_eq!(
            dedup.reserve(key(1), Holder::fresh(), t(10)),
            Claim::Duplicate
        );
    }

    #[test]
    fn expired_entries_are_swept() {
        let mut dedup = index();
        dedup.sweep_every = 2;
        dedup.reserve(key(1), Holder::fresh(), t(0));
        dedup.reserve(key(2), Holder::fresh(), t(10_000));
        assert_eq!(dedup.len(), 1);
    }

    #[test]
    fn memory_stays_within_the_cap_and_the_oldest_entries_go_first() {
        let max_bytes = 1 << 20;
        let mut dedup = DedupIndex::new(Duration::from_secs(600), max_bytes);
        let capacity = dedup.capacity();
        assert_eq!(capacity, entries_per_mib());
        assert_eq!(capacity, 28_672, "the figure docs/configuration.md quotes");
        let total = 3 * capacity as u64;
        for n in 0..total {
            dedup.reserve(key(n), Holder::fresh(), t(0));
        }
        assert!(dedup.len() <= capacity, "{} entries", dedup.len());
        assert!(
            dedup.table_bytes() <= max_bytes,
            "{} bytes",
            dedup.table_bytes()
        );
        assert!(dedup.evicted() > 0);
        let newest = key(total - 1);
        assert_eq!(
            dedup.reserve(newest, Holder::fresh(), t(1)),
            Claim::Duplicate
        );
        assert_eq!(
            dedup.reserve(key(0), Holder::fresh(), t(1)),
            Claim::Reserved
        );
    }
}
