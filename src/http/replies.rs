//! The one response shape of every submission, success or failure, and the status
//! codes it comes with.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaHeader, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object, ResponseContent};

use crate::domain::{ACCEPTED_STATUS, Field, Outcome, Reason};
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

/// The body of a successful answer, with the status and words the spec gives it.
pub trait Success: ToJSON + Type + Send {
    const STATUS: u16;
    const DESCRIPTION: &'static str;
}

impl Success for SubmissionReply {
    const STATUS: u16 = ACCEPTED_STATUS;
    const DESCRIPTION: &'static str = "accepted: the lead was stored downstream.";
}

impl Success for BatchReply {
    const STATUS: u16 = 200;
    const DESCRIPTION: &'static str = "the batch was read; each lead has its own result.";
}

/// The answer of a submission endpoint. A refusal's status is its reason's
/// [`Reason::http_status`], and the spec lists every status some reason has, described
/// by the reasons' own docs: adding a reason changes the API's answers and its spec here
/// without touching this file.
#[derive(Debug)]
pub enum SubmissionResponse<T> {
    Succeeded(T),
    Refused(Refusal),
}

pub type SubmitResponse = SubmissionResponse<SubmissionReply>;
pub type BatchResponse = SubmissionResponse<BatchReply>;

/// A verdict that did not succeed, with the headers its answer carries.
#[derive(Debug)]
pub struct Refusal {
    reply: SubmissionReply,
    status: u16,
    retry_after: Option<u64>,
    close: bool,
}

impl<T> SubmissionResponse<T> {
    /// The failure response for a verdict that did not succeed.
    pub fn failure(verdict: &Verdict) -> Self {
        let reason = verdict.reason.unwrap_or(Reason::InternalError);
        Self::Refused(Refusal {
            reply: SubmissionReply::from(verdict),
            status: reason.http_status(),
            retry_after: verdict.retry_after,
            close: verdict.body_unread,
        })
    }
}

impl SubmitResponse {
    pub fn from_verdict(verdict: &Verdict) -> Self {
        match verdict.outcome {
            Outcome::Accepted => Self::Succeeded(verdict.into()),
            _ => Self::failure(verdict),
        }
    }
}

impl<T: Success> IntoResponse for SubmissionResponse<T> {
    fn into_response(self) -> Response {
        match self {
            Self::Succeeded(body) => Json(body).with_status(status(T::STATUS)).into_response(),
            Self::Refused(refusal) => {
                let mut response = Json(refusal.reply)
                    .with_status(status(refusal.status))
                    .into_response();
                let headers = response.headers_mut();
                if let Some(secs) = refusal.retry_after {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                if refusal.close {
                    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        }
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("reasons and successes have valid HTTP statuses")
}

impl<T: Success> ApiResponse for SubmissionResponse<T> {
    fn meta() -> MetaResponses {
        let success = MetaResponse {
            description: T::DESCRIPTION,
            status: Some(T::STATUS),
            status_range: None,
            content: Json::<T>::media_types(),
            headers: Vec::new(),
        };
        let refusals = refusal_docs().iter().map(|doc| MetaResponse {
            description: &doc.description,
            status: Some(doc.status),
            status_range: None,
            content: Json::<SubmissionReply>::media_types(),
            headers: doc.headers.iter().map(|h| h.meta()).collect(),
        });
        MetaResponses {
            responses: std::iter::once(success).chain(refusals).collect(),
        }
    }

    fn register(registry: &mut Registry) {
        <Json<T> as ResponseContent>::register(registry);
        <Json<SubmissionReply> as ResponseContent>::register(registry);
    }
}

/// One refusal status of the spec: the reasons that answer with it, in words.
struct RefusalDoc {
    status: u16,
    description: String,
    headers: Vec<ReplyHeader>,
}

/// The headers a refusal may carry; which reasons set them is decided where the verdict
/// is made (`retry_after`, `body_unread`), this only documents them.
#[derive(Clone, Copy, PartialEq)]
enum ReplyHeader {
    RetryAfter,
    Connection,
}

impl ReplyHeader {
    fn of(reason: Reason) -> &'static [ReplyHeader] {
        match reason {
            Reason::RateLimited | Reason::Overloaded => {
                &[ReplyHeader::RetryAfter, ReplyHeader::Connection]
            }
            Reason::PayloadTooLarge | Reason::RequestTimeout => &[ReplyHeader::Connection],
            _ => &[],
        }
    }

    fn meta(self) -> MetaHeader {
        let (name, description, schema) = match self {
            ReplyHeader::RetryAfter => (
                "RETRY-AFTER",
                "Seconds to wait before retrying.",
                <u64 as Type>::schema_ref(),
            ),
            ReplyHeader::Connection => (
                "CONNECTION",
                "`close` when the rest of the body was not read: the client must not \
                 reuse the connection.",
                <String as Type>::schema_ref(),
            ),
        };
        MetaHeader {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            required: false,
            deprecated: false,
            schema,
        }
    }
}

/// Built once: the spec's descriptions must outlive every `meta()` call.
fn refusal_docs() -> &'static [RefusalDoc] {
    static DOCS: OnceLock<Vec<RefusalDoc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut by_status: BTreeMap<u16, Vec<Reason>> = BTreeMap::new();
        for &reason in Reason::ALL {
            by_status
                .entry(reason.http_status())
                .or_default()
                .push(reason);
        }
        by_status
            .into_iter()
            .map(|(status, reasons)| {
                let description = reasons
                    .iter()
                    .map(|r| format!("`{r}`: {}", one_line(r.meaning())))
                    .collect::<Vec<_>>()
                    .join("\n\n");
                let mut headers: Vec<ReplyHeader> = Vec::new();
                for header in reasons.iter().flat_map(|&r| ReplyHeader::of(r)) {
                    if !headers.contains(header) {
                        headers.push(*header);
                    }
                }
                RefusalDoc {
                    status,
                    description,
                    headers,
                }
            })
            .collect()
    })
}

/// Doc comments wrap at 90 columns; the spec's descriptions are prose.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(reason: Reason, retry_after: Option<u64>, body_unread: bool) -> Verdict {
        Verdict {
            outcome: reason.outcome(),
            reason: Some(reason),
            field: None,
            message: "no".into(),
            lead_id: None,
            trace_id: "0".repeat(32),
            retry_after,
            body_unread,
        }
    }

    #[test]
    fn every_refusal_answers_with_its_reasons_status_and_the_spec_lists_it() {
        let documented: Vec<u16> = SubmitResponse::meta()
            .responses
            .iter()
            .filter_map(|r| r.status)
            .collect();
        for &reason in Reason::ALL {
            let response = SubmitResponse::failure(&refused(reason, None, false)).into_response();
            assert_eq!(response.status().as_u16(), reason.http_status(), "{reason}");
            assert!(documented.contains(&reason.http_status()), "{reason}");
            let doc = refusal_docs()
                .iter()
                .find(|d| d.status == reason.http_status())
                .expect("documented");
            assert!(doc.description.contains(&format!("`{reason}`")), "{reason}");
        }
        assert_eq!(documented[0], ACCEPTED_STATUS);
    }

    #[test]
    fn headers_follow_the_verdict() {
        let limited = refused(Reason::RateLimited, Some(7), true);
        let response = BatchResponse::failure(&limited).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert_eq!(response.headers()[header::CONNECTION], "close");
        let keyed = refused(Reason::RateLimited, Some(1), false);
        let response = SubmitResponse::failure(&keyed).into_response();
        assert!(response.headers().get(header::CONNECTION).is_none());
    }

    #[test]
    fn a_verdict_without_a_reason_is_an_internal_error() {
        let mut verdict = refused(Reason::InternalError, None, false);
        verdict.reason = None;
        let response = SubmitResponse::failure(&verdict).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
