//! Where the state several replicas must share lives: dedup reservations, rate-limit
//! buckets, analysis leases and report versions.

use serde::{Deserialize, Serialize};

use super::Secret;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateSettings {
    /// `redis://[:password@]host:port[/db]`; empty keeps the state in this process.
    /// It may carry a password, so it is a [`Secret`].
    pub url: Secret,
    /// How long one state operation may take before it counts as unavailable.
    pub timeout_ms: u64,
    /// How long an analysis-day lease lives without a renewal (a crashed holder's run
    /// is resumed by another instance after this).
    pub lease_ttl_ms: u64,
    /// Memory cap of each in-process dedup index (live and replayed traffic).
    pub dedup_max_mb: u64,
}

impl Default for StateSettings {
    fn default() -> Self {
        Self {
            url: Secret::default(),
            timeout_ms: 250,
            lease_ttl_ms: 30_000,
            dedup_max_mb: 64,
        }
    }
}

impl StateSettings {
    /// The Redis URL, when the state is shared.
    pub fn shared_url(&self) -> Option<&str> {
        let url = self.url.expose().trim();
        (!url.is_empty()).then_some(url)
    }

    /// The bounds the service needs: a timeout and lease it can work with, a cap.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.timeout_ms == 0 {
            return Err(("state.timeout_ms", "0 ms leaves no time to answer".into()));
        }
        if self.lease_ttl_ms < 100 {
            return Err((
                "state.lease_ttl_ms",
                format!("{} ms is below 100 ms", self.lease_ttl_ms),
            ));
        }
        if self.dedup_max_mb == 0 {
            return Err(("state.dedup_max_mb", "0 MiB holds no entry".into()));
        }
        Ok(())
    }
}
