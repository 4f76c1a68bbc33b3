//! One submission attempt, start to end: parse → validate → authenticate → rate limit →
//! dedup → deliver. Whatever step ends the attempt, it ends the same way: one
//! `lead.submit` span with bounded attributes, one metric point, one verdict.

use std::time::{Instant, SystemTime};

use chrono::{DateTime, Utc};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::trace::SdkTracer;
use uuid::Uuid;

use super::auth::{Caller, Client, Credentials, SourceRegistry};
use super::body::{BodyError, RawBody};
use super::dedup::{DedupIndex, DedupKey};
use super::delivery::{Delivery, DeliveryOutcome, LeadDelivery};
use super::rate_limit::RateLimiter;
use crate::config::{FormSettings, UnknownFields};
use crate::domain::{
    ACCEPTED_STATUS, Field, LeadInput, Outcome, PagePath, Reason, Rejection, SourceName,
    SubmitterHash, SubmitterHasher,
};
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
    /// Seconds, for `Retry-After` on 429.
    pub retry_after: Option<u64>,
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
    pub(super) limiter: RateLimiter,
    pub(super) dedup: DedupIndex,
    /// `None` when no CRM is configured.
    pub(super) delivery: Option<Delivery>,
    pub(super) hasher: SubmitterHasher,
    pub(super) unknown_fields: UnknownFields,
    pub(super) batch_max_leads: usize,
    pub(super) service_name: String,
    pub(super) tracer: SdkTracer,
    pub(super) metrics: LeadMetrics,
}

/// What the request looked like before any step ran.
struct Attempt {
    endpoint: Endpoint,
    form_id: Option<String>,
    parent: Context,
    timer: Instant,
}

/// What is known about an attempt so far; becomes the span's attributes.
struct Record {
    attempt: Attempt,
    source: String,
    page: String,
    submitter: Option<SubmitterHash>,
    client_id: String,
    lead_id: Option<Uuid>,
    delivery_attempts: u32,
    event_start: SystemTime,
    /// A simulator key vouches for stated event times.
    trusted: bool,
    span: Option<Context>,
}

/// The end of an attempt, before it is recorded.
struct Ending {
    reason: Option<Reason>,
    field: Option<Field>,
    message: String,
    retry_after: Option<u64>,
}

impl Ending {
    fn accepted() -> Self {
        Self {
            reason: None,
            field: None,
            message: "lead accepted".into(),
            retry_after: None,
        }
    }

    fn rejected(reason: Reason, field: Option<Field>, message: impl Into<String>) -> Self {
        Self {
            reason: Some(reason),
            field,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<Rejection> for Ending {
    fn from(r: Rejection) -> Self {
        Ending::rejected(r.reason, r.field, r.message)
    }
}

impl Ingest {
    /// `POST /v1/leads`.
    pub async fn submit_lead(&self, creds: &Credentials<'_>, body: RawBody) -> Verdict {
        let caller = self.registry.identify(creds);
        let mut record = self.record(Endpoint::Leads, None, &caller);
        let lead = body
            .json()
            .and_then(|bytes| crate::domain::lead_from_json(&bytes, self.unknown_fields));
        let ending = self.decide(&mut record, lead, &caller).await;
        self.finish(record, ending)
    }

    /// `POST /v1/forms/{form_id}`.
    pub async fn submit_form(
        &self,
        form_id: &str,
        creds: &Credentials<'_>,
        body: RawBody,
    ) -> Verdict {
        let caller = self.registry.identify(creds);
        let Some(form) = self.forms.iter().find(|f| f.id == form_id) else {
            let record = self.record(Endpoint::Forms, Some("unknown".into()), &caller);
            let ending = Ending::rejected(
                Reason::UnknownForm,
                None,
                "no form with this id is configured",
            );
            return self.finish(record, ending);
        };
        let mut record = self.record(Endpoint::Forms, Some(form.id.clone()), &caller);
        let lead = body.form().and_then(|bytes| {
            let (source, page) = form_target(form)?;
            crate::domain::lead_from_form(&bytes, source, page, self.unknown_fields)
        });
        let ending = self.decide(&mut record, lead, &caller).await;
        self.finish(record, ending)
    }

    /// `POST /v1/leads/batch`: one verdict per lead, or one for the whole batch when the
    /// batch itself cannot be read.
    pub async fn submit_batch(
        &self,
        creds: &Credentials<'_>,
        body: RawBody,
    ) -> Result<Vec<Verdict>, Verdict> {
        let caller = self.registry.identify(creds);
        let parsed = body.json().and_then(|bytes| {
            crate::domain::batch_from_json(&bytes, self.batch_max_leads, self.unknown_fields)
        });
        let leads = match parsed {
            Ok(leads) => leads,
            Err(rejection) => {
                let mut record = self.record(Endpoint::Batch, None, &caller);
                self.note_context(&mut record, &rejection);
                return Err(self.finish(record, rejection.into()));
            }
        };
        let mut verdicts = Vec::with_capacity(leads.len());
        for lead in leads {
            let mut record = self.record(Endpoint::Batch, None, &caller);
            let ending = self.decide(&mut record, lead, &caller).await;
            verdicts.push(self.finish(record, ending));
        }
        Ok(verdicts)
    }

    /// A fresh record. Its event time is now, unless a trusted simulator states when the
    /// replayed event happened: then even a malformed attempt lands on its simulated day.
    fn record(&self, endpoint: Endpoint, form_id: Option<String>, caller: &Caller<'_>) -> Record {
        Record {
            attempt: Attempt {
                endpoint,
                form_id,
                parent: Context::current(),
                timer: Instant::now(),
            },
            source: String::new(),
            page: String::new(),
            submitter: None,
            client_id: String::new(),
            lead_id: None,
            delivery_attempts: 0,
            event_start: caller.stated.map_or_else(SystemTime::now, SystemTime::from),
            trusted: caller.trusted,
            span: None,
        }
    }

    /// Runs the steps after parsing; returns how the attempt ended.
    async fn decide(
        &self,
        record: &mut Record,
        lead: Result<LeadInput, Rejection>,
        caller: &Caller<'_>,
    ) -> Ending {
        let lead = match lead {
            Ok(lead) => lead,
            Err(rejection) => {
                self.note_context(record, &rejection);
                return rejection.into();
            }
        };
        record.source = self.source_attribute(lead.source.as_str());
        record.page = lead.page.as_str().to_owned();
        record.submitter = Some(self.hasher.hash(&lead.email));
        if let Err(ending) = self.validate_for_source(&lead) {
            return ending;
        }
        let client = match self.registry.authenticate(caller, lead.source.as_str()) {
            Ok(client) => client,
            Err(reason) => return Ending::rejected(reason, None, auth_message(reason)),
        };
        record.client_id = client.id.clone();
        let event_time = match event_time(&lead, record) {
            Ok(at) => at,
            Err(ending) => return ending,
        };
        record.event_start = event_time.into();
        if let Err(wait) = self.registry_limit(client, event_time) {
            let mut ending = Ending::rejected(
                Reason::RateLimited,
                None,
                "too many requests for this key; retry later",
            );
            ending.retry_after = Some(wait);
            return ending;
        }
        self.deduplicate_and_deliver(record, &lead, event_time)
            .await
    }

    fn registry_limit(&self, client: &Client, at: DateTime<Utc>) -> Result<(), u64> {
        self.limiter
            .check(&client.id, client.limit, at)
            .map_err(|wait| wait.header_secs())
    }

    async fn deduplicate_and_deliver(
        &self,
        record: &mut Record,
        lead: &LeadInput,
        at: DateTime<Utc>,
    ) -> Ending {
        let key = DedupKey {
            submitter: record.submitter.clone().expect("set before authentication"),
            source: lead.source.as_str().to_owned(),
            page: lead.page.as_str().to_owned(),
        };
        if self.dedup.reserve(&key, at).is_err() {
            return Ending::rejected(
                Reason::Duplicate,
                None,
                "the same lead was already submitted for this source and page",
            );
        }
        let lead_id = Uuid::now_v7();
        record.lead_id = Some(lead_id);
        let outcome = self.deliver(record, lead, lead_id, at).await;
        record.delivery_attempts = outcome.attempts();
        match outcome {
            DeliveryOutcome::NotConfigured | DeliveryOutcome::Delivered { .. } => {
                self.dedup.confirm(&key);
                Ending::accepted()
            }
            DeliveryOutcome::TimedOut { .. } => {
                self.dedup.release(&key);
                Ending::rejected(
                    Reason::DownstreamTimeout,
                    None,
                    "the downstream CRM did not answer in time",
                )
            }
            DeliveryOutcome::Failed { .. } => {
                self.dedup.release(&key);
                Ending::rejected(
                    Reason::DownstreamError,
                    None,
                    "the downstream CRM refused or failed",
                )
            }
        }
    }

    async fn deliver(
        &self,
        record: &mut Record,
        lead: &LeadInput,
        lead_id: Uuid,
        at: DateTime<Utc>,
    ) -> DeliveryOutcome {
        // With no CRM there is nothing to time or trace: a span per lead saying so would
        // be a third of the service's span volume for no information.
        let Some(delivery) = &self.delivery else {
            return DeliveryOutcome::NotConfigured;
        };
        let submit = record.open_span(&self.tracer).clone();
        let offset = record.attempt.timer.elapsed();
        let mut span = self
            .tracer
            .span_builder("lead.deliver")
            .with_kind(SpanKind::Client)
            .with_start_time(record.event_start + offset)
            .start_with_context(&self.tracer, &submit);
        // The span itself stays here to be ended; a context carrying its ids is enough
        // for the webhook's traceparent.
        let delivery_cx = submit.with_remote_span_context(span.span_context().clone());
        let payload = delivery_payload(lead, lead_id, record.attempt.form_id.as_deref(), at);
        let (outcome, took) = delivery.deliver(&payload, &delivery_cx).await;
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

    /// Keeps what a rejected lead still tells about where it came from.
    fn note_context(&self, record: &mut Record, rejection: &Rejection) {
        if let Some(page) = &rejection.page {
            record.page = page.as_str().to_owned();
        }
        if let Some(source) = &rejection.source {
            record.source = self.source_attribute(source.as_str());
        }
    }

    /// `lead.source` only ever takes a configured name: anything else is `unknown`.
    fn source_attribute(&self, name: &str) -> String {
        if self.registry.source(name).is_some() {
            name.to_owned()
        } else {
            "unknown".to_owned()
        }
    }

    /// Records the attempt (span, metrics, log) and turns it into the client's verdict.
    fn finish(&self, mut record: Record, ending: Ending) -> Verdict {
        let outcome = ending.reason.map_or(Outcome::Accepted, Reason::outcome);
        let elapsed = record.attempt.timer.elapsed();
        let cx = record.open_span(&self.tracer).clone();
        let span = cx.span();
        span.set_attributes(record.attributes(outcome, &ending));
        if outcome == Outcome::Failed {
            span.set_status(Status::error(ending.message.clone()));
        }
        span.end_with_timestamp(record.event_start + elapsed);
        let trace_id = span.span_context().trace_id().to_string();
        let reason = ending.reason.map_or("", Reason::as_str);
        self.metrics.record_submission(
            &record.source,
            record.attempt.endpoint.as_str(),
            outcome.as_str(),
            reason,
            elapsed,
        );
        log_attempt(&record, outcome, reason, &trace_id);
        Verdict {
            outcome,
            reason: ending.reason,
            field: ending.field,
            message: ending.message,
            lead_id: record.lead_id.filter(|_| outcome == Outcome::Accepted),
            trace_id,
            retry_after: ending.retry_after,
        }
    }
}

impl Record {
    /// Starts the `lead.submit` span once (at the event's time), returning its context.
    fn open_span(&mut self, tracer: &SdkTracer) -> &Context {
        let (parent, start) = (&self.attempt.parent, self.event_start);
        self.span.get_or_insert_with(|| {
            let span = tracer
                .span_builder("lead.submit")
                .with_kind(SpanKind::Internal)
                .with_start_time(start)
                .start_with_context(tracer, parent);
            parent.with_span(span)
        })
    }

    /// The attempt's attributes, leaving out the unknown ones (empty text, zero delivery
    /// attempts): the `lead_submissions` view reads a missing key as ''/0 anyway, and
    /// each span is smaller to build, export and store.
    fn attributes(&self, outcome: Outcome, ending: &Ending) -> Vec<KeyValue> {
        let status = ending.reason.map_or(ACCEPTED_STATUS, Reason::http_status);
        let all = [
            KeyValue::new("lead.source", self.source.clone()),
            KeyValue::new("lead.endpoint", self.attempt.endpoint.as_str()),
            KeyValue::new("lead.page", self.page.clone()),
            KeyValue::new(
                "lead.form_id",
                self.attempt.form_id.clone().unwrap_or_default(),
            ),
            KeyValue::new("lead.outcome", outcome.as_str()),
            KeyValue::new("lead.reason", ending.reason.map_or("", Reason::as_str)),
            KeyValue::new("lead.field", ending.field.map_or("", Field::as_str)),
            KeyValue::new(
                "lead.submitter_hash",
                self.submitter
                    .as_ref()
                    .map(|h| h.as_str().to_owned())
                    .unwrap_or_default(),
            ),
            KeyValue::new("lead.client_id", self.client_id.clone()),
            KeyValue::new(
                "lead.id",
                self.lead_id.map(|id| id.to_string()).unwrap_or_default(),
            ),
            KeyValue::new("http.response.status_code", i64::from(status)),
            KeyValue::new("lead.delivery.attempts", i64::from(self.delivery_attempts)),
        ];
        all.into_iter().filter(|kv| !is_unset(&kv.value)).collect()
    }
}

fn is_unset(value: &Value) -> bool {
    match value {
        Value::String(text) => text.as_str().is_empty(),
        Value::I64(number) => *number == 0,
        _ => false,
    }
}

/// The source and page a form posts for, from config (checked at startup).
fn form_target(form: &FormSettings) -> Result<(SourceName, PagePath), Rejection> {
    let internal = |what: &str| Rejection {
        reason: Reason::InvalidPayload,
        field: None,
        message: format!("form is misconfigured: {what}"),
        source: None,
        page: None,
    };
    let source = SourceName::parse(&form.source).map_err(|_| internal("source"))?;
    let page = PagePath::parse(&form.page).map_err(|_| internal("page"))?;
    Ok((source, page))
}

/// When the lead happened: the record's time, or — for a trusted simulator only — the
/// lead's own `submitted_at`.
fn event_time(lead: &LeadInput, record: &Record) -> Result<DateTime<Utc>, Ending> {
    let now = Utc::now();
    match lead.submitted_at {
        None => Ok(record.event_start.into()),
        Some(_) if !record.trusted => Err(Ending::rejected(
            Reason::InvalidField,
            Some(Field::SubmittedAt),
            "submitted_at may only be stated by simulator keys",
        )),
        Some(at) if at > now + chrono::Duration::minutes(5) => Err(Ending::rejected(
            Reason::InvalidField,
            Some(Field::SubmittedAt),
            "submitted_at is in the future",
        )),
        Some(at) => Ok(at),
    }
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

fn log_attempt(record: &Record, outcome: Outcome, reason: &str, trace_id: &str) {
    let endpoint = record.attempt.endpoint.as_str();
    let source = record.source.as_str();
    match outcome {
        Outcome::Failed => {
            tracing::warn!(endpoint, source, reason, trace_id, "lead submission failed")
        }
        _ => tracing::debug!(
            endpoint,
            source,
            outcome = outcome.as_str(),
            reason,
            trace_id,
            "lead submission"
        ),
    }
}

impl RawBody {
    fn json(self) -> Result<bytes::Bytes, Rejection> {
        self.checked("application/json")
    }

    fn form(self) -> Result<bytes::Bytes, Rejection> {
        self.checked("application/x-www-form-urlencoded")
    }

    /// The body, if it has the expected media type and fits the size limit.
    fn checked(self, expected: &str) -> Result<bytes::Bytes, Rejection> {
        let media_type = self
            .content_type
            .as_deref()
            .and_then(|ct| ct.split(';').next())
            .map(|ct| ct.trim().to_ascii_lowercase());
        if media_type.as_deref() != Some(expected) {
            return Err(bare_rejection(
                Reason::UnsupportedMediaType,
                format!("Content-Type must be {expected}"),
            ));
        }
        self.bytes.map_err(|error| match error {
            BodyError::TooLarge { limit } => bare_rejection(
                Reason::PayloadTooLarge,
                format!("the body is larger than {limit} bytes"),
            ),
            BodyError::Unreadable => {
                bare_rejection(Reason::InvalidPayload, "the body could not be read")
            }
        })
    }
}

fn bare_rejection(reason: Reason, message: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        field: None,
        message: message.into(),
        source: None,
        page: None,
    }
}
