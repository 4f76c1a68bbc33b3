//! The span processor: encodes each span when it ends, on the thread that ended it,
//! queues the bytes, and has one worker thread send them in batches.
//!
//! The worker drives its exports on a tokio runtime of its own (current-thread, on the
//! worker thread). On the service's runtime an export task waited in the queues behind
//! the requests it was recording: at saturation one 512-span batch at a time could not
//! keep up, the queue filled and about half the spans were dropped (bench run
//! `20261207T032409`). When batches wait, the worker also sends several in one request
//! (up to [`MAX_REQUEST_BYTES`]), so a backlog costs fewer round trips, not more.
//!
//! The SDK's batch processor moves every `SpanData` (its attribute texts, events and
//! links) through a channel to its thread, which frees them there. Freeing memory on a
//! thread other than the one that allocated it sends mimalloc's blocks through its
//! cross-thread free lists, and the request threads then take its allocation slow path;
//! at saturation that was the largest item of the span export's cost
//! (docs/performance.md). Here the `SpanData` is freed where it was built, and what
//! crosses threads is one buffer per batch.
//!
//! Limits are the batch processor's: at most `max_queue_size` spans wait (beyond it
//! new ones are dropped and counted), a batch is sent when it holds
//! `max_export_batch_size` spans or `scheduled_delay` after the last send, and a flush
//! or the shutdown sends everything waiting. The spans in flight are at most one
//! request's: what is taken from the queue for a request no longer counts against it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry::Context;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use tokio::runtime::Runtime;

use super::SpanPipelineError;
use super::encode::{EncodedBatch, EncodedResource, append_span, request};
use super::transport::{Target, Transport};
use crate::telemetry::export_failures::{ExportFailures, FailureReporter};

/// A flush waits at least this long for the worker, and at least one export's timeout.
const MIN_FLUSH_WAIT: Duration = Duration::from_secs(5);

/// The shortest wait between two timed sends: a configured delay of 0 means "as soon as
/// possible", not a worker spinning on an empty queue.
const MIN_DELAY: Duration = Duration::from_millis(1);

/// The most one export request carries when several batches wait (one batch alone may
/// be larger): half the 4 MiB that gRPC receivers, the collectors' included, accept by
/// default.
const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// A thread's encoding buffer is kept for its next span unless one span made it larger
/// than this.
const SCRATCH_KEPT: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How many spans wait, how many go in one request, and how often they go.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub scheduled_delay: Duration,
    /// One batch's export, retries included.
    pub export_timeout: Duration,
}

#[derive(Debug)]
pub struct EncodingSpanProcessor {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The worker waits on it for a full batch, a flush or the shutdown.
    work: Condvar,
    /// Flushes and the shutdown wait on it for the worker.
    done: Condvar,
    limits: BatchLimits,
    lost: FailureReporter,
}

#[derive(Debug, Default)]
struct State {
    filling: EncodedBatch,
    full: VecDeque<EncodedBatch>,
    /// Spans in `filling` and `full`: what `max_queue_size` bounds.
    queued: usize,
    resource: Arc<EncodedResource>,
    flush_requested: u64,
    flushed: u64,
    /// Why the last flush left spans unsent, if it did.
    flush_failure: Option<String>,
    shutting_down: bool,
    stopped: bool,
}

/// Why a span was dropped before any export.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("the span export queue is full ({0} spans)")]
    QueueFull(usize),
    #[error("a span ended after the telemetry shut down")]
    ShutDown,
}

impl EncodingSpanProcessor {
    /// Starts the worker thread with its runtime, connected (lazily) to `target`.
    pub(super) fn start(
        target: Target,
        limits: BatchLimits,
        failures: ExportFailures,
    ) -> Result<Self, SpanPipelineError> {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            work: Condvar::new(),
            done: Condvar::new(),
            limits,
            lost: FailureReporter::new("traces", failures),
        });
        let worker_shared = shared.clone();
        let (ready, started) = std::sync::mpsc::sync_channel(1);
        let worker = std::thread::Builder::new()
            .name("lead-lab-span-export".into())
            .spawn(move || match Worker::new(worker_shared, target) {
                Ok(worker) => {
                    let _ = ready.send(Ok(()));
                    worker.run();
                }
                Err(error) => {
                    let _ = ready.send(Err(error));
                }
            })
            .map_err(SpanPipelineError::Thread)?;
        match started.recv() {
            Ok(Ok(())) => Ok(Self {
                shared,
                worker: Mutex::new(Some(worker)),
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(SpanPipelineError::Thread(std::io::Error::other(
                "the span export thread ended before it started",
            ))),
        }
    }
}

impl SpanProcessor for EncodingSpanProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        // A span ending while its thread's locals are torn down gets a buffer of its own.
        let queued = SCRATCH
            .try_with(|scratch| {
                self.shared
                    .encode_and_enqueue(&mut scratch.borrow_mut(), &span)
            })
            .unwrap_or_else(|_| self.shared.encode_and_enqueue(&mut Vec::new(), &span));
        if let Err(refused) = queued {
            self.shared.lost.record(1, &refused);
        }
        // `span` is freed here, on the thread that built it.
    }

    fn force_flush(&self) -> OTelSdkResult {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.shutting_down {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        state.flush_requested += 1;
        let target = state.flush_requested;
        shared.work.notify_one();
        let wait = shared.limits.export_timeout.max(MIN_FLUSH_WAIT);
        let (state, timeout) = shared
            .done
            .wait_timeout_while(state, wait, |state| state.flushed < target)
            .unwrap_or_else(PoisonError::into_inner);
        if timeout.timed_out() {
            return Err(OTelSdkError::Timeout(wait));
        }
        match &state.flush_failure {
            Some(failure) => Err(OTelSdkError::InternalFailure(failure.clone())),
            None => Ok(()),
        }
    }

    /// Sends everything waiting, then stops the worker.
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.shutting_down {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        state.shutting_down = true;
        shared.work.notify_one();
        let (_state, waited) = shared
            .done
            .wait_timeout_while(state, timeout, |state| !state.stopped)
            .unwrap_or_else(PoisonError::into_inner);
        if waited.timed_out() {
            return Err(OTelSdkError::Timeout(timeout));
        }
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(worker) = worker {
            worker.join().map_err(|_| {
                OTelSdkError::InternalFailure("the span export thread panicked".into())
            })?;
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.shared.lock().resource = Arc::new(EncodedResource::new(resource));
    }
}

impl Drop for EncodingSpanProcessor {
    /// A processor dropped without a shutdown (its provider never built) still lets its
    /// worker end.
    fn drop(&mut self) {
        self.shared.lock().shutting_down = true;
        self.shared.work.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn encode_and_enqueue(&self, scratch: &mut Vec<u8>, span: &SpanData) -> Result<(), Refused> {
        scratch.clear();
        append_span(scratch, span);
        let queued = self.enqueue(&span.instrumentation_scope, scratch);
        if scratch.capacity() > SCRATCH_KEPT {
            *scratch = Vec::new();
        }
        queued
    }

    fn enqueue(&self, scope: &InstrumentationScope, encoded_span: &[u8]) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.shutting_down {
            return Err(Refused::ShutDown);
        }
        if state.queued >= self.limits.max_queue_size {
            return Err(Refused::QueueFull(self.limits.max_queue_size));
        }
        state.filling.push(scope, encoded_span);
        state.queued += 1;
        if state.filling.spans() >= self.limits.max_export_batch_size {
            let next = EncodedBatch::with_capacity(state.filling.bytes());
            let full = std::mem::replace(&mut state.filling, next);
            state.full.push_back(full);
            drop(state);
            self.work.notify_one();
        }
        Ok(())
    }
}

impl State {
    /// Everything waiting, oldest first.
    fn take_all(&mut self) -> Vec<EncodedBatch> {
        let mut batches: Vec<EncodedBatch> = self.full.drain(..).collect();
        batches.push(std::mem::take(&mut self.filling));
        self.queued = 0;
        batches
    }

    /// The oldest full batches, as many as go in one request.
    fn take_full(&mut self) -> Vec<EncodedBatch> {
        let count = in_one_request(self.full.iter()).min(self.full.len());
        let taken: Vec<EncodedBatch> = self.full.drain(..count).collect();
        self.queued -= taken.iter().map(EncodedBatch::spans).sum::<usize>();
        taken
    }

    fn take_filling(&mut self) -> EncodedBatch {
        let batch = std::mem::take(&mut self.filling);
        self.queued -= batch.spans();
        batch
    }
}

/// What the worker does next: the batches it took, and what it answers once they are
/// sent.
struct Turn {
    batches: Vec<EncodedBatch>,
    flush: Option<u64>,
    last: bool,
}

struct Worker {
    shared: Arc<Shared>,
    transport: Transport,
    runtime: Runtime,
    delay: Duration,
    next_send: Instant,
}

impl Worker {
    /// Builds the worker's runtime and connects inside it, so the connection's tasks
    /// are driven by this thread's exports.
    fn new(shared: Arc<Shared>, target: Target) -> Result<Self, SpanPipelineError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SpanPipelineError::Thread)?;
        let transport = {
            let _inside = runtime.enter();
            target.connect()?
        };
        let delay = shared.limits.scheduled_delay.max(MIN_DELAY);
        Ok(Self {
            shared,
            transport,
            runtime,
            delay,
            next_send: Instant::now() + delay,
        })
    }

    fn run(mut self) {
        loop {
            let (turn, resource) = self.next_turn();
            let failure = self.send(turn.batches, &resource);
            let mut state = self.shared.lock();
            if let Some(target) = turn.flush {
                state.flushed = target;
                state.flush_failure = failure;
            }
            if turn.last {
                state.stopped = true;
            }
            self.shared.done.notify_all();
            if turn.last {
                return;
            }
        }
    }

    /// Waits until there is something to send or to answer, and takes it.
    fn next_turn(&mut self) -> (Turn, Arc<EncodedResource>) {
        let shared = self.shared.clone();
        let mut state = shared.lock();
        loop {
            let flush = (state.flush_requested > state.flushed).then_some(state.flush_requested);
            let now = Instant::now();
            let turn = if flush.is_some() || state.shutting_down {
                Some(Turn {
                    batches: state.take_all(),
                    flush,
                    last: state.shutting_down,
                })
            } else if !state.full.is_empty() {
                Some(Turn::of(state.take_full()))
            } else if now >= self.next_send {
                self.next_send = now + self.delay;
                Some(Turn::of(vec![state.take_filling()]))
            } else {
                None
            };
            if let Some(turn) = turn {
                return (turn, state.resource.clone());
            }
            let wait = self.next_send.saturating_duration_since(now);
            state = shared
                .work
                .wait_timeout(state, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sends the batches, as few requests as [`MAX_REQUEST_BYTES`] allows, one after
    /// the other; counts the spans of each request that failed, and returns the last
    /// failure.
    fn send(&self, batches: Vec<EncodedBatch>, resource: &EncodedResource) -> Option<String> {
        let mut failure = None;
        for batches in requests(batches) {
            let spans: usize = batches.iter().map(EncodedBatch::spans).sum();
            let body = Bytes::from(request(&batches, resource));
            drop(batches);
            let timeout = self.shared.limits.export_timeout;
            if let Err(error) = self.runtime.block_on(self.transport.export(body, timeout)) {
                let error = error.to_string();
                self.shared.lost.record(spans as u64, &error);
                failure = Some(error);
            }
        }
        failure
    }
}

/// How many of `batches`, in order, go in one request: as many as fit in
/// [`MAX_REQUEST_BYTES`], and at least the first (a larger batch goes alone).
fn in_one_request<'a>(batches: impl Iterator<Item = &'a EncodedBatch>) -> usize {
    batches
        .scan(0, |bytes, batch| {
            *bytes += batch.bytes();
            (*bytes <= MAX_REQUEST_BYTES).then_some(())
        })
        .count()
        .max(1)
}

/// `batches` grouped into requests ([`in_one_request`]), empty ones left out.
fn requests(batches: Vec<EncodedBatch>) -> Vec<Vec<EncodedBatch>> {
    let mut rest: Vec<EncodedBatch> = batches.into_iter().filter(|b| b.spans() > 0).collect();
    let mut requests = Vec::new();
    while !rest.is_empty() {
        let count = in_one_request(rest.iter()).min(rest.len());
        requests.push(rest.drain(..count).collect());
    }
    requests
}

impl Turn {
    fn of(batches: Vec<EncodedBatch>) -> Self {
        Self {
            batches,
            flush: None,
            last: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(spans: usize, bytes_each: usize) -> EncodedBatch {
        let scope = InstrumentationScope::builder("lead-lab").build();
        let mut batch = EncodedBatch::default();
        for _ in 0..spans {
            batch.push(&scope, &vec![0; bytes_each]);
        }
        batch
    }

    fn spans_per_request(batches: Vec<EncodedBatch>) -> Vec<Vec<usize>> {
        requests(batches)
            .iter()
            .map(|request| request.iter().map(EncodedBatch::spans).collect())
            .collect()
    }

    #[test]
    fn waiting_batches_share_requests_up_to_the_request_cap() {
        let kib = 1024;
        // Three batches of 0.75 MiB: two fit in 2 MiB, the third starts a request.
        let quarter_mib_spans = |n| batch(n, 256 * kib);
        assert_eq!(
            spans_per_request(vec![
                quarter_mib_spans(3),
                quarter_mib_spans(3),
                quarter_mib_spans(3)
            ]),
            [vec![3, 3], vec![3]]
        );
        // A batch over the cap goes alone; empty ones are not sent.
        assert_eq!(
            spans_per_request(vec![batch(1, 3 * 1024 * kib), batch(0, 0), batch(2, 10)]),
            [vec![1], vec![2]]
        );
    }

    #[test]
    fn the_worker_takes_as_many_full_batches_as_one_request_holds() {
        let mut state = State::default();
        for _ in 0..3 {
            state.queued += 3;
            state.full.push_back(batch(3, 256 * 1024));
        }
        assert_eq!(state.take_full().len(), 2);
        assert_eq!(state.queued, 3);
        assert_eq!(state.take_full().len(), 1);
        assert_eq!(state.queued, 0);
    }
}
