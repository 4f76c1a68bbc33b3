//! The one response shape of every submission, success or failure, and the status
//! codes it comes with.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::domain::{Field, Outcome, Reason};
use crate::ingest::Verdict;

/// How one submission attempt ended.
#[derive(Debug, Clone, Object)]
pub struct SubmissionReply {
    pub outcome: Outcome,
    /// Why it was not accepted (absent when accepted).
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<Reason>,
    /// The field at fault, for invalid_field.
    #[oai(skip_serializing_if_is_none)]
    pub field: Option<Field>,
    /// Plain words for a person; never echoes submitted values.
    pub message: String,
    /// Id of the accepted lead.
    #[oai(skip_serializing_if_is_none)]
    pub lead_id: Option<String>,
    /// W3C trace id of the attempt: find it in Grafana or ClickHouse.
    pub trace_id: String,
}

impl From<&Verdict> for SubmissionReply {
    fn from(v: &Verdict) -> Self {
        Self {
            outcome: v.outcome,
            reason: v.reason,
            field: v.field,
            message: v.message.clone(),
            lead_id: v.lead_id.map(|id| id.to_string()),
            trace_id: v.trace_id.clone(),
        }
    }
}

/// Per-lead results of a batch.
#[derive(Debug, Clone, Object)]
pub struct BatchReply {
    pub accepted: u32,
    pub rejected: u32,
    pub failed: u32,
    /// One result per lead, in request order.
    pub results: Vec<SubmissionReply>,
}

impl BatchReply {
    pub fn new(verdicts: &[Verdict]) -> Self {
        let count = |o: Outcome| verdicts.iter().filter(|v| v.outcome == o).count() as u32;
        Self {
            accepted: count(Outcome::Accepted),
            rejected: count(Outcome::Rejected),
            failed: count(Outcome::Failed),
            results: verdicts.iter().map(SubmissionReply::from).collect(),
        }
    }
}

/// Declares a response enum whose success variant differs but whose failures are the
/// same for every submission endpoint.
macro_rules! submission_response {
    ($name:ident, $status:literal, $ok_doc:literal, $ok:ty) => {
        #[derive(Debug, ApiResponse)]
        pub enum $name {
            #[doc = $ok_doc]
            #[oai(status = $status)]
            Ok(Json<$ok>),
            /// invalid_payload: not JSON / not a form, wrong shape, unknown field.
            #[oai(status = 400)]
            BadRequest(Json<SubmissionReply>),
            /// unauthorized: no or unknown API key.
            #[oai(status = 401)]
            Unauthorized(Json<SubmissionReply>),
            /// source_key_mismatch or source_disabled.
            #[oai(status = 403)]
            Forbidden(Json<SubmissionReply>),
            /// unknown_form.
            #[oai(status = 404)]
            NotFound(Json<SubmissionReply>),
            /// duplicate: same submitter, source and page within the dedup window.
            #[oai(status = 409)]
            Conflict(Json<SubmissionReply>),
            /// payload_too_large. The rest of the body is not read, so the connection
            /// is closed after this answer and says so: a client must not reuse it.
            #[oai(status = 413)]
            TooLarge(Json<SubmissionReply>, #[oai(header = "Connection")] String),
            /// unsupported_media_type.
            #[oai(status = 415)]
            UnsupportedMediaType(Json<SubmissionReply>),
            /// invalid_field: see `field`.
            #[oai(status = 422)]
            InvalidField(Json<SubmissionReply>),
            /// request_timeout: the body did not arrive within `http.body_read_timeout_ms`;
            /// the connection is closed after this answer.
            #[oai(status = 408)]
            RequestTimeout(Json<SubmissionReply>, #[oai(header = "Connection")] String),
            /// rate_limited: retry after the given seconds. A request without a valid key
            /// that is limited by its address is answered before its body is read, and
            /// then says `Connection: close`.
            #[oai(status = 429)]
            RateLimited(
                Json<SubmissionReply>,
                #[oai(header = "Retry-After")] u64,
                #[oai(header = "Connection")] Option<String>,
            ),
            /// client_closed: the client went away before the attempt ended. Recorded
            /// with this status (as nginx does); no client ever receives it.
            #[oai(status = 499)]
            ClientClosed(Json<SubmissionReply>),
            /// internal_error.
            #[oai(status = 500)]
            Internal(Json<SubmissionReply>),
            /// downstream_error: the CRM refused or failed.
            #[oai(status = 502)]
            DownstreamError(Json<SubmissionReply>),
            /// overloaded: the service is at its in-flight request limit (the body is
            /// not read and the connection is closed); state_unavailable: the shared
            /// state (Redis) did not answer, so nothing was delivered. Retry after the
            /// given seconds.
            #[oai(status = 503)]
            Overloaded(
                Json<SubmissionReply>,
                #[oai(header = "Retry-After")] u64,
                #[oai(header = "Connection")] Option<String>,
            ),
            /// downstream_timeout: the CRM did not answer in time.
            #[oai(status = 504)]
            DownstreamTimeout(Json<SubmissionReply>),
        }

        impl $name {
            /// The failure response for a verdict that did not succeed.
            pub fn failure(verdict: &Verdict) -> Self {
                let reply = Json(SubmissionReply::from(verdict));
                match verdict.reason {
                    Some(Reason::InvalidPayload) => Self::BadRequest(reply),
                    Some(Reason::Unauthorized) => Self::Unauthorized(reply),
                    Some(Reason::SourceKeyMismatch | Reason::SourceDisabled) => {
                        Self::Forbidden(reply)
                    }
                    Some(Reason::UnknownForm) => Self::NotFound(reply),
                    Some(Reason::Duplicate) => Self::Conflict(reply),
                    Some(Reason::PayloadTooLarge) => Self::TooLarge(reply, "close".to_owned()),
                    Some(Reason::UnsupportedMediaType) => Self::UnsupportedMediaType(reply),
                    Some(Reason::InvalidField) => Self::InvalidField(reply),
                    Some(Reason::RateLimited) => Self::RateLimited(
                        reply,
                        verdict.retry_after.unwrap_or(1),
                        verdict.body_unread.then(|| "close".to_owned()),
                    ),
                    Some(Reason::RequestTimeout) => Self::RequestTimeout(reply, "close".to_owned()),
                    Some(Reason::ClientClosed) => Self::ClientClosed(reply),
                    Some(Reason::Overloaded | Reason::StateUnavailable) => Self::Overloaded(
                        reply,
                        verdict.retry_after.unwrap_or(1),
                        verdict.body_unread.then(|| "close".to_owned()),
                    ),
                    Some(Reason::DownstreamError) => Self::DownstreamError(reply),
                    Some(Reason::DownstreamTimeout) => Self::DownstreamTimeout(reply),
                    Some(Reason::InternalError) | None => Self::Internal(reply),
                }
            }
        }
    };
}

submission_response!(
    SubmitResponse,
    201,
    "accepted: the lead was stored downstream.",
    SubmissionReply
);
submission_response!(
    BatchResponse,
    200,
    "the batch was read; each lead has its own result.",
    BatchReply
);

impl SubmitResponse {
    pub fn from_verdict(verdict: &Verdict) -> Self {
        match verdict.outcome {
            Outcome::Accepted => Self::Ok(Json(verdict.into())),
            _ => Self::failure(verdict),
        }
    }
}
