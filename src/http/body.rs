//! Request bodies for the ingest endpoints. The framework documents them (schema and
//! media type in the OpenAPI spec) but never rejects them itself: a wrong media type,
//! an oversized or malformed body must reach the pipeline, which answers with our
//! reason codes and records the attempt.

use std::marker::PhantomData;

use poem::http::header::CONTENT_LENGTH;
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use crate::ingest::{BodyError, RawBody};

/// The body size limit, attached to the routes as request data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

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
        let limit = request.data::<BodyLimit>().map_or(64 * 1024, |l| l.0);
        Ok(Self {
            body: read(request, body, limit).await,
            shape: PhantomData,
        })
    }
}

async fn read(request: &Request, body: &mut RequestBody, limit: usize) -> RawBody {
    let content_type = request.content_type().map(str::to_owned);
    let declared = request
        .header(CONTENT_LENGTH)
        .and_then(|len| len.parse::<usize>().ok());
    let bytes = if declared.is_some_and(|len| len > limit) {
        Err(BodyError::TooLarge { limit })
    } else {
        match body.take() {
            Ok(body) => body.into_bytes_limit(limit).await.map_err(|e| match e {
                poem::error::ReadBodyError::PayloadTooLarge => BodyError::TooLarge { limit },
                _ => BodyError::Unreadable,
            }),
            Err(_) => Ok(bytes::Bytes::new()),
        }
    };
    RawBody {
        content_type,
        bytes,
    }
}
