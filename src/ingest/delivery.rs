//! Forwarding accepted leads downstream (the CRM webhook). Bounded: a per-attempt
//! timeout, a fixed number of attempts with doubling backoff, and retries only where a
//! retry can help (timeouts, connection errors, 5xx and 429).

use std::time::{Duration, Instant};

use opentelemetry::Context;
use serde::Serialize;

use crate::config::{DeliveryKind, DeliverySettings};

/// What the CRM receives. This is the one place a lead's contact data leaves the
/// service, and it goes to the destination the lead was meant for, never to telemetry.
#[derive(Serialize)]
pub struct LeadDelivery<'a> {
    pub lead_id: String,
    pub source: &'a str,
    pub page: &'a str,
    pub form_id: Option<&'a str>,
    pub name: &'a str,
    pub email: &'a str,
    pub phone: Option<&'a str>,
    pub company: Option<&'a str>,
    pub consent: bool,
    pub utm_source: Option<&'a str>,
    pub utm_medium: Option<&'a str>,
    pub utm_campaign: Option<&'a str>,
    pub submitted_at: String,
}

crate::debug_without_personal_data!(LeadDelivery<'a> {
    lead_id,
    source,
    page,
    form_id,
    consent,
    submitted_at
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The sink is `none`: nothing to deliver.
    NotConfigured,
    Delivered {
        attempts: u32,
    },
    /// Every attempt timed out (or the last one did).
    TimedOut {
        attempts: u32,
    },
    /// The CRM refused or failed and retries did not help.
    Failed {
        attempts: u32,
    },
}

impl DeliveryOutcome {
    pub fn attempts(self) -> u32 {
        match self {
            Self::NotConfigured => 0,
            Self::Delivered { attempts }
            | Self::TimedOut { attempts }
            | Self::Failed { attempts } => attempts,
        }
    }

    /// The `lead.delivery.outcome` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotConfigured => "none",
            Self::Delivered { .. } => "delivered",
            Self::TimedOut { .. } => "timeout",
            Self::Failed { .. } => "error",
        }
    }
}

enum AttemptError {
    Timeout,
    Retryable,
    Final,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    settings: DeliverySettings,
    http: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the delivery HTTP client: {0}")]
pub struct DeliveryInitError(#[from] reqwest::Error);

impl Delivery {
    /// The webhook delivery, or `None` for `kind = "none"` (accepted leads go nowhere).
    pub fn new(settings: &DeliverySettings) -> Result<Option<Self>, DeliveryInitError> {
        if settings.kind == DeliveryKind::None {
            return Ok(None);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.timeout_ms))
            .build()?;
        Ok(Some(Self {
            settings: settings.clone(),
            http,
        }))
    }

    /// Delivers `lead`, propagating `cx` (the delivery span) as `traceparent`; every
    /// attempt carries `idempotency_key`, so the CRM can drop repeats of one lead.
    pub async fn deliver(
        &self,
        lead: &LeadDelivery<'_>,
        idempotency_key: &str,
        cx: &Context,
    ) -> (DeliveryOutcome, Duration) {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(self.settings.retry_backoff_ms);
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let error = match self.attempt(lead, idempotency_key, cx).await {
                Ok(()) => break DeliveryOutcome::Delivered { attempts },
                Err(error) => error,
            };
            let last = attempts >= self.settings.max_attempts;
            match error {
                AttemptError::Final => break DeliveryOutcome::Failed { attempts },
                AttemptError::Timeout if last => break DeliveryOutcome::TimedOut { attempts },
                AttemptError::Retryable if last => break DeliveryOutcome::Failed { attempts },
                AttemptError::Timeout | AttemptError::Retryable => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        };
        (outcome, started.elapsed())
    }

    async fn attempt(
        &self,
        lead: &LeadDelivery<'_>,
        idempotency_key: &str,
        cx: &Context,
    ) -> Result<(), AttemptError> {
        let mut headers = reqwest::header::HeaderMap::new();
        crate::telemetry::inject_trace_context(cx, &mut headers);
        let response = self
            .http
            .post(&self.settings.url)
            .headers(headers)
            // Lets the CRM drop a retry of a lead it already stored.
            .header("Idempotency-Key", idempotency_key)
            .json(lead)
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                Err(AttemptError::Retryable)
            }
            Ok(_) => Err(AttemptError::Final),
            Err(e) if e.is_timeout() => Err(AttemptError::Timeout),
            Err(_) => Err(AttemptError::Retryable),
        }
    }
}
