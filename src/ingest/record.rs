//! The record of one attempt: what is known about it so far, and how it ends — one
//! `lead.submit` span with bounded attributes, one metric point, one log line, one
//! verdict. A record that is dropped unfinished (the client went away and its request
//! future was dropped) still ends, as `client_closed`: no attempt leaves no trace.

use std::time::{Instant, SystemTime};

use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, Value};
use uuid::Uuid;

use super::pipeline::{Endpoint, Ingest, Verdict};
use crate::domain::{ACCEPTED_STATUS, Field, Outcome, Reason, Rejection, SubmitterHash};
use crate::telemetry::RECORD_SPAN;

/// Attributes of a `lead.submit` span (before the unset ones are left out).
const RECORD_ATTRIBUTES: usize = 13;

/// The end of an attempt, before it is recorded.
pub(super) struct Ending {
    pub reason: Option<Reason>,
    pub field: Option<Field>,
    pub message: String,
    pub retry_after: Option<u64>,
    /// The request body was not (fully) read: the connection must close after the answer.
    pub body_unread: bool,
}

impl Ending {
    pub fn accepted() -> Self {
        Self {
            reason: None,
            field: None,
            message: "lead accepted".into(),
            retry_after: None,
            body_unread: false,
        }
    }

    pub fn rejected(reason: Reason, field: Option<Field>, message: impl Into<String>) -> Self {
        Self {
            reason: Some(reason),
            field,
            message: message.into(),
            retry_after: None,
            body_unread: false,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn body_unread(mut self) -> Self {
        self.body_unread = true;
        self
    }
}

impl From<Rejection> for Ending {
    fn from(r: Rejection) -> Self {
        Ending::rejected(r.reason, r.field, r.message)
    }
}

/// What is known about an attempt so far; becomes the span's attributes.
pub(super) struct Record<'i> {
    ingest: &'i Ingest,
    pub endpoint: Endpoint,
    pub form_id: Option<String>,
    parent: Context,
    pub timer: Instant,
    pub source: String,
    pub page: String,
    pub submitter: Option<SubmitterHash>,
    pub client_id: String,
    pub lead_id: Option<Uuid>,
    pub delivery_attempts: u32,
    pub event_start: SystemTime,
    /// The event time was stated by a simulator key (replayed history).
    pub replayed: bool,
    span: Option<Context>,
    finished: bool,
}

impl<'i> Record<'i> {
    pub fn new(ingest: &'i Ingest, endpoint: Endpoint, form_id: Option<String>) -> Self {
        Self {
            ingest,
            endpoint,
            form_id,
            parent: Context::current(),
            timer: Instant::now(),
            source: String::new(),
            page: String::new(),
            submitter: None,
            client_id: String::new(),
            lead_id: None,
            delivery_attempts: 0,
            event_start: SystemTime::now(),
            replayed: false,
            span: None,
            finished: false,
        }
    }

    /// Starts the `lead.submit` span once (at the event's time), returning its context.
    pub fn open_span(&mut self) -> &Context {
        let (parent, start, tracer) = (&self.parent, self.event_start, &self.ingest.tracer);
        self.span.get_or_insert_with(|| {
            // Room for every attribute up front: they are set at the end, and growing
            // the span's vector then would reallocate it three times.
            let span = tracer
                .span_builder(RECORD_SPAN)
                .with_kind(SpanKind::Internal)
                .with_start_time(start)
                .with_attributes(Vec::with_capacity(RECORD_ATTRIBUTES))
                .start_with_context(tracer, parent);
            parent.with_span(span)
        })
    }

    /// Drops a record that turned out not to be an attempt of its own (a batch that was
    /// read: each of its leads has its own record).
    pub fn discard(mut self) {
        self.finished = true;
    }

    /// Records the attempt (span, metrics, log) and turns it into the client's verdict.
    pub fn finish(mut self, ending: Ending) -> Verdict {
        self.end(ending)
    }

    fn end(&mut self, ending: Ending) -> Verdict {
        self.finished = true;
        let outcome = ending.reason.map_or(Outcome::Accepted, Reason::outcome);
        let elapsed = self.timer.elapsed();
        let cx = self.open_span().clone();
        let span = cx.span();
        span.set_attributes(self.attributes(outcome, &ending));
        if outcome == Outcome::Failed {
            span.set_status(Status::error(ending.message.clone()));
        }
        span.end_with_timestamp(self.event_start + elapsed);
        let trace_id = span.span_context().trace_id().to_string();
        let reason = ending.reason.map_or("", Reason::as_str);
        self.ingest.metrics.record_submission(
            &self.source,
            self.endpoint.as_str(),
            outcome.as_str(),
            reason,
            self.replayed,
            elapsed,
        );
        self.log(&cx, outcome, reason, &trace_id);
        Verdict {
            outcome,
            reason: ending.reason,
            field: ending.field,
            message: ending.message,
            lead_id: self.lead_id.filter(|_| outcome == Outcome::Accepted),
            trace_id,
            retry_after: ending.retry_after,
            body_unread: ending.body_unread,
        }
    }

    /// The attempt's attributes, leaving out the unknown ones (empty text, zero delivery
    /// attempts): the `lead_submissions` view reads a missing key as ''/0 anyway, and
    /// each span is smaller to build, export and store.
    /// The record ends once, so the texts only it needs move into the span.
    fn attributes(&mut self, outcome: Outcome, ending: &Ending) -> Vec<KeyValue> {
        let status = ending.reason.map_or(ACCEPTED_STATUS, Reason::http_status);
        let all: [KeyValue; RECORD_ATTRIBUTES] = [
            KeyValue::new("lead.source", self.source.clone()),
            KeyValue::new("lead.endpoint", self.endpoint.as_str()),
            KeyValue::new("lead.page", std::mem::take(&mut self.page)),
            KeyValue::new("lead.form_id", self.form_id.take().unwrap_or_default()),
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
            KeyValue::new("lead.client_id", std::mem::take(&mut self.client_id)),
            KeyValue::new(
                "lead.id",
                self.lead_id.map(|id| id.to_string()).unwrap_or_default(),
            ),
            KeyValue::new("http.response.status_code", i64::from(status)),
            KeyValue::new("lead.delivery.attempts", i64::from(self.delivery_attempts)),
            KeyValue::new("lead.replayed", self.replayed),
        ];
        all.into_iter().filter(|kv| !is_unset(&kv.value)).collect()
    }

    /// One line per attempt in the attempt's own span, so its log record carries the
    /// `lead.submit` span id: rejected and failed ones at `log.attempt_level`, accepted
    /// ones at debug. Closed-set values and configured names only, never lead data.
    fn log(&self, cx: &Context, outcome: Outcome, reason: &str, trace_id: &str) {
        let level = match outcome {
            Outcome::Accepted => Some(tracing::Level::DEBUG),
            _ => self.ingest.attempt_level,
        };
        let Some(level) = level else { return };
        let _in_span = cx.clone().attach();
        let (endpoint, source, outcome) = (
            self.endpoint.as_str(),
            self.source.as_str(),
            outcome.as_str(),
        );
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    endpoint,
                    source,
                    outcome,
                    reason,
                    trace_id,
                    "lead attempt"
                )
            };
        }
        match level {
            tracing::Level::ERROR => line!(tracing::Level::ERROR),
            tracing::Level::WARN => line!(tracing::Level::WARN),
            tracing::Level::INFO => line!(tracing::Level::INFO),
            tracing::Level::DEBUG => line!(tracing::Level::DEBUG),
            _ => line!(tracing::Level::TRACE),
        }
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.end(Ending::rejected(
                Reason::ClientClosed,
                None,
                "the client closed the connection before the attempt ended",
            ));
        }
    }
}

fn is_unset(value: &Value) -> bool {
    match value {
        Value::String(text) => text.as_str().is_empty(),
        Value::I64(number) => *number == 0,
        Value::Bool(flag) => !flag,
        _ => false,
    }
}
