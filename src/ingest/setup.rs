//! Building the pipeline from settings, and warming its dedup index from ClickHouse so
//! duplicates are still caught after a restart.

use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry_sdk::trace::SdkTracer;

use super::auth::SourceRegistry;
use super::dedup::{DedupIndex, DedupKey};
use super::delivery::{Delivery, DeliveryInitError};
use super::pipeline::{Ingest, TrafficState};
use super::rate_limit::RateLimiter;
use crate::config::Settings;
use crate::domain::{SubmitterHash, SubmitterHasher};
use crate::telemetry::LeadMetrics;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Delivery(#[from] DeliveryInitError),
    #[error("cannot read accepted leads to warm the dedup index: {0}")]
    Warm(#[from] clickhouse::error::Error),
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct AcceptedLead {
    submitter_hash: String,
    source: String,
    page: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::nanos")]
    last_at: DateTime<Utc>,
}

impl Ingest {
    pub fn new(
        settings: &Settings,
        tracer: SdkTracer,
        metrics: LeadMetrics,
    ) -> Result<Self, IngestError> {
        let state = || TrafficState {
            limiter: RateLimiter::default(),
            dedup: DedupIndex::new(dedup_window(settings)),
        };
        Ok(Self {
            registry: SourceRegistry::new(&settings.sources, settings.rate_limit),
            forms: settings.forms.clone(),
            live: state(),
            replayed: state(),
            keyless: RateLimiter::with_capacity(settings.keyless.max_addresses),
            keyless_limit: settings.keyless.limit(),
            delivery: Delivery::new(&settings.delivery)?,
            hasher: SubmitterHasher::new(settings.ingest.submitter_secret.expose()),
            unknown_fields: settings.ingest.unknown_fields,
            batch_max_leads: settings.http.batch_max_leads,
            stated_history: chrono::Duration::days(i64::from(settings.schema.submissions_ttl_days)),
            service_name: settings.otel.service_name.clone(),
            tracer,
            metrics,
        })
    }

    /// Loads the live leads this service (all its replicas share the service name)
    /// accepted within the dedup window from `lead_submissions`; replayed history keeps
    /// its own dedup state and is not warmed.
    /// Returns how many dedup entries it added.
    pub async fn warm_dedup(
        &self,
        client: &clickhouse::Client,
        window: Duration,
    ) -> Result<usize, IngestError> {
        let accepted: Vec<AcceptedLead> = client
            .query(
                "SELECT submitter_hash, source, page, max(event_time) AS last_at \
                 FROM lead_submissions \
                 WHERE service = ? AND outcome = 'accepted' AND replayed = 0 \
                   AND event_time >= now64(9) - toIntervalSecond(?) \
                 GROUP BY submitter_hash, source, page",
            )
            .bind(&self.service_name)
            .bind(window.as_secs())
            .fetch_all()
            .await?;
        let entries = accepted.into_iter().filter_map(|row| {
            let key = DedupKey {
                submitter: SubmitterHash::from_stored(row.submitter_hash)?,
                source: row.source,
                page: row.page,
            };
            Some((key, row.last_at))
        });
        Ok(self.live.dedup.warm(entries))
    }
}

pub fn dedup_window(settings: &Settings) -> Duration {
    Duration::from_secs(settings.ingest.dedup_window_secs)
}
