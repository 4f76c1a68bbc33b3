//! One submission attempt, start to end: admit → read → parse → validate → authenticate
//! → rate limit → dedup → deliver. Whatever step ends the attempt, it ends the same way
//! (see [`super::record`]): one `lead.submit` span, one metric point, one verdict.

use std::net::{IpAddr, Ipv4Addr};

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry_sdk::trace::SdkTracer;
use uuid::Uuid;

use super::auth::{Caller, Client, Credentials, MalformedStatedTime, SourceRegistry};
use super::body::{BodyError, RawBody};
use super::dedup::{DedupKey, NotReserved};
use super::delivery::{Delivery, DeliveryOutcome, LeadDelivery};
use super::record::{Ending, Record};
use crate::config::{FormSettings, RateLimitSettings, UnknownFields};
use crate::domain::{
    ACCEPTED_STATUS, Field, LeadInput, Outcome, PagePath, Reason, Rejection, SourceName,
    SubmitterHasher,
};
use crate::state::rate_limit::address_key;
use crate::state::{BucketKey, RetryAfter, SharedState, StateBackend};
use crate::telemetry::LeadMetrics;

/// The closed set of `lead.endpoint` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Leads,
    Forms,
    Batch,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Leads => "leads",
            Endpoint::Forms => "forms",
            Endpoint::Batch => "batch",
        }
    }
}

/// How one attempt ended, as the client is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub reason: Option<Reason>,
    pub field: Option<Field>,
    pub message: String,
    pub lead_id: Option<Uuid>,
    pub trace_id: String,
    /// Seconds, for `Retry-After` on 429 and 503.
    pub retry_after: Option<u64>,
    /// The body was not (fully) read: the answer must say `Connection: close`.
    pub body_unread: bool,
}

impl Verdict {
    pub fn status(&self) -> u16 {
        self.reason.map_or(ACCEPTED_STATUS, Reason::http_status)
    }
}

/// Everything the pipeline needs, built once at startup.
pub struct Ingest {
    pub(super) registry: SourceRegistry,
    pub(super) forms: Vec<FormSettings>,
    /// Rate-limit and dedup state of live traffic (also of keyless addresses): shared
    /// by the replicas when `state.url` is set.
    pub(super) live: SharedState,
    /// The same for replayed history (stated event times), always in this process: its
    /// windows run on simulated time, not the clock Redis expires keys by, and a
    /// backfill can never throttle or dedupe a live lead, nor the other way round.
    pub(super) replayed: SharedState,
    pub(super) keyless_limit: RateLimitSettings,
    /// `None` when no CRM is configured.
    pub(super) delivery: Option<Delivery>,
    pub(super) hasher: SubmitterHasher,
    pub(super) unknown_fields: UnknownFields,
    pub(super) batch_max_leads: usize,
    /// How far back a stated event time may lie: the retention of `lead_submissions`.
    pub(super) stated_history: chrono::Duration,
    pub(super) service_name: String,
    pub(super) tracer: SdkTracer,
    pub(super) metrics: LeadMetrics,
    /// `log.attempt_level`; `None` is off.
    pub(super) attempt_level: Option<tracing::Level>,
}

/// A stated event time may lie at most this far in the future (clock skew).
const STATED_FUTURE_SLACK_MINUTES: i64 = 5;

impl Ingest {
    /// `POST /v1/leads`.
    pub async fn submit_lead(
        &self,
        creds: &Credentials<'_>,
        peer: Option<IpAddr>,
        body: RawBody,
    ) -> Verdict {
        let caller = self.registry.identify(creds);
        let mut record = self.record(Endpoint::Leads, None, &caller);
        if let Err(ending) = self.admit(&mut record, &caller, peer).await {
            return record.finish(ending);
        }
        let lead = match read(body, "application/json").await {
            Ok(bytes) => crate::domain::lead_from_json(&bytes, self.unknown_fields)
                .map_err(|rejection| self.noted(&mut record, &caller, rejection)),
            Err(ending) => Err(ending),
        };
        let ending = self.decide(&mut record, lead, &caller).await;
        record.finish(ending)
    }

    /// `POST /v1/forms/{form_id}`: source and page come from the form's configuration,
    /// so even an attempt refused before its body is read names them.
    pub async fn submit_form(
        &self,
        form_id: &str,
        creds: &Credentials<'_>,
        peer: Option<IpAddr>,
        body: RawBody,
    ) -> Verdict {
        let caller = self.registry.identify(creds);
        let Some(form) = self.forms.iter().find(|f| f.id == form_id) else {
            let mut record = self.record(Endpoint::Forms, Some("unknown".into()), &caller);
            if let Err(ending) = self.admit(&mut record, &caller, peer).await {
                return record.finish(ending);
            }
            let ending = Ending::rejected(
                Reason::UnknownForm,
                None,
                "no form with this id is configured",
            );
            return record.finish(ending);
        };
        let mut record = self.record(Endpoint::Forms, Some(form.id.clone()), &caller);
        record.source = form.source.clone();
        record.page = form.page.clone();
        if let Err(ending) = self.admit(&mut record, &caller, peer).await {
            return record.finish(ending);
        }
        let lead = read(body, "application/x-www-form-urlencoded")
            .await
            .and_then(|bytes| {
                let (source, page) = form_target(form)?;
                crate::domain::lead_from_form(&bytes, source, page, self.unknown_fields)
                    .map_err(Ending::from)
            });
        let ending = self.decide(&mut record, lead, &caller).await;
        record.finish(ending)
    }

    /// `POST /v1/leads/batch`: one verdict per lead, or one for the whole batch when the
    /// batch itself cannot be read or carries no valid key (a keyless batch is one
    /// attempt, not one per lead it claims to hold).
    pub async fn submit_batch(
        &self,
        creds: &Credentials<'_>,
        peer: Option<IpAddr>,
        body: RawBody,
    ) -> Result<Vec<Verdict>, Verdict> {
        let caller = self.registry.identify(creds);
        let mut record = self.record(Endpoint::Batch, None, &caller);
        if let Err(ending) = self.admit(&mut record, &caller, peer).await {
            return Err(record.finish(ending));
        }
        let bytes = read(body, "application/json").await;
        if !caller.has_valid_key() {
            let reason = Reason::Unauthorized;
            return Err(record.finish(Ending::rejected(reason, None, auth_message(reason))));
        }
        let parsed = match bytes {
            Ok(bytes) => {
                crate::domain::batch_from_json(&bytes, self.batch_max_leads, self.unknown_fields)
                    .map_err(|rejection| self.noted(&mut record, &caller, rejection))
            }
            Err(ending) => Err(ending),
        };
        let leads = match parsed {
            Ok(leads) => leads,
            Err(ending) => return Err(record.finish(ending)),
        };
        // The batch's own record was only needed while the batch could still fail whole.
        record.discard();
        let mut verdicts = Vec::with_capacity(leads.len());
        for lead in leads {
            let mut record = self.record(Endpoint::Batch, None, &caller);
            if let Err(ending) = self.apply_stated_time(&mut record, &caller) {
                verdicts.push(record.finish(ending));
                continue;
            }
            let lead = lead.map_err(|rejection| self.noted(&mut record, &caller, rejection));
            let ending = self.decide(&mut record, lead, &caller).await;
            verdicts.push(record.finish(ending));
        }
        Ok(verdicts)
    }

    /// A fresh record, attributed to the source the request's key speaks for until the
    /// body names one.
    fn record(
        &self,
        endpoint: Endpoint,
        form_id: Option<String>,
        caller: &Caller<'_>,
    ) -> Record<'_> {
        let mut record = Record::new(self, endpoint, form_id);
        if let Some(source) = caller.key_source() {
            record.source = source.to_owned();
        }
        record
    }

    /// What is decided before the body is read: requests without a valid key are
    /// limited by address (nothing of theirs is read or parsed past the limit), and a
    /// stated event time must be well-formed, vouched for and within bounds.
    async fn admit(
        &self,
        record: &mut Record<'_>,
        caller: &Caller<'_>,
        peer: Option<IpAddr>,
    ) -> Result<(), Ending> {
        if !caller.has_valid_key() {
            let address = address_key(peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
            let bucket = BucketKey::Address(address);
            let limited = self
                .limited(self.live.as_ref(), bucket, self.keyless_limit, Utc::now())
                .await;
            if let Some(wait) = limited {
                return Err(Ending::rejected(
                    Reason::RateLimited,
                    None,
                    "too many requests without a valid API key from this address; retry later",
                )
                .retry_after(wait.header_secs())
                .body_unread());
            }
        }
        self.apply_stated_time(record, caller)
    }

    /// Moves the record to the time `X-Submitted-At` states, when its simulator key
    /// vouches for the record's source.
    fn apply_stated_time(
        &self,
        record: &mut Record<'_>,
        caller: &Caller<'_>,
    ) -> Result<(), Ending> {
        let stated = caller.stated.map_err(|MalformedStatedTime| {
            Ending::rejected(
                Reason::InvalidField,
                Some(Field::SubmittedAt),
                "X-Submitted-At must be an RFC 3339 date-time, e.g. 2024-05-01T12:00:00Z",
            )
        })?;
        let source = (!record.source.is_empty()).then_some(record.source.as_str());
        if let Some(at) = self.vouched_time(caller, source, stated)? {
            record.event_start = at.into();
            record.replayed = true;
        }
        Ok(())
    }

    /// A stated time (`stated`) as the event time, if a simulator key of the request
    /// vouches for `source` and the time lies between the submissions' retention and a
    /// few minutes ahead.
    fn vouched_time(
        &self,
        caller: &Caller<'_>,
        source: Option<&str>,
        stated: Option<DateTime<Utc>>,
    ) -> Result<Option<DateTime<Utc>>, Ending> {
        let Some(at) = stated else {
            return Ok(None);
        };
        let refuse = |message: String| {
            Ending::rejected(Reason::InvalidField, Some(Field::SubmittedAt), message)
        };
        let vouched = match source {
            Some(source) => caller.vouches_for(source),
            None => caller.key_source().is_some_and(|s| caller.vouches_for(s)),
        };
        if !vouched {
            return Err(refuse(match source {
                Some(source) if caller.key_source().is_some() => {
                    format!("no simulator key of this request vouches for source {source}")
                }
                _ => "submitted_at may only be stated by simulator keys".to_owned(),
            }));
        }
        let now = Utc::now();
        if at > now + chrono::Duration::minutes(STATED_FUTURE_SLACK_MINUTES) {
            return Err(refuse("submitted_at is in the future".into()));
        }
        if at < now - self.stated_history {
            return Err(refuse(format!(
                "submitted_at is older than the {} days submissions are kept",
                self.stated_history.num_days()
            )));
        }
        Ok(Some(at))
    }

    /// Runs the steps after parsing; returns how the attempt ended.
    async fn decide(
        &self,
        record: &mut Record<'_>,
        lead: Result<LeadInput, Ending>,
        caller: &Caller<'_>,
    ) -> Ending {
        let lead = match lead {
            Ok(lead) => lead,
            Err(ending) => return ending,
        };
        record.source = self.source_attribute(lead.source.as_str());
        // Keyless requests are recorded with what the service decided, never with
        // request text an attacker could spray.
        if caller.has_valid_key() {
            record.page = lead.page.as_str().to_owned();
        }
        record.submitter = Some(self.hasher.hash(&lead.email));
        if let Err(ending) = self.validate_for_source(&lead) {
            return ending;
        }
        let client = match self.registry.authenticate(caller, lead.source.as_str()) {
            Ok(client) => client,
            Err(reason) => return Ending::rejected(reason, None, auth_message(reason)),
        };
        record.client_id = client.id.clone();
        let stated = lead.submitted_at.or(caller.stated.ok().flatten());
        match self.vouched_time(caller, Some(lead.source.as_str()), stated) {
            Ok(Some(at)) => {
                record.event_start = at.into();
                record.replayed = true;
            }
            Ok(None) => record.replayed = false,
            Err(ending) => return ending,
        }
        let state = if record.replayed {
            &self.replayed
        } else {
            &self.live
        };
        let at: DateTime<Utc> = record.event_start.into();
        let bucket = BucketKey::Client(&client.id);
        if let Some(wait) = self.limited(state.as_ref(), bucket, client.limit, at).await {
            return Ending::rejected(
                Reason::RateLimited,
                None,
                "too many requests for this key; retry later",
            )
            .retry_after(wait.header_secs());
        }
        self.deduplicate_and_deliver(record, state, client, &lead, at)
            .await
    }

    async fn deduplicate_and_deliver(
        &self,
        record: &mut Record<'_>,
        state: &SharedState,
        client: &Client,
        lead: &LeadInput,
        at: DateTime<Utc>,
    ) -> Ending {
        let key = DedupKey {
            submitter: record.submitter.clone().expect("set before authentication"),
            source: client.source.clone(),
            page: lead.page.as_str().to_owned(),
        };
        let reservation = match super::dedup::reserve(state.as_ref(), &key, at).await {
            Ok(reservation) => reservation,
            Err(NotReserved::Duplicate) => {
                return Ending::rejected(
                    Reason::Duplicate,
                    None,
                    "the same lead was already submitted for this source and page",
                );
            }
            // Fail closed: without the shared index a duplicate cannot be ruled out,
            // and accepting it would hand the CRM the same lead twice.
            Err(NotReserved::Unavailable(err)) => {
                tracing::warn!(error = %err, "dedup state unavailable; lead refused");
                self.metrics.record_state_unavailable("dedup");
                return Ending::rejected(
                    Reason::StateUnavailable,
                    None,
                    "duplicate detection is unavailable; nothing was delivered, retry later",
                )
                .retry_after(1);
            }
        };
        let lead_id = Uuid::now_v7();
        record.lead_id = Some(lead_id);
        let idempotency_key = key.idempotency_key();
        let outcome = self
            .deliver(record, lead, lead_id, &idempotency_key, at)
            .await;
        record.delivery_attempts = outcome.attempts();
        // A reservation not confirmed is released when it goes out of scope, also when
        // this future is dropped mid-delivery.
        match outcome {
            DeliveryOutcome::NotConfigured | DeliveryOutcome::Delivered { .. } => {
                reservation.confirm().await;
                Ending::accepted()
            }
            DeliveryOutcome::TimedOut { .. } => Ending::rejected(
                Reason::DownstreamTimeout,
                None,
                "the downstream CRM did not answer in time",
            ),
            DeliveryOutcome::Failed { .. } => Ending::rejected(
                Reason::DownstreamError,
                None,
                "the downstream CRM refused or failed",
            ),
        }
    }

    /// When `bucket` has no token left, how long to wait. Rate limits fail open: a
    /// state that does not answer lets the request through, counted.
    async fn limited(
        &self,
        state: &dyn StateBackend,
        bucket: BucketKey<'_>,
        limit: RateLimitSettings,
        at: DateTime<Utc>,
    ) -> Option<RetryAfter> {
        match state.take_token(bucket, limit, at).await {
            Ok(taken) => taken.err(),
            Err(err) => {
                tracing::warn!(error = %err, "rate-limit state unavailable; request let through");
                self.metrics.record_state_unavailable("rate_limit");
                None
            }
        }
    }

    async fn deliver(
        &self,
        record: &mut Record<'_>,
        lead: &LeadInput,
        lead_id: Uuid,
        idempotency_key: &str,
        at: DateTime<Utc>,
    ) -> DeliveryOutcome {
        // With no CRM there is nothing to time or trace: a span per lead saying so would
        // be a third of the service's span volume for no information.
        let Some(delivery) = &self.delivery else {
            return DeliveryOutcome::NotConfigured;
        };
        let submit = record.open_span().clone();
        let offset = record.timer.elapsed();
        let mut span = self
            .tracer
            .span_builder("lead.deliver")
            .with_kind(SpanKind::Client)
            .with_start_time(record.event_start + offset)
            .start_with_context(&self.tracer, &submit);
        // The span itself stays here to be ended; a context carrying its ids is enough
        // for the webhook's traceparent.
        let delivery_cx = submit.with_remote_span_context(span.span_context().clone());
        let payload = delivery_payload(lead, lead_id, record.form_id.as_deref(), at);
        let (outcome, took) = delivery
            .deliver(&payload, idempotency_key, &delivery_cx)
            .await;
        span.set_attribute(KeyValue::new("lead.delivery.outcome", outcome.as_str()));
        span.set_attribute(KeyValue::new(
            "lead.delivery.attempts",
            i64::from(outcome.attempts()),
        ));
        if matches!(
            outcome,
            DeliveryOutcome::TimedOut { .. } | DeliveryOutcome::Failed { .. }
        ) {
            span.set_status(Status::error(outcome.as_str()));
        }
        span.end_with_timestamp(record.event_start + offset + took);
        self.metrics
            .record_delivery(&record.source, outcome.as_str(), took);
        outcome
    }

    /// Records an attempt the server shed before it reached the pipeline (it was at its
    /// in-flight limit): attributed to what the URL and the key already say.
    pub fn shed(
        &self,
        endpoint: Endpoint,
        form_id: Option<&str>,
        creds: &Credentials<'_>,
        retry_after_secs: u64,
    ) -> Verdict {
        let caller = self.registry.identify(creds);
        let form = form_id.and_then(|id| self.forms.iter().find(|f| f.id == id));
        let recorded_form = form_id.map(|_| form.map_or("unknown".to_owned(), |f| f.id.clone()));
        let mut record = self.record(endpoint, recorded_form, &caller);
        if let Some(form) = form {
            record.source = form.source.clone();
            record.page = form.page.clone();
        }
        let ending = Ending::rejected(
            Reason::Overloaded,
            None,
            "the service is at its limit of requests in flight; retry later",
        )
        .retry_after(retry_after_secs)
        .body_unread();
        record.finish(ending)
    }

    /// Checks that depend on the source's configuration (part of validation).
    fn validate_for_source(&self, lead: &LeadInput) -> Result<(), Ending> {
        let Some(source) = self.registry.source(lead.source.as_str()) else {
            return Err(Ending::rejected(
                Reason::InvalidField,
                Some(Field::Source),
                "source is not a configured lead source",
            ));
        };
        if source.require_consent && !lead.consent {
            return Err(Ending::rejected(
                Reason::InvalidField,
                Some(Field::Consent),
                "this source requires consent: true",
            ));
        }
        Ok(())
    }

    /// Keeps what a rejected body still tells about where it came from (the page only
    /// from a request with a valid key), and ends the attempt with the rejection.
    fn noted(&self, record: &mut Record<'_>, caller: &Caller<'_>, rejection: Rejection) -> Ending {
        if let Some(source) = &rejection.source {
            record.source = self.source_attribute(source.as_str());
        }
        if let Some(page) = rejection.page.as_ref().filter(|_| caller.has_valid_key()) {
            record.page = page.as_str().to_owned();
        }
        rejection.into()
    }

    /// `lead.source` only ever takes a configured name: anything else is `unknown`.
    fn source_attribute(&self, name: &str) -> String {
        if self.registry.source(name).is_some() {
            name.to_owned()
        } else {
            "unknown".to_owned()
        }
    }
}

/// The body, if it has the expected media type and arrived whole within the limits.
async fn read(body: RawBody, expected: &str) -> Result<bytes::Bytes, Ending> {
    let media_type = body
        .content_type
        .as_deref()
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase());
    let bytes = body.bytes().await;
    if media_type.as_deref() != Some(expected) {
        return Err(Ending::rejected(
            Reason::UnsupportedMediaType,
            None,
            format!("Content-Type must be {expected}"),
        ));
    }
    bytes.map_err(|error| match error {
        BodyError::TooLarge { limit } => Ending::rejected(
            Reason::PayloadTooLarge,
            None,
            format!("the body is larger than {limit} bytes"),
        )
        .body_unread(),
        BodyError::TimedOut => Ending::rejected(
            Reason::RequestTimeout,
            None,
            "the body did not arrive in time",
        )
        .body_unread(),
        BodyError::Unreadable => {
            Ending::rejected(Reason::InvalidPayload, None, "the body could not be read")
        }
    })
}

/// The source and page a form posts for, from config (checked at startup).
fn form_target(form: &FormSettings) -> Result<(SourceName, PagePath), Ending> {
    let internal = |what: &str| {
        Ending::rejected(
            Reason::InvalidPayload,
            None,
            format!("form is misconfigured: {what}"),
        )
    };
    let source = SourceName::parse(&form.source).map_err(|_| internal("source"))?;
    let page = PagePath::parse(&form.page).map_err(|_| internal("page"))?;
    Ok((source, page))
}

fn auth_message(reason: Reason) -> &'static str {
    match reason {
        Reason::SourceKeyMismatch => "the API key belongs to another source",
        Reason::SourceDisabled => "this source is disabled",
        _ => "a valid API key is required (Authorization: Bearer KEY or X-Api-Key)",
    }
}

fn delivery_payload<'a>(
    lead: &'a LeadInput,
    lead_id: Uuid,
    form_id: Option<&'a str>,
    at: DateTime<Utc>,
) -> LeadDelivery<'a> {
    let utm = lead.utm.as_ref();
    LeadDelivery {
        lead_id: lead_id.to_string(),
        source: lead.source.as_str(),
        page: lead.page.as_str(),
        form_id,
        name: lead.name.as_str(),
        email: lead.email.as_str(),
        phone: lead.phone.as_ref().map(|p| p.as_str()),
        company: lead.company.as_ref().map(|c| c.as_str()),
        consent: lead.consent,
        utm_source: utm.and_then(|u| u.source.as_ref()).map(|v| v.as_str()),
        utm_medium: utm.and_then(|u| u.medium.as_ref()).map(|v| v.as_str()),
        utm_campaign: utm.and_then(|u| u.campaign.as_ref()).map(|v| v.as_str()),
        submitted_at: at.to_rfc3339(),
    }
}
