//! Request bodies for the ingest endpoints. The framework documents them (schema and
//! media type in the OpenAPI spec) but never rejects them itself: a wrong media type,
//! an oversized or malformed body must reach the pipeline, which answers with our
//! reason codes and records the attempt.

use std::marker::PhantomData;
use std::time::Duration;

use poem::http::header::CONTENT_LENGTH;
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use crate::ingest::{BodyError, RawBody};

/// Body size and read-time limits, attached to the routes as request data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// The whole body must arrive within this; a client trickling it in is cut off.
    pub read_timeout: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            read_timeout: Duration::from_secs(10),
        }
    }
}

/// A documented request schema and the media type it is sent as.
pub trait Documented: Type {
    const MEDIA_TYPE: &'static str;
}

/// The raw body of a request whose documented shape is `T`.
pub struct Unparsed<T> {
    pub body: RawBody,
    shape: PhantomData<T>,
}

impl<'a, T: Documented> ApiExtractor<'a> for Unparsed<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: T::MEDIA_TYPE,
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let limits = request.data::<BodyLimits>().copied().unwrap_or_default();
        Ok(Self {
            body: unread(request, body, limits),
            shape: PhantomData,
        })
    }
}

/// The body, to be read when the pipeline asks: a declared length over the limit is
/// refused without reading; otherwise reading stops at the limit or the timeout.
fn unread(request: &Request, body: &mut RequestBody, limits: BodyLimits) -> RawBody {
    let content_type = request.content_type().map(str::to_owned);
    let limit = limits.max_bytes;
    let declared = request
        .header(CONTENT_LENGTH)
        .and_then(|len| len.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return RawBody::known(content_type, Err(BodyError::TooLarge { limit }));
    }
    let Ok(body) = body.take() else {
        return RawBody::known(content_type, Ok(bytes::Bytes::new()));
    };
    RawBody::unread(content_type, async move {
        match tokio::time::timeout(limits.read_timeout, body.into_bytes_limit(limit)).await {
            Err(_) => Err(BodyError::TimedOut),
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(poem::error::ReadBodyError::PayloadTooLarge)) => {
                Err(BodyError::TooLarge { limit })
            }
            Ok(Err(_)) => Err(BodyError::Unreadable),
        }
    })
}
