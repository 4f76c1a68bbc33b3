//! The service's span pipeline to the collector, in place of the SDK's batch processor
//! and `opentelemetry-otlp`'s exporter: each span is encoded into OTLP protobuf when it
//! ends (`encode`), on the thread that ended it; the bytes wait in a bounded queue; one
//! worker thread, with a tokio runtime of its own, sends them in batches (`processor`)
//! over gRPC or HTTP, resending the same bytes on a retry (`transport`).
//!
//! `opentelemetry-otlp`'s exporter cloned the whole batch for every attempt, converted
//! it into generated proto structs and let prost size every nested message again per
//! level, and the batch processor freed every span on its own thread; at saturation
//! that was most of the telemetry's cost (docs/performance.md, "Telemetry cost
//! profile"). Metrics and logs keep that exporter: they are a few points per interval
//! and one record per failed attempt, not two spans per request.

mod encode;
mod processor;
mod transport;

pub use processor::{BatchLimits, EncodingSpanProcessor};
use transport::Target;
pub use transport::TransportError;

use super::ExportFailures;

/// Where the spans go.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    /// gRPC (`http://host:4317`) to the collector's `TraceService/Export`.
    Grpc { endpoint: &'a str },
    /// OTLP/HTTP protobuf, POSTed to `url` (the collector's `/v1/traces`).
    Http { url: &'a str },
}

#[derive(Debug, thiserror::Error)]
pub enum SpanPipelineError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("cannot start the span export thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The processor sending to `destination`, its worker thread started with a runtime of
/// its own, so exports never wait behind the requests on the service's runtime.
pub fn span_processor(
    destination: Destination<'_>,
    limits: BatchLimits,
    failures: ExportFailures,
) -> Result<EncodingSpanProcessor, SpanPipelineError> {
    let target = match destination {
        Destination::Grpc { endpoint } => Target::grpc(endpoint)?,
        Destination::Http { url } => Target::http(url),
    };
    EncodingSpanProcessor::start(target, limits, failures)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};

    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
    use opentelemetry_sdk::trace::{SpanData, SpanProcessor as _};
    use prost::Message as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::transport::RETRIES;
    use super::*;

    /// The request bodies a scripted collector got.
    #[derive(Clone, Default)]
    struct Received(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Received {
        fn push(&self, body: Vec<u8>) {
            self.0.lock().unwrap().push(body);
        }

        fn all(&self) -> Vec<Vec<u8>> {
            self.0.lock().unwrap().clone()
        }

        /// The spans in each request.
        fn spans_per_request(&self) -> Vec<usize> {
            self.all()
                .iter()
                .map(|body| {
                    let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
                    request
                        .resource_spans
                        .iter()
                        .flat_map(|resource| &resource.scope_spans)
                        .map(|scope| scope.spans.len())
                        .sum()
                })
                .collect()
        }

        async fn wait_for(&self, requests: usize) {
            self.wait_until(|received| received.all().len() >= requests)
                .await;
        }

        async fn wait_for_spans(&self, spans: usize) {
            self.wait_until(|received| received.spans_per_request().iter().sum::<usize>() >= spans)
                .await;
        }

        async fn wait_until(&self, done: impl Fn(&Self) -> bool) {
            for _ in 0..500 {
                if done(self) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "the collector got {:?} spans per request",
                self.spans_per_request()
            );
        }
    }

    fn span(sampled: bool) -> SpanData {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(1),
                SpanId::from(2),
                flags,
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
        }
    }

    /// An OTLP/HTTP collector that answers with `statuses` in turn (the last one
    /// repeated) and keeps every request body it got.
    async fn collector(statuses: &'static [u16]) -> (String, Received) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let received = Received::default();
        let seen = received.clone();
        tokio::spawn(async move {
            for turn in 0.. {
                let (mut socket, _) = listener.accept().await.unwrap();
                let body = read_request(&mut socket).await;
                seen.push(body);
                let status = statuses[turn.min(statuses.len() - 1)];
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        (url, received)
    }

    /// The scripted collector on a thread and runtime of its own: it answers whatever
    /// the test's runtime is doing.
    fn collector_apart(statuses: &'static [u16]) -> (String, Received) {
        let (address, answered) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                address.send(collector(statuses).await).unwrap();
                std::future::pending::<()>().await
            });
        });
        answered.recv().unwrap()
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

    /// Limits under which nothing is sent unless a test asks for it.
    fn limits() -> BatchLimits {
        BatchLimits {
            max_queue_size: 100,
            max_export_batch_size: 100,
            scheduled_delay: Duration::from_secs(600),
            export_timeout: Duration::from_secs(5),
        }
    }

    struct Pipeline {
        processor: Arc<EncodingSpanProcessor>,
        received: Received,
        failures: ExportFailures,
    }

    async fn pipeline(statuses: &'static [u16], limits: BatchLimits) -> Pipeline {
        let (url, received) = collector(statuses).await;
        let failures = ExportFailures::default();
        let processor =
            span_processor(Destination::Http { url: &url }, limits, failures.clone()).unwrap();
        Pipeline {
            processor: Arc::new(processor),
            received,
            failures,
        }
    }

    impl Pipeline {
        fn end(&self, spans: usize) {
            for _ in 0..spans {
                self.processor.on_end(span(true));
            }
        }

        /// Flushes or shuts down off the runtime's threads: both block until the worker
        /// is done, and its exports go to the scripted collector on this runtime.
        async fn blocking(
            &self,
            call: fn(&EncodingSpanProcessor) -> OTelSdkResult,
        ) -> OTelSdkResult {
            let processor = self.processor.clone();
            tokio::task::spawn_blocking(move || call(&processor))
                .await
                .unwrap()
        }

        async fn flush(&self) -> OTelSdkResult {
            self.blocking(|processor| processor.force_flush()).await
        }

        async fn shutdown(&self) -> OTelSdkResult {
            self.blocking(|processor| processor.shutdown()).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retryable_answer_is_retried_with_the_same_bytes() {
        let pipeline = pipeline(&[503, 429, 200], limits()).await;
        pipeline.end(1);

        let flushed = pipeline.flush().await;

        assert!(flushed.is_ok(), "{flushed:?}");
        let bodies = pipeline.received.all();
        assert_eq!(bodies.len(), 3);
        assert!(bodies.iter().all(|body| body == &bodies[0]));
        assert_eq!(pipeline.received.spans_per_request()[0], 1);
        assert_eq!(pipeline.failures.get(), 0);
    }

    /// A refusal (400) is not retried; a retryable answer (503) is, at most three times;
    /// either way the export fails and its spans are counted lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_final_answer_ends_the_export_and_its_spans_are_counted() {
        let cases: [(&'static [u16], usize); 2] = [(&[400], 1), (&[503], 1 + RETRIES as usize)];
        for (statuses, attempts) in cases {
            let pipeline = pipeline(statuses, limits()).await;
            pipeline.end(2);

            assert!(pipeline.flush().await.is_err(), "{statuses:?}");

            assert_eq!(pipeline.received.all().len(), attempts, "{statuses:?}");
            assert_eq!(pipeline.failures.get(), 2, "{statuses:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_batch_is_sent_without_waiting_for_the_delay() {
        let batch_of_two = BatchLimits {
            max_export_batch_size: 2,
            ..limits()
        };
        let pipeline = pipeline(&[200], batch_of_two).await;
        pipeline.end(5);

        pipeline.received.wait_for_spans(4).await;

        // Two full batches, in one request or two (both waiting when the worker woke).
        let sent = pipeline.received.spans_per_request();
        assert!(sent == [2, 2] || sent == [4], "{sent:?}");
        pipeline.flush().await.unwrap();
        assert_eq!(pipeline.received.spans_per_request()[sent.len()..], [1]);
    }

    /// A delay of 0 (floored at `MIN_DELAY` so the worker does not spin) still sends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_spans_are_sent_after_the_delay() {
        for delay in [Duration::from_millis(50), Duration::ZERO] {
            let soon = BatchLimits {
                scheduled_delay: delay,
                ..limits()
            };
            let pipeline = pipeline(&[200], soon).await;
            pipeline.end(3);

            pipeline.received.wait_for(1).await;

            assert_eq!(
                pipeline.received.spans_per_request(),
                [3],
                "delay {delay:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beyond_the_queue_spans_are_dropped_and_counted() {
        let queue_of_two = BatchLimits {
            max_queue_size: 2,
            ..limits()
        };
        let pipeline = pipeline(&[200], queue_of_two).await;
        pipeline.end(5);

        assert_eq!(pipeline.failures.get(), 3);
        pipeline.flush().await.unwrap();
        assert_eq!(pipeline.received.spans_per_request(), [2]);
        // Sent spans leave the queue: there is room again.
        pipeline.end(1);
        assert_eq!(pipeline.failures.get(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_sends_what_waits_and_later_spans_are_counted_lost() {
        let pipeline = pipeline(&[200], limits()).await;
        pipeline.end(3);

        pipeline.shutdown().await.unwrap();

        assert_eq!(pipeline.received.spans_per_request(), [3]);
        assert!(matches!(
            pipeline.shutdown().await,
            Err(OTelSdkError::AlreadyShutdown)
        ));
        pipeline.end(1);
        assert_eq!(pipeline.failures.get(), 1);
    }

    /// A processor dropped without a shutdown (its provider never built) still sends
    /// what waits, and its worker ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_processor_sends_what_waits() {
        let pipeline = pipeline(&[200], limits()).await;
        pipeline.end(2);
        let Pipeline {
            processor,
            received,
            ..
        } = pipeline;

        drop(Arc::into_inner(processor).expect("the only owner"));

        received.wait_for(1).await;
        assert_eq!(received.spans_per_request(), [2]);
    }

    /// The service's runtime may be busy with the requests a span records — here it is
    /// blocked outright, on its only thread, by the flush itself. The exports run on the
    /// worker's own runtime and still go out.
    #[tokio::test(flavor = "current_thread")]
    async fn exports_do_not_wait_for_the_services_runtime() {
        let (url, received) = collector_apart(&[200]);
        let failures = ExportFailures::default();
        let processor =
            span_processor(Destination::Http { url: &url }, limits(), failures.clone()).unwrap();
        processor.on_end(span(true));

        let flushed = processor.force_flush();

        assert!(flushed.is_ok(), "{flushed:?}");
        assert_eq!(received.spans_per_request(), [1]);
        assert_eq!(failures.get(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unsampled_spans_are_not_sent() {
        let pipeline = pipeline(&[200], limits()).await;
        pipeline.processor.on_end(span(false));
        pipeline.end(1);

        pipeline.flush().await.unwrap();

        assert_eq!(pipeline.received.spans_per_request(), [1]);
    }
}
