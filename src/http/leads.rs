//! The ingest endpoints. Handlers only translate: the pipeline decides.

use std::sync::Arc;

use poem::http::HeaderMap;
use poem::web::{Data, RemoteAddr};
use poem_openapi::param::Path;
use poem_openapi::{Object, OpenApi, Tags};

use super::body::{Documented, Unparsed};
use super::replies::{BatchReply, BatchResponse, SubmitResponse};
use crate::ingest::{Credentials, Ingest};

#[derive(Tags)]
enum ApiTags {
    /// Submitting leads.
    Leads,
}

/// A lead posted as JSON. Unknown fields are rejected (or ignored, per
/// `ingest.unknown_fields`).
#[derive(Object)]
pub struct LeadRequest {
    /// 1–200 characters.
    pub name: String,
    /// A syntactically valid address; it is never stored in telemetry.
    pub email: String,
    /// E.164-ish: `+` and 8–15 digits (spaces, dashes, dots and brackets are ignored).
    pub phone: Option<String>,
    pub company: Option<String>,
    /// A configured source name; the API key must belong to it.
    pub source: String,
    /// The page path the lead was captured on, e.g. `/pricing` (no query string).
    pub page: String,
    /// Whether the person consented; required `true` by sources configured so.
    pub consent: bool,
    pub utm: Option<UtmRequest>,
    /// RFC 3339 event time; only keys with the `simulator` role may state it.
    pub submitted_at: Option<String>,
}

#[derive(Debug, Object)]
pub struct UtmRequest {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
}

/// Up to `http.batch_max_leads` leads.
#[derive(Debug, Object)]
pub struct BatchRequest {
    pub leads: Vec<LeadRequest>,
}

/// An HTML form post; source and page come from the form's configuration.
#[derive(Object)]
pub struct FormRequest {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub company: Option<String>,
    /// `on`, `true`, `1` or `yes`; absent means no consent.
    pub consent: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
}

crate::debug_without_personal_data!(LeadRequest {
    source,
    page,
    consent,
    utm,
    submitted_at
});
crate::debug_without_personal_data!(FormRequest {
    consent,
    utm_source,
    utm_medium,
    utm_campaign
});

impl Documented for LeadRequest {
    const MEDIA_TYPE: &'static str = "application/json";
}

impl Documented for BatchRequest {
    const MEDIA_TYPE: &'static str = "application/json";
}

impl Documented for FormRequest {
    const MEDIA_TYPE: &'static str = "application/x-www-form-urlencoded";
}

pub struct LeadsApi;

/// Authenticate with `Authorization: Bearer KEY` or `X-Api-Key: KEY`. The simulator adds
/// `X-Simulator-Key` and `X-Submitted-At` to replay events at their own time.
#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Leads")]
impl LeadsApi {
    /// Submit one lead as JSON.
    #[oai(path = "/leads", method = "post")]
    async fn submit(
        &self,
        ingest: Data<&Arc<Ingest>>,
        headers: &HeaderMap,
        peer: &RemoteAddr,
        body: Unparsed<LeadRequest>,
    ) -> SubmitResponse {
        let verdict = ingest
            .submit_lead(
                &Credentials::from_headers(headers),
                peer_ip(peer),
                body.body,
            )
            .await;
        SubmitResponse::from_verdict(&verdict)
    }

    /// Submit an HTML form (`application/x-www-form-urlencoded`) configured under `form_id`.
    #[oai(path = "/forms/:form_id", method = "post")]
    async fn submit_form(
        &self,
        ingest: Data<&Arc<Ingest>>,
        headers: &HeaderMap,
        peer: &RemoteAddr,
        form_id: Path<String>,
        body: Unparsed<FormRequest>,
    ) -> SubmitResponse {
        let creds = Credentials::from_headers(headers);
        let verdict = ingest
            .submit_form(&form_id, &creds, peer_ip(peer), body.body)
            .await;
        SubmitResponse::from_verdict(&verdict)
    }

    /// Submit several leads in one request; each gets its own result and span.
    #[oai(path = "/leads/batch", method = "post")]
    async fn submit_batch(
        &self,
        ingest: Data<&Arc<Ingest>>,
        headers: &HeaderMap,
        peer: &RemoteAddr,
        body: Unparsed<BatchRequest>,
    ) -> BatchResponse {
        match ingest
            .submit_batch(
                &Credentials::from_headers(headers),
                peer_ip(peer),
                body.body,
            )
            .await
        {
            Ok(verdicts) => BatchResponse::Succeeded(BatchReply::new(&verdicts)),
            Err(verdict) => BatchResponse::failure(&verdict),
        }
    }
}

/// The client's address as the socket says (a proxy in front is not trusted for this).
fn peer_ip(peer: &RemoteAddr) -> Option<std::net::IpAddr> {
    peer.as_socket_addr().map(|addr| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printing_a_request_shows_no_personal_value() {
        let lead = LeadRequest {
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
            phone: Some("+441234567890".into()),
            company: Some("Analytical Engines".into()),
            source: "webform".into(),
            page: "/pricing".into(),
            consent: true,
            utm: None,
            submitted_at: None,
        };
        let form = FormRequest {
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
            phone: Some("+441234567890".into()),
            company: Some("Analytical Engines".into()),
            consent: Some("on".into()),
            utm_source: None,
            utm_medium: None,
            utm_campaign: None,
        };
        let batch = BatchRequest { leads: vec![lead] };
        for shown in [format!("{batch:?}"), format!("{form:#?}")] {
            for personal in ["Ada", "ada@example.com", "1234567890", "Analytical"] {
                assert!(!shown.contains(personal), "{personal} in {shown}");
            }
        }
        assert!(format!("{batch:?}").contains("/pricing"));
    }
}
