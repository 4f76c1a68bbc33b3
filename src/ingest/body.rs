//! A request body as the pipeline receives it: never parsed by the web framework, so
//! every malformed body still becomes an attempt with a span, and not yet read, so the
//! pipeline can refuse a request (a keyless flood) before spending anything on its body.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The body exceeded the limit; reading stopped there.
    TooLarge { limit: usize },
    /// The body did not arrive within the read timeout.
    TimedOut,
    /// The connection failed while reading.
    Unreadable,
}

type Reading = Pin<Box<dyn Future<Output = Result<Bytes, BodyError>> + Send>>;

enum Contents {
    Known(Result<Bytes, BodyError>),
    Unread(Reading),
}

pub struct RawBody {
    pub content_type: Option<String>,
    contents: Contents,
}

impl std::fmt::Debug for RawBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let contents = match &self.contents {
            Contents::Known(Ok(bytes)) => format!("{} bytes", bytes.len()),
            Contents::Known(Err(error)) => format!("{error:?}"),
            Contents::Unread(_) => "unread".to_owned(),
        };
        f.debug_struct("RawBody")
            .field("content_type", &self.content_type)
            .field("contents", &contents)
            .finish()
    }
}

impl RawBody {
    /// A body whose outcome is already known (tests; a declared length over the limit).
    pub fn known(content_type: Option<String>, bytes: Result<Bytes, BodyError>) -> Self {
        Self {
            content_type,
            contents: Contents::Known(bytes),
        }
    }

    /// A body read only when the pipeline asks for it; `reading` enforces the limits.
    pub fn unread(
        content_type: Option<String>,
        reading: impl Future<Output = Result<Bytes, BodyError>> + Send + 'static,
    ) -> Self {
        Self {
            content_type,
            contents: Contents::Unread(Box::pin(reading)),
        }
    }

    /// Reads the body (once).
    pub async fn bytes(self) -> Result<Bytes, BodyError> {
        match self.contents {
            Contents::Known(bytes) => bytes,
            Contents::Unread(reading) => reading.await,
        }
    }
}
