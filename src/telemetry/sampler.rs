//! The service's one sampling decision: the record is never sampled away, everything
//! else follows the request's sampling.
//!
//! `lead.submit` spans are the record of every attempt (they become `lead_submissions`
//! rows), so they are recorded and exported whatever the caller's `traceparent` says: a
//! client that head-samples with flag `00`, or a ratio of 0, must not make an attempt
//! disappear. All other spans (the server span, `lead.deliver`, analyzer spans) follow a
//! parent-based sampler whose root decision is a trace-id ratio (`otel.trace_sample_ratio`).
//!
//! A record span kept only because it is the record carries `leadlab=rec` in its trace
//! state, so its children (the delivery span) know the request itself was not sampled
//! and are dropped with it, instead of inheriting the record span's sampled flag.

use opentelemetry::trace::{Link, SpanKind, TraceContextExt as _, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};

/// Name of the span that is the record of one submission attempt.
pub const RECORD_SPAN: &str = "lead.submit";

/// Trace-state entry marking a trace whose request was not sampled: only its record
/// spans are exported.
const STATE_KEY: &str = "leadlab";
const RECORD_ONLY: &str = "rec";

#[derive(Debug, Clone)]
pub struct RecordSampler {
    requests: Sampler,
}

impl RecordSampler {
    /// `ratio` is clamped to 0..=1 (the settings check refuses values outside it).
    pub fn new(ratio: f64) -> Self {
        let ratio = ratio.clamp(0.0, 1.0);
        Self {
            requests: Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
        }
    }
}

impl ShouldSample for RecordSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let parent_state = parent_context
            .map(|cx| cx.span().span_context().trace_state().clone())
            .unwrap_or_default();
        let record_only = parent_state.get(STATE_KEY) == Some(RECORD_ONLY);
        let request_sampled = !record_only
            && self
                .requests
                .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
                .decision
                == SamplingDecision::RecordAndSample;
        let (decision, trace_state) = if name == RECORD_SPAN {
            let state = if request_sampled {
                parent_state
            } else {
                mark_record_only(parent_state)
            };
            (SamplingDecision::RecordAndSample, state)
        } else if request_sampled {
            (SamplingDecision::RecordAndSample, parent_state)
        } else {
            (SamplingDecision::Drop, parent_state)
        };
        SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state,
        }
    }
}

/// Adds the mark in front; a full trace state (32 members) drops its last one, as the
/// W3C spec says. The key and value are valid constants, so inserting cannot fail.
fn mark_record_only(state: TraceState) -> TraceState {
    state.insert(STATE_KEY, RECORD_ONLY).unwrap_or(state)
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        Span as _, SpanContext, SpanId, TraceFlags, Tracer as _, TracerProvider as _,
    };
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    use super::*;

    fn provider(ratio: f64) -> (SdkTracerProvider, InMemorySpanExporter) {
        let spans = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_sampler(RecordSampler::new(ratio))
            .with_simple_exporter(spans.clone())
            .build();
        (provider, spans)
    }

    fn remote_parent(flags: TraceFlags) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            flags,
            true,
            TraceState::default(),
        ))
    }

    /// Server span → lead.submit → lead.deliver under `parent`; returns the exported names.
    fn request(ratio: f64, parent: &Context) -> Vec<String> {
        let (provider, spans) = provider(ratio);
        let tracer = provider.tracer("test");
        let server = tracer.start_with_context("POST /v1/leads", parent);
        let server_cx = parent.with_span(server);
        let submit = tracer.start_with_context(RECORD_SPAN, &server_cx);
        let submit_cx = server_cx.with_span(submit);
        tracer.start_with_context("lead.deliver", &submit_cx).end();
        submit_cx.span().end();
        server_cx.span().end();
        let mut names: Vec<String> = spans
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .map(|span| span.name.into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_unsampled_parent_keeps_only_the_record() {
        let names = request(1.0, &remote_parent(TraceFlags::default()));
        assert_eq!(names, [RECORD_SPAN]);
    }

    #[test]
    fn a_sampled_parent_keeps_the_whole_request() {
        let names = request(1.0, &remote_parent(TraceFlags::SAMPLED));
        assert_eq!(names, ["POST /v1/leads", "lead.deliver", RECORD_SPAN]);
    }

    #[test]
    fn ratio_zero_keeps_only_the_record() {
        assert_eq!(request(0.0, &Context::new()), [RECORD_SPAN]);
    }

    #[test]
    fn ratio_one_keeps_everything_of_a_root_request() {
        assert_eq!(
            request(1.0, &Context::new()),
            ["POST /v1/leads", "lead.deliver", RECORD_SPAN]
        );
    }

    #[test]
    fn the_record_stays_in_the_callers_trace() {
        let (provider, spans) = provider(1.0);
        let tracer = provider.tracer("test");
        let parent = remote_parent(TraceFlags::default());
        tracer.start_with_context(RECORD_SPAN, &parent).end();
        let span = spans.get_finished_spans().unwrap().remove(0);
        assert_eq!(
            span.span_context.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert!(span.span_context.is_sampled());
        assert_eq!(span.span_context.trace_state().get(STATE_KEY), Some("rec"));
    }

    #[test]
    fn a_full_trace_state_still_takes_the_mark() {
        let entries: Vec<(String, String)> =
            (0..32).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        let full = TraceState::from_key_value(entries).unwrap();
        let marked = mark_record_only(full);
        assert_eq!(marked.get(STATE_KEY), Some(RECORD_ONLY));
        assert_eq!(marked.header().split(',').count(), 32);
    }
}
