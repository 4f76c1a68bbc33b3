//! Finished spans written straight into OTLP protobuf, without the generated message
//! types in between: each span into its `Span` message when it ends ([`append_span`]),
//! and a batch of those into one `ExportTraceServiceRequest` ([`EncodedBatch`]).
//!
//! The generic path converts every span into owned proto structs (a `String` for every
//! attribute key and value), then prost walks them once to size each nested message per
//! level above it and once more to write. Here each span's size is computed once, its
//! attributes are written from the SDK's own values, and the request is allocated once
//! at its exact size. The test against `opentelemetry-proto`'s own conversion keeps the
//! two byte-for-byte equivalent after decoding.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LENGTH: u32 = 2;
const FIXED32: u32 = 5;

/// `SpanFlags` bits of the OTLP proto: the parent's remoteness is known, and it is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// The service's resource, written once (it is the same for every batch).
#[derive(Debug, Clone, Default)]
pub struct EncodedResource {
    /// The `Resource` message's body (its attributes).
    body: Vec<u8>,
    schema_url: String,
}

impl EncodedResource {
    pub fn new(resource: &Resource) -> Self {
        let attributes: Vec<KeyValue> = resource
            .iter()
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone()))
            .collect();
        let mut body = Writer::with_capacity(attributes_len(1, &attributes));
        body.attributes(1, &attributes);
        Self {
            body: body.into_inner(),
            schema_url: resource.schema_url().unwrap_or_default().to_owned(),
        }
    }

    fn resource_spans_prefix_len(&self) -> usize {
        message_len(1, self.body.len()) + string_len(3, &self.schema_url)
    }
}

/// Appends one finished span to `out` as a `ScopeSpans.spans` field: its key, its
/// length and the `Span` message, sized once.
pub fn append_span(out: &mut Vec<u8>, span: &SpanData) {
    // Text built on every call: sizing and writing share one.
    let trace_state = span.span_context.trace_state().header();
    let len = span_len(span, &trace_state);
    let mut writer = Writer(std::mem::take(out));
    writer.0.reserve(message_len(2, len));
    writer.message_header(2, len);
    writer.span(span, &trace_state);
    *out = writer.into_inner();
}

/// Spans already encoded by [`append_span`], grouped by instrumentation scope in the
/// order the scopes first appear, each group's spans in the order they came.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    scopes: Vec<ScopeSpans>,
    spans: usize,
    /// Bytes to reserve for the first scope's spans: the size of the batch before, so
    /// a full batch grows its buffer once instead of doubling its way up.
    capacity: usize,
}

#[derive(Debug)]
struct ScopeSpans {
    scope: InstrumentationScope,
    spans: Vec<u8>,
}

impl EncodedBatch {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            capacity: bytes,
            ..Self::default()
        }
    }

    /// A service has a handful of scopes, so a linear search beats hashing each span's.
    pub fn push(&mut self, scope: &InstrumentationScope, encoded_span: &[u8]) {
        let group = match self.scopes.iter().position(|group| &group.scope == scope) {
            Some(found) => &mut self.scopes[found],
            None => {
                let capacity = std::mem::take(&mut self.capacity);
                self.scopes.push(ScopeSpans {
                    scope: scope.clone(),
                    spans: Vec::with_capacity(capacity.max(encoded_span.len())),
                });
                self.scopes.last_mut().expect("just pushed")
            }
        };
        group.spans.extend_from_slice(encoded_span);
        self.spans += 1;
    }

    pub fn spans(&self) -> usize {
        self.spans
    }

    /// The encoded spans' bytes, without the request around them.
    pub fn bytes(&self) -> usize {
        self.scopes.iter().map(|group| group.spans.len()).sum()
    }

    /// The size of this batch's `ResourceSpans` message: the resource, then one
    /// `ScopeSpans` per scope.
    fn resource_spans_len(&self, resource: &EncodedResource) -> usize {
        resource.resource_spans_prefix_len()
            + self
                .scopes
                .iter()
                .map(|group| message_len(2, group.len()))
                .sum::<usize>()
    }

    fn write_resource_spans(&self, out: &mut Writer, resource: &EncodedResource) {
        out.message_header(1, resource.body.len());
        out.raw(&resource.body);
        for group in &self.scopes {
            out.message_header(2, group.len());
            out.message_header(1, scope_len(&group.scope));
            out.scope(&group.scope);
            out.raw(&group.spans);
            out.string(3, group.scope.schema_url().unwrap_or_default());
        }
        out.string(3, &resource.schema_url);
    }
}

/// The `ExportTraceServiceRequest` of `batches`: one `ResourceSpans` per batch (a
/// repeated field, so several batches are their requests one after the other), each
/// holding one `ScopeSpans` per scope, written into a buffer allocated at its exact size.
pub fn request(batches: &[EncodedBatch], resource: &EncodedResource) -> Vec<u8> {
    let lens: Vec<usize> = batches
        .iter()
        .map(|batch| batch.resource_spans_len(resource))
        .collect();
    let mut out = Writer::with_capacity(lens.iter().map(|&len| message_len(1, len)).sum());
    for (batch, &len) in batches.iter().zip(&lens) {
        out.message_header(1, len);
        batch.write_resource_spans(&mut out, resource);
    }
    out.into_inner()
}

impl ScopeSpans {
    /// The `ScopeSpans` message's size.
    fn len(&self) -> usize {
        message_len(1, scope_len(&self.scope))
            + self.spans.len()
            + string_len(3, self.scope.schema_url().unwrap_or_default())
    }
}

fn scope_len(scope: &InstrumentationScope) -> usize {
    string_len(1, scope.name())
        + string_len(2, scope.version().unwrap_or_default())
        + scope
            .attributes()
            .map(|kv| message_len(3, key_value_len(kv)))
            .sum::<usize>()
}

fn span_len(span: &SpanData, trace_state: &str) -> usize {
    let context = &span.span_context;
    bytes_len(1, &context.trace_id().to_bytes())
        + bytes_len(2, &context.span_id().to_bytes())
        + string_len(3, trace_state)
        + parent_len(span.parent_span_id)
        + fixed32_len(16, span_flags(span.parent_span_is_remote, context))
        + string_len(5, &span.name)
        + uint_len(6, kind_code(&span.span_kind))
        + fixed64_len(7, nanos(span.start_time))
        + fixed64_len(8, nanos(span.end_time))
        + attributes_len(9, &span.attributes)
        + uint_len(10, u64::from(span.dropped_attributes_count))
        + span
            .events
            .iter()
            .map(|event| message_len(11, event_len(event)))
            .sum::<usize>()
        + uint_len(12, u64::from(span.events.dropped_count))
        + span
            .links
            .iter()
            .map(|link| message_len(13, link_len(link)))
            .sum::<usize>()
        + uint_len(14, u64::from(span.links.dropped_count))
        + message_len(15, status_len(&span.status))
}

fn event_len(event: &Event) -> usize {
    fixed64_len(1, nanos(event.timestamp))
        + string_len(2, &event.name)
        + attributes_len(3, &event.attributes)
        + uint_len(4, u64::from(event.dropped_attributes_count))
}

fn link_len(link: &Link) -> usize {
    let context = &link.span_context;
    bytes_len(1, &context.trace_id().to_bytes())
        + bytes_len(2, &context.span_id().to_bytes())
        + string_len(3, &context.trace_state().header())
        + attributes_len(4, &link.attributes)
        + uint_len(5, u64::from(link.dropped_attributes_count))
        + fixed32_len(6, span_flags(context.is_remote(), context))
}

fn parent_len(parent: SpanId) -> usize {
    if parent == SpanId::INVALID {
        0
    } else {
        bytes_len(4, &parent.to_bytes())
    }
}

fn status_len(status: &Status) -> usize {
    string_len(2, status_message(status)) + uint_len(3, status_code(status))
}

fn attributes_len(field: u32, attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|kv| message_len(field, key_value_len(kv)))
        .sum()
}

fn key_value_len(kv: &KeyValue) -> usize {
    string_len(1, kv.key.as_str()) + message_len(2, any_value_len(&kv.value))
}

/// `AnyValue` is a oneof: its variant is written even when it holds a default value.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::String(text) => message_len(1, text.as_str().len()),
        Value::Bool(_) => key_len(2) + 1,
        Value::I64(number) => key_len(3) + varint_len(*number as u64),
        Value::F64(_) => key_len(4) + 8,
        Value::Array(array) => message_len(5, array_len(array)),
        _ => 0,
    }
}

fn array_len(array: &Array) -> usize {
    let element = |len: usize| message_len(1, len);
    match array {
        Array::Bool(values) => values.len() * element(key_len(2) + 1),
        Array::I64(values) => values
            .iter()
            .map(|n| element(key_len(3) + varint_len(*n as u64)))
            .sum(),
        Array::F64(values) => values.len() * element(key_len(4) + 8),
        Array::String(values) => values
            .iter()
            .map(|text| element(message_len(1, text.as_str().len())))
            .sum(),
        _ => 0,
    }
}

fn span_flags(parent_is_remote: bool, context: &SpanContext) -> u32 {
    let remote = if parent_is_remote { IS_REMOTE } else { 0 };
    u32::from(context.trace_flags().to_u8()) | HAS_IS_REMOTE | remote
}

/// `Span.SpanKind` of the proto (0 is unspecified, which the SDK never has).
fn kind_code(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn status_code(status: &Status) -> u64 {
    match status {
        Status::Unset => 0,
        Status::Ok => 1,
        Status::Error { .. } => 2,
    }
}

fn status_message(status: &Status) -> &str {
    match status {
        Status::Error { description } => description,
        _ => "",
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn key_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

/// A length-delimited field that is always written (a set message, a oneof variant).
fn message_len(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

/// Scalar fields below are left out at their default value, as proto3 does.
fn bytes_len(field: u32, bytes: &[u8]) -> usize {
    if bytes.is_empty() {
        0
    } else {
        message_len(field, bytes.len())
    }
}

fn string_len(field: u32, text: &str) -> usize {
    bytes_len(field, text.as_bytes())
}

fn uint_len(field: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(field) + varint_len(value)
    }
}

fn fixed64_len(field: u32, value: u64) -> usize {
    if value == 0 { 0 } else { key_len(field) + 8 }
}

fn fixed32_len(field: u32, value: u32) -> usize {
    if value == 0 { 0 } else { key_len(field) + 4 }
}

/// Writes fields in the shapes the `*_len` functions above size.
struct Writer(Vec<u8>);

impl Writer {
    fn with_capacity(len: usize) -> Self {
        Self(Vec::with_capacity(len))
    }

    fn into_inner(self) -> Vec<u8> {
        self.0
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn key(&mut self, field: u32, wire_type: u32) {
        self.varint(u64::from((field << 3) | wire_type));
    }

    fn message_header(&mut self, field: u32, len: usize) {
        self.key(field, LENGTH);
        self.varint(len as u64);
    }

    fn always_bytes(&mut self, field: u32, bytes: &[u8]) {
        self.message_header(field, bytes.len());
        self.raw(bytes);
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.always_bytes(field, bytes);
        }
    }

    fn string(&mut self, field: u32, text: &str) {
        self.bytes(field, text.as_bytes());
    }

    fn uint(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.key(field, VARINT);
            self.varint(value);
        }
    }

    fn fixed64(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.key(field, FIXED64);
            self.raw(&value.to_le_bytes());
        }
    }

    fn fixed32(&mut self, field: u32, value: u32) {
        if value != 0 {
            self.key(field, FIXED32);
            self.raw(&value.to_le_bytes());
        }
    }

    fn scope(&mut self, scope: &InstrumentationScope) {
        self.string(1, scope.name());
        self.string(2, scope.version().unwrap_or_default());
        for kv in scope.attributes() {
            self.key_value(3, kv);
        }
    }

    fn span(&mut self, span: &SpanData, trace_state: &str) {
        let context = &span.span_context;
        self.bytes(1, &context.trace_id().to_bytes());
        self.bytes(2, &context.span_id().to_bytes());
        self.string(3, trace_state);
        if span.parent_span_id != SpanId::INVALID {
            self.bytes(4, &span.parent_span_id.to_bytes());
        }
        self.string(5, &span.name);
        self.uint(6, kind_code(&span.span_kind));
        self.fixed64(7, nanos(span.start_time));
        self.fixed64(8, nanos(span.end_time));
        self.attributes(9, &span.attributes);
        self.uint(10, u64::from(span.dropped_attributes_count));
        for event in span.events.iter() {
            self.message_header(11, event_len(event));
            self.fixed64(1, nanos(event.timestamp));
            self.string(2, &event.name);
            self.attributes(3, &event.attributes);
            self.uint(4, u64::from(event.dropped_attributes_count));
        }
        self.uint(12, u64::from(span.events.dropped_count));
        for link in span.links.iter() {
            let context = &link.span_context;
            self.message_header(13, link_len(link));
            self.bytes(1, &context.trace_id().to_bytes());
            self.bytes(2, &context.span_id().to_bytes());
            self.string(3, &context.trace_state().header());
            self.attributes(4, &link.attributes);
            self.uint(5, u64::from(link.dropped_attributes_count));
            self.fixed32(6, span_flags(context.is_remote(), context));
        }
        self.uint(14, u64::from(span.links.dropped_count));
        self.message_header(15, status_len(&span.status));
        self.string(2, status_message(&span.status));
        self.uint(3, status_code(&span.status));
        self.fixed32(16, span_flags(span.parent_span_is_remote, context));
    }

    fn attributes(&mut self, field: u32, attributes: &[KeyValue]) {
        for kv in attributes {
            self.key_value(field, kv);
        }
    }

    fn key_value(&mut self, field: u32, kv: &KeyValue) {
        self.message_header(field, key_value_len(kv));
        self.string(1, kv.key.as_str());
        self.message_header(2, any_value_len(&kv.value));
        self.any_value(&kv.value);
    }

    fn any_value(&mut self, value: &Value) {
        match value {
            Value::String(text) => self.always_bytes(1, text.as_str().as_bytes()),
            Value::Bool(flag) => {
                self.key(2, VARINT);
                self.varint(u64::from(*flag));
            }
            Value::I64(number) => {
                self.key(3, VARINT);
                self.varint(*number as u64);
            }
            Value::F64(number) => {
                self.key(4, FIXED64);
                self.raw(&number.to_bits().to_le_bytes());
            }
            Value::Array(array) => {
                self.message_header(5, array_len(array));
                self.array(array);
            }
            _ => {}
        }
    }

    fn array(&mut self, array: &Array) {
        match array {
            Array::Bool(values) => self.elements(values.iter().copied().map(Value::Bool)),
            Array::I64(values) => self.elements(values.iter().copied().map(Value::I64)),
            Array::F64(values) => self.elements(values.iter().copied().map(Value::F64)),
            Array::String(values) => {
                for text in values {
                    self.message_header(1, message_len(1, text.as_str().len()));
                    self.always_bytes(1, text.as_str().as_bytes());
                }
            }
            _ => {}
        }
    }

    fn elements(&mut self, values: impl Iterator<Item = Value>) {
        for value in values {
            self.message_header(1, any_value_len(&value));
            self.any_value(&value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::trace::{
        Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;

    use opentelemetry::StringValue;

    use super::*;

    fn context(trace: u128, span: u64, flags: TraceFlags, remote: bool) -> SpanContext {
        let state = TraceState::from_key_value([("leadlab", "rec"), ("vendor", "x")]).unwrap();
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            flags,
            remote,
            state,
        )
    }

    fn span(name: &'static str, scope: &InstrumentationScope, detailed: bool) -> SpanData {
        let at = UNIX_EPOCH + Duration::from_nanos(1_764_633_600_123_456_789);
        let mut events = SpanEvents::default();
        let mut links = SpanLinks::default();
        if detailed {
            events.events.push(Event::new(
                "retry",
                at,
                vec![KeyValue::new("attempt", 2), KeyValue::new("empty", "")],
                1,
            ));
            events.dropped_count = 3;
            let mut link = Link::with_context(context(7, 8, TraceFlags::default(), true));
            link.attributes = vec![KeyValue::new("link.kind", "follows")];
            links.links.push(link);
            links.dropped_count = 1;
        }
        SpanData {
            span_context: context(
                0x4bf9_2f35_77b3_4da6,
                0x00f0_67aa,
                TraceFlags::SAMPLED,
                false,
            ),
            parent_span_id: if detailed {
                SpanId::from(0x1234)
            } else {
                SpanId::INVALID
            },
            parent_span_is_remote: detailed,
            span_kind: if detailed {
                SpanKind::Server
            } else {
                SpanKind::Internal
            },
            name: Cow::Borrowed(name),
            start_time: at,
            end_time: at + Duration::from_micros(1_500),
            attributes: vec![
                KeyValue::new("lead.source", "quiz"),
                KeyValue::new("lead.source.owned", String::from("funnel_page")),
                KeyValue::new("http.response.status_code", 201_i64),
                KeyValue::new("negative", -5_i64),
                KeyValue::new("zero", 0_i64),
                KeyValue::new("lead.replayed", false),
                KeyValue::new("ratio", 0.25),
                KeyValue::new("empty", ""),
                KeyValue::new(
                    "strings",
                    Value::Array(vec![StringValue::from("a"), "".into()].into()),
                ),
                KeyValue::new("flags", Value::Array(vec![true, false].into())),
                KeyValue::new("numbers", Value::Array(vec![1_i64, 300].into())),
                KeyValue::new("reals", Value::Array(vec![1.5, 0.0].into())),
            ],
            dropped_attributes_count: u32::from(detailed),
            events,
            links,
            status: if detailed {
                Status::error("upstream said 503")
            } else {
                Status::Ok
            },
            instrumentation_scope: scope.clone(),
        }
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "lead-lab"),
                KeyValue::new("service.instance.id", "i-1"),
            ])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.30.0")
            .build()
    }

    /// What `opentelemetry-proto`'s own conversion sends for the same batch.
    fn generic(spans: &[SpanData], resource: &Resource) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans.to_vec(),
                &ResourceAttributesWithSchema::from(resource),
            ),
        }
    }

    /// The spans encoded one by one, as the processor does at their end.
    fn batch_of(spans: &[SpanData]) -> EncodedBatch {
        let mut batch = EncodedBatch::default();
        let mut scratch = Vec::new();
        for span in spans {
            scratch.clear();
            append_span(&mut scratch, span);
            batch.push(&span.instrumentation_scope, &scratch);
        }
        assert_eq!(batch.spans(), spans.len());
        batch
    }

    /// The spans' batch sent as one request.
    fn encoded(spans: &[SpanData], resource: &Resource) -> Vec<u8> {
        request(&[batch_of(spans)], &EncodedResource::new(resource))
    }

    #[test]
    fn decodes_to_what_the_generic_conversion_sends() {
        let ours = InstrumentationScope::builder("lead-lab")
            .with_version("0.1.0")
            .with_attributes([KeyValue::new("scope.attr", 1_i64)])
            .build();
        let other = InstrumentationScope::builder("other")
            .with_schema_url("https://example.com/s")
            .build();
        let spans = vec![
            span("POST /v1/leads", &ours, true),
            span("lead.submit", &ours, false),
            span("analyze", &other, false),
            span("lead.deliver", &ours, true),
        ];
        let resource = resource();
        let bytes = encoded(&spans, &resource);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, generic(&spans, &resource));
        assert_eq!(decoded.resource_spans[0].scope_spans.len(), 2);
    }

    #[test]
    fn sizes_the_buffer_exactly() {
        let scope = InstrumentationScope::builder("lead-lab").build();
        let spans: Vec<SpanData> = (0..50).map(|i| span("s", &scope, i % 2 == 0)).collect();
        let resource = resource();
        let bytes = encoded(&spans, &resource);
        assert_eq!(bytes.len(), bytes.capacity());
        assert_eq!(bytes.len(), generic(&spans, &resource).encoded_len());
    }

    /// A backlog goes as one request of several batches: a `ResourceSpans` each, exactly
    /// what each batch alone would send, in one buffer of the exact size.
    #[test]
    fn several_batches_make_one_request_of_their_resource_spans() {
        let scope = InstrumentationScope::builder("lead-lab").build();
        let first: Vec<SpanData> = (0..3).map(|i| span("a", &scope, i == 0)).collect();
        let second = vec![span("b", &scope, true)];
        let resource = resource();
        let bytes = request(
            &[batch_of(&first), batch_of(&second)],
            &EncodedResource::new(&resource),
        );
        assert_eq!(bytes.len(), bytes.capacity());
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let expected: Vec<_> = [generic(&first, &resource), generic(&second, &resource)]
            .into_iter()
            .flat_map(|request| request.resource_spans)
            .collect();
        assert_eq!(decoded.resource_spans, expected);
    }

    #[test]
    fn an_empty_batch_is_one_resource_without_spans() {
        let resource = resource();
        let bytes = encoded(&[], &resource);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, generic(&[], &resource));
    }

    #[test]
    fn varints_are_sized_like_they_are_written() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Writer::with_capacity(10);
            out.varint(value);
            assert_eq!(out.into_inner().len(), varint_len(value), "{value}");
        }
    }
}
