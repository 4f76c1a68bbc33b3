//! A request body as the pipeline receives it: read up to the size limit, never parsed
//! by the web framework, so every malformed body still becomes an attempt with a span.

use bytes::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The body exceeded the limit; reading stopped there.
    TooLarge { limit: usize },
    /// The connection failed while reading.
    Unreadable,
}

#[derive(Debug, Clone)]
pub struct RawBody {
    pub content_type: Option<String>,
    pub bytes: Result<Bytes, BodyError>,
}
