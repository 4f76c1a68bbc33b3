//! One attempt to hand an encoded `ExportTraceServiceRequest` to the collector, over
//! OTLP/gRPC or OTLP/HTTP, and whether the answer allows a retry (the OTLP spec's lists
//! of retryable gRPC codes and HTTP statuses).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut as _, Bytes};
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use reqwest::header::CONTENT_TYPE;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use tokio::time::Instant;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const PROTOBUF: &str = "application/x-protobuf";

/// Retries of one batch, as `opentelemetry-otlp`'s default policy: 3 after the first
/// attempt, backing off from 100 ms (doubling, at most 1.6 s), all within the timeout.
pub(super) const RETRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_millis(1_600);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid OTLP gRPC endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot build the OTLP HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

#[derive(Debug)]
pub(super) enum Transport {
    Grpc(tonic::client::Grpc<Channel>),
    Http {
        client: reqwest::Client,
        url: Arc<str>,
    },
}

/// How one attempt ended.
enum Attempt {
    Sent,
    Failed { retryable: bool, reason: String },
}

/// Why a batch did not reach the collector, retries included.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the export took longer than {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

/// Where the spans go, checked but not yet connected: the connections are made inside
/// the runtime that will drive them ([`Target::connect`]).
#[derive(Debug)]
pub(super) enum Target {
    Grpc(Box<Endpoint>),
    Http(Arc<str>),
}

impl Target {
    pub fn grpc(endpoint: &str) -> Result<Self, TransportError> {
        Endpoint::from_shared(endpoint.to_owned())
            .map(|endpoint| Self::Grpc(Box::new(endpoint)))
            .map_err(|source| TransportError::Endpoint {
                endpoint: endpoint.to_owned(),
                source,
            })
    }

    pub fn http(url: &str) -> Self {
        Self::Http(url.into())
    }

    /// Must run inside the tokio runtime that drives the exports: the gRPC channel's
    /// tasks are spawned on it. The channel connects on first use, so a collector that
    /// starts later is fine. No per-attempt timeouts: [`Transport::export`] bounds the
    /// whole export, retries included.
    pub fn connect(self) -> Result<Transport, TransportError> {
        match self {
            Self::Grpc(endpoint) => Ok(Transport::Grpc(tonic::client::Grpc::new(
                endpoint.connect_lazy(),
            ))),
            Self::Http(url) => {
                let client = reqwest::Client::builder()
                    .build()
                    .map_err(TransportError::Client)?;
                Ok(Transport::Http { client, url })
            }
        }
    }
}

impl Transport {
    /// The first attempt and up to [`RETRIES`] more, with the same bytes, while the
    /// collector's answer says a retry can help and `timeout` leaves room for the backoff.
    pub async fn export(&self, body: Bytes, timeout: Duration) -> Result<(), ExportError> {
        let deadline = Instant::now() + timeout;
        let (mut backoff, mut retries_left) = (FIRST_BACKOFF, RETRIES);
        loop {
            match tokio::time::timeout_at(deadline, self.send(body.clone())).await {
                Err(_) => return Err(ExportError::Timeout(timeout)),
                Ok(Attempt::Sent) => return Ok(()),
                Ok(Attempt::Failed {
                    retryable: true, ..
                }) if retries_left > 0 && Instant::now() + backoff < deadline => {}
                Ok(Attempt::Failed { reason, .. }) => return Err(ExportError::Failed(reason)),
            }
            tokio::time::sleep(backoff).await;
            retries_left -= 1;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn send(&self, body: Bytes) -> Attempt {
        match self {
            Self::Grpc(grpc) => send_grpc(grpc.clone(), body).await,
            Self::Http { client, url } => send_http(client, url, body).await,
        }
    }
}

async fn send_grpc(mut grpc: tonic::client::Grpc<Channel>, body: Bytes) -> Attempt {
    if let Err(error) = grpc.ready().await {
        return Attempt::Failed {
            retryable: true,
            reason: format!("the collector is unreachable: {error}"),
        };
    }
    let path = PathAndQuery::from_static(EXPORT_PATH);
    match grpc.unary(tonic::Request::new(body), path, RawCodec).await {
        Ok(response) => {
            warn_of_rejections(&response.into_inner());
            Attempt::Sent
        }
        Err(status) => Attempt::Failed {
            retryable: retryable_code(status.code()),
            reason: format!("the collector answered {status}"),
        },
    }
}

async fn send_http(client: &reqwest::Client, url: &str, body: Bytes) -> Attempt {
    let answer = client
        .post(url)
        .header(CONTENT_TYPE, PROTOBUF)
        .body(body)
        .send()
        .await;
    let response = match answer {
        Ok(response) => response,
        Err(error) => {
            return Attempt::Failed {
                retryable: true,
                reason: format!("the collector is unreachable: {error}"),
            };
        }
    };
    let status = response.status();
    if !status.is_success() {
        return Attempt::Failed {
            retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
            reason: format!("the collector answered HTTP {status}"),
        };
    }
    // The body only matters for a partial success; one that cannot be read or decoded
    // still means the collector took the batch.
    if let Ok(bytes) = response.bytes().await
        && let Ok(answer) = ExportTraceServiceResponse::decode(bytes)
    {
        warn_of_rejections(&answer);
    }
    Attempt::Sent
}

/// The OTLP spec's retryable gRPC codes (`RESOURCE_EXHAUSTED` is how a collector
/// pushes back when its queue is full).
fn retryable_code(code: Code) -> bool {
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// A partial success: the collector kept the rest of the batch, so this is not a failed
/// export, but the lost spans must not go unnoticed.
fn warn_of_rejections(answer: &ExportTraceServiceResponse) {
    if let Some(partial) = &answer.partial_success
        && (partial.rejected_spans > 0 || !partial.error_message.is_empty())
    {
        tracing::warn!(
            rejected_spans = partial.rejected_spans,
            message = partial.error_message.as_str(),
            "the collector rejected part of a span batch"
        );
    }
}

/// Sends already encoded request bytes as they are; decodes the collector's answer.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|error| Status::internal(format!("undecodable export answer: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_grpc_codes_are_retried() {
        assert!(retryable_code(Code::Unavailable));
        assert!(retryable_code(Code::ResourceExhausted));
        assert!(!retryable_code(Code::InvalidArgument));
        assert!(!retryable_code(Code::Unauthenticated));
        assert!(!retryable_code(Code::Unimplemented));
    }
}
