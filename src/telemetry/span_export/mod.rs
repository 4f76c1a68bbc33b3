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

mod transport;

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
        Ok(Self::new(Transport::grpc(endpoint, timeout)?, timeout))
    }

    /// OTLP/HTTP protobuf, POSTed to `url` (the collector's `/v1/traces`).
    /// Must run inside a tokio runtime.
    pub fn http(url: &str, timeout: Duration) -> Result<Self, TransportError> {
        Ok(Self::new(Transport::http(url, timeout)?, timeout))
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
