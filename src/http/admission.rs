//! What every request passes before its handler runs:
//!
//! - the in-flight cap (`http.max_in_flight`): beyond it a request is answered 503
//!   `overloaded` at once. Health probes are exempt, so an orchestrator still sees a
//!   live service; a lead attempt shed here is still recorded as one.
//! - the admin token of the analysis API, checked before any body of it is read.
//! - the body limits on the routes whose bodies the framework reads (all but the ingest
//!   routes, which read their own bodies and record what went wrong).

use std::sync::Arc;

use poem::http::{HeaderMap, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use serde_json::json;
use tokio::sync::Semaphore;

use super::BodyLimits;
use super::replies::{BatchResponse, SubmitResponse};
use crate::ingest::{Credentials, Endpoint as IngestEndpoint, Ingest};

/// Seconds a client shed for load is told to wait.
const OVERLOADED_RETRY_SECS: u64 = 1;

pub struct Admission {
    in_flight: Arc<Semaphore>,
    admin_token: Arc<str>,
    limits: BodyLimits,
    ingest: Arc<Ingest>,
}

impl Admission {
    pub fn new(
        max_in_flight: usize,
        admin_token: &str,
        limits: BodyLimits,
        ingest: Arc<Ingest>,
    ) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            admin_token: admin_token.into(),
            limits,
            ingest,
        }
    }
}

impl<E: Endpoint> Middleware<E> for Admission {
    type Output = AdmissionEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AdmissionEndpoint {
            in_flight: self.in_flight.clone(),
            admin_token: self.admin_token.clone(),
            limits: self.limits,
            ingest: self.ingest.clone(),
            inner,
        }
    }
}

pub struct AdmissionEndpoint<E> {
    in_flight: Arc<Semaphore>,
    admin_token: Arc<str>,
    limits: BodyLimits,
    ingest: Arc<Ingest>,
    inner: E,
}

/// What a path is, for admission.
enum RouteKind<'a> {
    Health,
    Ingest(IngestEndpoint, Option<&'a str>),
    Admin,
    Other,
}

fn route_kind(path: &str) -> RouteKind<'_> {
    match path {
        "/healthz" | "/readyz" => RouteKind::Health,
        "/v1/leads" => RouteKind::Ingest(IngestEndpoint::Leads, None),
        "/v1/leads/batch" => RouteKind::Ingest(IngestEndpoint::Batch, None),
        _ => {
            if let Some(form) = path
                .strip_prefix("/v1/forms/")
                .filter(|id| !id.contains('/'))
            {
                RouteKind::Ingest(IngestEndpoint::Forms, Some(form))
            } else if path.starts_with("/v1/analyses") || path.starts_with("/v1/summaries") {
                RouteKind::Admin
            } else {
                RouteKind::Other
            }
        }
    }
}

impl<E: Endpoint> Endpoint for AdmissionEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let path = req.uri().path().to_owned();
        let kind = route_kind(&path);
        if matches!(kind, RouteKind::Health) {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Ok(self.shed(&kind, req.headers()));
        };
        match kind {
            RouteKind::Ingest(..) => {}
            RouteKind::Admin if !authorized(&self.admin_token, req.headers()) => {
                return Ok(problem(
                    StatusCode::UNAUTHORIZED,
                    "send the admin token: Authorization: Bearer <admin_token>",
                    has_body(&req),
                ));
            }
            _ => {
                if let Err(refusal) = self.bounded_body(&mut req).await {
                    return Ok(refusal);
                }
            }
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}

impl<E> AdmissionEndpoint<E> {
    fn shed(&self, kind: &RouteKind<'_>, headers: &HeaderMap) -> Response {
        let RouteKind::Ingest(endpoint, form_id) = kind else {
            let mut response = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the service is at its limit of requests in flight; retry later",
                true,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, OVERLOADED_RETRY_SECS.into());
            return response;
        };
        let creds = Credentials::from_headers(headers);
        let verdict = self
            .ingest
            .shed(*endpoint, *form_id, &creds, OVERLOADED_RETRY_SECS);
        match endpoint {
            IngestEndpoint::Batch => BatchResponse::failure(&verdict).into_response(),
            _ => SubmitResponse::from_verdict(&verdict).into_response(),
        }
    }

    /// Reads a body the framework would read anyway, within the size and time limits.
    async fn bounded_body(&self, req: &mut Request) -> Result<(), Response> {
        if !has_body(req) {
            return Ok(());
        }
        let limit = self.limits.max_bytes;
        let too_large = || {
            problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than {limit} bytes"),
                true,
            )
        };
        let declared = req
            .header(header::CONTENT_LENGTH)
            .and_then(|len| len.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(too_large());
        }
        let body = req.take_body();
        match tokio::time::timeout(self.limits.read_timeout, body.into_bytes_limit(limit)).await {
            Err(_) => Err(problem(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
                true,
            )),
            Ok(Err(poem::error::ReadBodyError::PayloadTooLarge)) => Err(too_large()),
            Ok(Err(_)) => Err(problem(
                StatusCode::BAD_REQUEST,
                "the body could not be read",
                true,
            )),
            Ok(Ok(bytes)) => {
                req.set_body(bytes);
                Ok(())
            }
        }
    }
}

fn has_body(req: &Request) -> bool {
    !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || req
            .header(header::CONTENT_LENGTH)
            .is_some_and(|len| len != "0")
        || req.header(header::TRANSFER_ENCODING).is_some()
}

/// The analysis API's answer shape (`{"message": …}`); an unread body closes the
/// connection, so a client cannot reuse it.
fn problem(status: StatusCode, message: &str, close: bool) -> Response {
    let mut response = Response::builder()
        .status(status)
        .content_type("application/json")
        .body(json!({ "message": message }).to_string());
    if close {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Compares in constant time, so the token cannot be guessed byte by byte. An empty
/// token disables the admin API.
pub fn authorized(admin_token: &str, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes();
    let expected = admin_token.as_bytes();
    !expected.is_empty()
        && presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_told_apart() {
        assert!(matches!(route_kind("/healthz"), RouteKind::Health));
        assert!(matches!(
            route_kind("/v1/forms/pricing"),
            RouteKind::Ingest(IngestEndpoint::Forms, Some("pricing"))
        ));
        assert!(matches!(route_kind("/v1/forms/a/b"), RouteKind::Other));
        assert!(matches!(route_kind("/v1/analyses/42"), RouteKind::Admin));
        assert!(matches!(
            route_kind("/v1/summaries/2026-01-01"),
            RouteKind::Admin
        ));
        assert!(matches!(route_kind("/v1/stats/overview"), RouteKind::Other));
    }

    #[test]
    fn the_admin_token_is_compared_whole() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        assert!(authorized("secret", &headers));
        assert!(!authorized("secre", &headers));
        assert!(!authorized("secret2", &headers));
        assert!(!authorized("", &HeaderMap::new()));
    }
}
