//! A server span and a duration metric for every HTTP request, and W3C trace context on
//! outgoing requests.
//!
//! poem's own `opentelemetry` feature is built for opentelemetry 0.30, hence this module.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use opentelemetry::context::FutureExt as _;
use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry::trace::{SpanKind, SpanRef, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, StringValue, global};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::trace::SdkTracer;
use poem::http::{HeaderMap, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, PathPattern, Request, Response};
use tracing::instrument::WithSubscriber as _;

use super::metrics::seconds_histogram;

/// Routes with an id: the raw prefix and the template to report instead of the id (raw
/// ids in span names and metric attributes would make every request its own series).
const ID_SEGMENTS: [(&str, &str); 3] = [
    ("/v1/forms/", "/v1/forms/{form_id}"),
    ("/v1/analyses/", "/v1/analyses/{id}"),
    ("/v1/summaries/", "/v1/summaries/{day}"),
];

/// Middleware giving every request a server span, continuing the caller's trace when
/// the request carries `traceparent`. Handlers run with the span active, so
/// `opentelemetry::Context::current()` in a handler is the parent for its child spans,
/// and under the app's `tracing` dispatcher, so their `tracing` spans and events are
/// the app's spans and log records.
pub struct ServerSpans {
    tracer: Arc<SdkTracer>,
    dispatch: tracing::Dispatch,
    duration: Histogram<f64>,
}

impl ServerSpans {
    /// `tracer`, `meter` and `dispatch` of the app: `Telemetry::tracer()`,
    /// `Telemetry::meter()` and `Telemetry::dispatch()`.
    pub fn new(tracer: SdkTracer, meter: &Meter, dispatch: tracing::Dispatch) -> Self {
        Self {
            tracer: Arc::new(tracer),
            dispatch,
            duration: seconds_histogram(
                meter,
                "http.server.request.duration",
                "Duration of HTTP server requests",
            ),
        }
    }
}

impl<E: Endpoint> Middleware<E> for ServerSpans {
    type Output = ServerSpansEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        ServerSpansEndpoint {
            tracer: self.tracer.clone(),
            dispatch: self.dispatch.clone(),
            duration: self.duration.clone(),
            inner,
        }
    }
}

/// The endpoint [`ServerSpans`] wraps around an app.
pub struct ServerSpansEndpoint<E> {
    tracer: Arc<SdkTracer>,
    dispatch: tracing::Dispatch,
    duration: Histogram<f64>,
    inner: E,
}

impl<E: Endpoint> Endpoint for ServerSpansEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let method = method_of(req.method());
        let path_route = template_of_path(req.uri().path());
        let parent = global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(req.headers()))
        });
        // Named after the route when the path already says it; otherwise after the
        // method alone until routing is done (no name formatted twice).
        let name: Cow<'static, str> = match path_route {
            Some(template) => format!("{method} {template}").into(),
            None => method.into(),
        };
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("http.request.method", method)])
            .start_with_context(&*self.tracer, &parent);
        let cx = parent.with_span(span);

        let result = self
            .inner
            .call(req)
            .with_context(cx.clone())
            .with_subscriber(self.dispatch.clone())
            .await
            .map(IntoResponse::into_response);

        let (status, matched) = match &result {
            Ok(response) => (response.status(), response.data::<PathPattern>()),
            Err(error) => (error.status(), error.data::<PathPattern>()),
        };
        let route = match (path_route, matched) {
            (Some(template), _) => StringValue::from(template),
            (None, Some(pattern)) => route_of_pattern(&pattern.0),
            (None, None) => StringValue::from(UNMATCHED_ROUTE),
        };
        end_span(&cx.span(), method, &route, path_route.is_none(), status);
        self.duration.record(
            started.elapsed().as_secs_f64(),
            &[
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.route", route),
                KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
            ],
        );
        result
    }
}

/// Names the span after the route (`rename`: known only now that routing is done),
/// records the status, and ends it. 5xx is an error of ours; 4xx is the caller's and
/// stays unset. An unsampled span records nothing, so nothing is built for it.
fn end_span(
    span: &SpanRef<'_>,
    method: &'static str,
    route: &StringValue,
    rename: bool,
    status: StatusCode,
) {
    if span.is_recording() {
        if rename {
            span.update_name(format!("{method} {}", route.as_str()));
        }
        span.set_attributes([
            KeyValue::new("url.path", route.clone()),
            KeyValue::new("http.route", route.clone()),
            KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
        ]);
        if status.is_server_error() {
            span.set_status(Status::error(format!("HTTP {}", status.as_u16())));
        }
    }
    span.end();
}

/// What a request outside the known routes is reported as: one fixed value, so
/// scanners probing random paths cannot create unbounded span names and metric series.
const UNMATCHED_ROUTE: &str = "(unmatched)";

/// The HTTP methods of RFC 9110 and PATCH; anything else is `_OTHER`, as the OTel
/// semantic conventions say, so junk methods cannot mint new series either.
fn method_of(method: &poem::http::Method) -> &'static str {
    use poem::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

/// The template of a path with an id in it, when the path has exactly the route's
/// shape: the framework's own pattern names its parameters `param0`, and a raw tail
/// after the id would be request text.
fn template_of_path(path: &str) -> Option<&'static str> {
    ID_SEGMENTS.iter().find_map(|(prefix, template)| {
        path.strip_prefix(prefix)
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(|_| *template)
    })
}

/// poem's route pattern in OpenAPI form: `/v1/forms/:form_id` becomes
/// `/v1/forms/{form_id}` (also `:name<regex>` and `*name`), matching the API docs. A
/// pattern without parameters (`/v1/leads`) is shared, not copied.
fn route_of_pattern(pattern: &Arc<str>) -> StringValue {
    if !pattern.contains([':', '*']) {
        return StringValue::from(pattern.clone());
    }
    let route: String = pattern
        .split('/')
        .map(|segment| {
            match segment
                .strip_prefix(':')
                .or_else(|| segment.strip_prefix('*'))
            {
                Some(param) => format!("{{{}}}", param.split('<').next().unwrap_or(param)),
                None => segment.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    route.into()
}

/// Hex trace id of the active span, for responses and logs; all zeros outside a span.
/// In a handler behind [`ServerSpans`] that is the request's trace.
pub fn current_trace_id() -> String {
    Context::map_current(|cx| cx.span().span_context().trace_id().to_string())
}

/// Writes `traceparent` (and `tracestate`) for the span in `cx` into outgoing headers.
/// `poem::http::HeaderMap` and reqwest's `HeaderMap` are the same `http` 1.x type, so
/// this serves the webhook delivery and the simulator alike.
pub fn inject_trace_context(cx: &Context, headers: &mut HeaderMap) {
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(cx, &mut HeaderInjector(headers));
    });
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
    use opentelemetry_sdk::metrics::SdkMeterProvider;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use poem::endpoint::{make, make_sync};
    use poem::test::TestClient;
    use poem::{EndpointExt, Route, post};

    use super::*;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT_ID: &str = "00f067aa0ba902b7";

    struct Harness {
        spans: InMemorySpanExporter,
        tracer: SdkTracer,
        meter: Meter,
    }

    impl Harness {
        fn new() -> Self {
            global::set_text_map_propagator(TraceContextPropagator::new());
            let spans = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(spans.clone())
                .build();
            Self {
                spans,
                tracer: provider.tracer("test"),
                meter: SdkMeterProvider::default().meter("test"),
            }
        }

        fn middleware(&self) -> ServerSpans {
            ServerSpans::new(self.tracer.clone(), &self.meter, tracing::Dispatch::none())
        }

        fn span(&self, name: &str) -> SpanData {
            let spans = self.spans.get_finished_spans().unwrap();
            spans
                .into_iter()
                .find(|span| span.name == name)
                .unwrap_or_else(|| panic!("no span named {name}"))
        }
    }

    fn attribute(span: &SpanData, key: &str) -> Option<opentelemetry::Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    }

    /// `POST /v1/leads` starts a child span from the current context and answers with
    /// the current trace id.
    fn leads_app(harness: &Harness) -> impl Endpoint + use<> {
        let tracer = harness.tracer.clone();
        Route::new()
            .at(
                "/v1/leads",
                post(make(move |_req| {
                    let _child = tracer.start_with_context("validate", &Context::current());
                    async { current_trace_id() }
                })),
            )
            .with(harness.middleware())
    }

    #[tokio::test]
    async fn continues_the_callers_trace() {
        let harness = Harness::new();
        let cli = TestClient::new(leads_app(&harness));

        cli.post("/v1/leads")
            .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
            .send()
            .await
            .assert_text(TRACE_ID)
            .await;

        let server = harness.span("POST /v1/leads");
        assert_eq!(server.span_kind, SpanKind::Server);
        assert_eq!(
            server.span_context.trace_id(),
            TraceId::from_hex(TRACE_ID).unwrap()
        );
        assert_eq!(server.parent_span_id, SpanId::from_hex(PARENT_ID).unwrap());
        assert_eq!(
            attribute(&server, "http.response.status_code"),
            Some(200.into())
        );
        assert_eq!(attribute(&server, "http.route"), Some("/v1/leads".into()));
        assert_eq!(
            attribute(&server, "http.request.method"),
            Some("POST".into())
        );
        let child = harness.span("validate");
        assert_eq!(
            child.span_context.trace_id(),
            server.span_context.trace_id()
        );
        assert_eq!(child.parent_span_id, server.span_context.span_id());
    }

    #[tokio::test]
    async fn starts_a_trace_without_traceparent() {
        let harness = Harness::new();
        let cli = TestClient::new(leads_app(&harness));

        let response = cli.post("/v1/leads").send().await;
        response.assert_status_is_ok();
        let trace_id = response.0.into_body().into_string().await.unwrap();

        let server = harness.span("POST /v1/leads");
        assert!(server.span_context.is_valid());
        assert_eq!(server.parent_span_id, SpanId::INVALID);
        assert_eq!(trace_id, server.span_context.trace_id().to_string());
    }

    #[tokio::test]
    async fn names_routed_requests_by_route_template() {
        let harness = Harness::new();
        let app = Route::new()
            .at("/v1/forms/:form_id", post(make_sync(|_| "ok")))
            .with(harness.middleware());

        TestClient::new(app)
            .post("/v1/forms/abc")
            .send()
            .await
            .assert_status_is_ok();

        let span = harness.span("POST /v1/forms/{form_id}");
        assert_eq!(
            attribute(&span, "url.path"),
            Some("/v1/forms/{form_id}".into())
        );
    }

    #[tokio::test]
    async fn names_unrouted_requests_without_ids() {
        let harness = Harness::new();
        let app = make_sync(|_| StatusCode::NOT_FOUND).with(harness.middleware());

        TestClient::new(app)
            .post("/v1/forms/abc")
            .send()
            .await
            .assert_status(StatusCode::NOT_FOUND);

        let span = harness.span("POST /v1/forms/{form_id}");
        assert_eq!(span.status, Status::Unset);
        assert_eq!(
            attribute(&span, "http.response.status_code"),
            Some(404.into())
        );
    }

    #[tokio::test]
    async fn server_errors_mark_the_span_as_error() {
        let harness = Harness::new();
        let app = Route::new()
            .at(
                "/v1/leads",
                post(make_sync(|_| StatusCode::INTERNAL_SERVER_ERROR)),
            )
            .with(harness.middleware());

        TestClient::new(app)
            .post("/v1/leads")
            .send()
            .await
            .assert_status(StatusCode::INTERNAL_SERVER_ERROR);

        let span = harness.span("POST /v1/leads");
        assert!(matches!(span.status, Status::Error { .. }));
    }

    #[test]
    fn id_segments_become_parameters() {
        assert_eq!(
            template_of_path("/v1/forms/abc"),
            Some("/v1/forms/{form_id}")
        );
        assert_eq!(
            template_of_path("/v1/analyses/42"),
            Some("/v1/analyses/{id}")
        );
        assert_eq!(
            template_of_path("/v1/summaries/2025-01-31"),
            Some("/v1/summaries/{day}")
        );
    }

    #[test]
    fn other_paths_have_no_template() {
        assert_eq!(template_of_path("/v1/forms/"), None);
        assert_eq!(template_of_path("/v1/forms/abc/leads"), None, "a raw tail");
        assert_eq!(template_of_path("/wp-admin/setup.php"), None);
    }

    #[test]
    fn unknown_methods_are_other() {
        use poem::http::Method;
        assert_eq!(method_of(&Method::POST), "POST");
        assert_eq!(method_of(&Method::from_bytes(b"BREW").unwrap()), "_OTHER");
    }

    #[tokio::test]
    async fn a_junk_method_on_a_junk_path_is_bounded() {
        let harness = Harness::new();
        let app = make_sync(|_| StatusCode::NOT_FOUND).with(harness.middleware());
        let cli = TestClient::new(app);
        cli.request(
            poem::http::Method::from_bytes(b"XYZZY").unwrap(),
            "/v1/forms/a/b/c",
        )
        .send()
        .await
        .assert_status(StatusCode::NOT_FOUND);
        let span = harness.span("_OTHER (unmatched)");
        assert_eq!(
            attribute(&span, "http.request.method"),
            Some("_OTHER".into())
        );
    }

    #[test]
    fn poem_patterns_become_templates() {
        let route = |pattern: &str| route_of_pattern(&Arc::from(pattern)).as_str().to_owned();
        assert_eq!(route("/v1/forms/:form_id"), "/v1/forms/{form_id}");
        assert_eq!(route("/v1/days/:day<\\d+>/x"), "/v1/days/{day}/x");
        assert_eq!(route("/static/*path"), "/static/{path}");
        assert_eq!(route("/v1/leads"), "/v1/leads");
    }

    #[test]
    fn injects_traceparent() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let parent = global::get_text_map_propagator(|propagator| {
            let mut headers = HeaderMap::new();
            headers.insert(
                "traceparent",
                format!("00-{TRACE_ID}-{PARENT_ID}-01").parse().unwrap(),
            );
            propagator.extract(&HeaderExtractor(&headers))
        });

        let mut outgoing = HeaderMap::new();
        inject_trace_context(&parent, &mut outgoing);

        assert_eq!(
            outgoing["traceparent"],
            format!("00-{TRACE_ID}-{PARENT_ID}-01")
        );
    }
}
