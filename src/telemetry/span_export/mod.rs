//! The service's OTLP span exporter: each batch is encoded once, straight from the
//! SDK's span data (`encode`), and the same bytes are sent again on a retry.
//!
//! `opentelemetry-otlp`'s exporter clones the whole batch for every attempt, converts
//! it into generated proto structs and lets prost size every nested message again per
//! level; at saturation that was most of the telemetry's cost (docs/performance.md,
//! "Telemetry cost profile"). Metrics and logs keep that exporter: they are a few
//! points per interval and one record per failed attempt, not two spans per request.
//!
//! The SDK's batch processor calls `export` from its own thread, outside the runtime;
//! the request runs as a task on the app's runtime (captured when the exporter is built)
//! and the processor's thread waits for it.

mod encode;
mod transport;

use std::time::Duration;

use bytes::Bytes;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::runtime::Handle;
use tokio::time::Instant;

use encode::EncodedResource;
pub use transport::TransportError;
use transport::{Attempt, Transport};

/// Retries of one batch, as `opentelemetry-otlp`'s default policy: 3 after the first
/// attempt, backing off from 100 ms (doubling, at most 1.6 s), all within the timeout.
const RETRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_millis(1_600);

#[derive(Debug)]
pub struct OtlpSpanExporter {
    transport: Transport,
    resource: EncodedResource,
    timeout: Duration,
    runtime: Handle,
}

impl OtlpSpanExporter {
    /// gRPC (`http://host:4317`) to the collector's `TraceService/Export`.
    /// Must run inside a tokio runtime: the connection is a task of it.
    pub fn grpc(endpoint: &str, timeout: Duration) -> Result<Self, TransportError> {
        Ok(Self::new(Transport::grpc(endpoint)?, timeout))
    }

    /// OTLP/HTTP protobuf, POSTed to `url` (the collector's `/v1/traces`).
    /// Must run inside a tokio runtime.
    pub fn http(url: &str, timeout: Duration) -> Result<Self, TransportError> {
        Ok(Self::new(Transport::http(url)?, timeout))
    }

    fn new(transport: Transport, timeout: Duration) -> Self {
        Self {
            transport,
            resource: EncodedResource::default(),
            timeout,
            runtime: Handle::current(),
        }
    }
}

impl SpanExporter for OtlpSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = Bytes::from(encode::export_request(&batch, &self.resource));
        // Freed here, on the processor's thread, not on the runtime's.
        drop(batch);
        let transport = self.transport.clone();
        match self
            .runtime
            .spawn(send(transport, body, self.timeout))
            .await
        {
            Ok(result) => result,
            Err(error) => Err(OTelSdkError::InternalFailure(format!(
                "span export task: {error}"
            ))),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

/// The first attempt and up to [`RETRIES`] more while the collector's answer says a
/// retry can help and the timeout leaves room for the backoff.
async fn send(transport: Transport, body: Bytes, timeout: Duration) -> OTelSdkResult {
    let deadline = Instant::now() + timeout;
    let (mut backoff, mut retries_left) = (FIRST_BACKOFF, RETRIES);
    loop {
        match tokio::time::timeout_at(deadline, transport.send(body.clone())).await {
            Err(_) => return Err(OTelSdkError::Timeout(timeout)),
            Ok(Attempt::Sent) => return Ok(()),
            Ok(Attempt::Failed {
                retryable: true, ..
            }) if retries_left > 0 && Instant::now() + backoff < deadline => {}
            Ok(Attempt::Failed { reason, .. }) => {
                return Err(OTelSdkError::InternalFailure(reason));
            }
        }
        tokio::time::sleep(backoff).await;
        retries_left -= 1;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    fn one_span() -> Vec<SpanData> {
        vec![SpanData {
            span_context: SpanContext::new(
                TraceId::from(1),
                SpanId::from(2),
                TraceFlags::SAMPLED,
                false,
                Default::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed("lead.submit"),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("lead-lab").build(),
        }]
    }

    /// An OTLP/HTTP collector that answers with `statuses` in turn (the last one
    /// repeated) and keeps every request body it got.
    async fn collector(statuses: &'static [u16]) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        tokio::spawn(async move {
            for turn in 0.. {
                let (mut socket, _) = listener.accept().await.unwrap();
                let body = read_request(&mut socket).await;
                seen.lock().unwrap().push(body);
                let status = statuses[turn.min(statuses.len() - 1)];
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        (url, bodies)
    }

    async fn read_request(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut request = Vec::new();
        let mut chunk = [0_u8; 4096];
        loop {
            let read = socket.read(&mut chunk).await.unwrap();
            request.extend_from_slice(&chunk[..read]);
            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .map_or(0, |n| n.trim().parse().unwrap());
                if request.len() >= end + 4 + length {
                    return request[end + 4..end + 4 + length].to_vec();
                }
            }
        }
    }

    async fn export_to(statuses: &'static [u16]) -> (OTelSdkResult, Vec<Vec<u8>>) {
        let (url, bodies) = collector(statuses).await;
        let exporter = OtlpSpanExporter::http(&url, Duration::from_secs(5)).unwrap();
        let result = exporter.export(one_span()).await;
        let bodies = bodies.lock().unwrap().clone();
        (result, bodies)
    }

    #[tokio::test]
    async fn a_retryable_answer_is_retried_with_the_same_bytes() {
        let (result, bodies) = export_to(&[503, 429, 200]).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(bodies.len(), 3);
        assert!(bodies.iter().all(|body| body == &bodies[0]));
        let request = ExportTraceServiceRequest::decode(bodies[0].as_slice()).unwrap();
        assert_eq!(request.resource_spans[0].scope_spans[0].spans.len(), 1);
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried() {
        let (result, bodies) = export_to(&[400]).await;
        assert!(result.is_err());
        assert_eq!(bodies.len(), 1);
    }

    #[tokio::test]
    async fn retries_stop_after_three() {
        let (result, bodies) = export_to(&[503]).await;
        assert!(result.is_err());
        assert_eq!(bodies.len(), 1 + RETRIES as usize);
    }
}
