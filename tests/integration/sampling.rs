//! The record survives whatever clients sample or send: `lead.submit` is exported
//! whatever the caller's traceparent flag or the configured ratio; every other span
//! follows the request's sampling; attempts refused before their body is read still
//! name their source; junk methods and paths cannot mint new span names or series.

use serde_json::json;

use crate::app::TestApp;
use crate::ingest::{Row, expect_accepted, expect_refused, lead, rows_of};

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Named {
    name: String,
    spans: u64,
}

/// Span names and counts of the app's spans in `otel_traces`, once `records` lead.submit
/// spans have arrived.
async fn span_names(app: &TestApp, records: u64) -> Vec<Named> {
    app.rows_when(
        "the app's spans",
        "SELECT SpanName AS name, count() AS spans FROM otel_traces \
         WHERE ServiceName = ? GROUP BY name ORDER BY name",
        |names: &[Named]| {
            names
                .iter()
                .any(|n| n.name == "lead.submit" && n.spans >= records)
        },
    )
    .await
}

fn count(names: &[Named], name: &str) -> u64 {
    names.iter().find(|n| n.name == name).map_or(0, |n| n.spans)
}

async fn post_under_parent(app: &TestApp, flag: &str) -> String {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let answer = app
        .http
        .post(app.url("/v1/leads"))
        .bearer_auth(&app.keys.quiz)
        .header(
            "traceparent",
            format!("00-{trace_id}-00f067aa0ba902b7-{flag}"),
        )
        .json(&lead("quiz", "/quiz/sampled"))
        .send()
        .await
        .unwrap();
    let body = expect_accepted(answer).await;
    assert_eq!(body["trace_id"], trace_id.as_str(), "the caller's trace");
    trace_id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_sampling_client_still_leaves_every_attempt_on_record() {
    let mut app = TestApp::spawn().await;
    let mut unsampled = Vec::new();
    for _ in 0..5 {
        unsampled.push(post_under_parent(&app, "00").await);
    }
    let sampled = post_under_parent(&app, "01").await;
    app.stop().await;

    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    struct Traced {
        trace_id: String,
        names: Vec<String>,
    }
    let traces: Vec<Traced> = app
        .rows_when(
            "six recorded attempts",
            "SELECT TraceId AS trace_id, arraySort(groupArray(SpanName)) AS names \
             FROM otel_traces WHERE ServiceName = ? GROUP BY trace_id",
            |t: &[Traced]| {
                t.iter()
                    .filter(|t| t.names.contains(&"lead.submit".to_owned()))
                    .count()
                    >= 6
            },
        )
        .await;
    for trace_id in &unsampled {
        let trace = traces.iter().find(|t| &t.trace_id == trace_id).unwrap();
        assert_eq!(trace.names, ["lead.submit"], "flag 00: only the record");
    }
    let trace = traces.iter().find(|t| t.trace_id == sampled).unwrap();
    assert_eq!(
        trace.names,
        ["POST /v1/leads", "lead.submit"],
        "flag 01: all"
    );
    assert_eq!(
        rows_of(&app, 6).await.len(),
        6,
        "six rows in lead_submissions"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn at_ratio_zero_every_attempt_is_recorded_and_no_request_span_exported() {
    let mut app = TestApp::spawn_with(|s| s.otel.trace_sample_ratio = 0.0).await;
    for page in ["/a", "/b", "/c", "/d"] {
        expect_accepted(
            app.post_lead(Some(&app.keys.quiz), &lead("quiz", page))
                .await,
        )
        .await;
    }
    let refused = app
        .post_lead(Some(&app.keys.quiz), &json!({"name": 1}))
        .await;
    assert_eq!(refused.status(), 422, "a refused attempt is recorded too");
    app.stop().await;
    let names = span_names(&app, 5).await;
    assert_eq!(count(&names, "lead.submit"), 5);
    assert_eq!(
        names.iter().filter(|n| n.name != "lead.submit").count(),
        0,
        "no server span at ratio 0: {names:?}"
    );
    assert_eq!(rows_of(&app, 5).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn attempts_refused_before_their_body_is_read_name_their_source() {
    let mut app = TestApp::spawn().await;
    let k = app.keys.clone();
    let form_path = "/v1/forms/pricing-contact";
    let form = app
        .post_bytes(form_path, Some(&k.web_form), "text/plain", "name=Grace")
        .await;
    expect_refused(form, 415, "unsupported_media_type").await;
    let urlencoded = "application/x-www-form-urlencoded";
    let keyless_form = app
        .post_bytes(form_path, None, urlencoded, vec![b'a'; 64 * 1024])
        .await;
    expect_refused(keyless_form, 413, "payload_too_large").await;
    let leads = app
        .post_bytes("/v1/leads", Some(&k.quiz), "application/json", "{not json")
        .await;
    expect_refused(leads, 400, "invalid_payload").await;
    app.stop().await;

    #[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
    struct Attributed {
        source: String,
        page: String,
        form_id: String,
        reason: String,
    }
    let rows: Vec<Attributed> = app
        .rows_when(
            "three rows",
            "SELECT source, page, form_id, reason FROM lead_submissions \
             WHERE service = ? ORDER BY reason",
            |r: &[Attributed]| r.len() >= 3,
        )
        .await;
    let row = |source: &str, page: &str, form_id: &str, reason: &str| Attributed {
        source: source.into(),
        page: page.into(),
        form_id: form_id.into(),
        reason: reason.into(),
    };
    assert_eq!(
        rows,
        [
            row("quiz", "", "", "invalid_payload"),
            row(
                "web_form",
                "/pricing",
                "pricing-contact",
                "payload_too_large"
            ),
            row(
                "web_form",
                "/pricing",
                "pricing-contact",
                "unsupported_media_type"
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn junk_methods_and_paths_share_a_bounded_set_of_names_and_series() {
    let mut app = TestApp::spawn().await;
    for i in 0..200 {
        let method = reqwest::Method::from_bytes(format!("JUNK{i}").as_bytes()).unwrap();
        let path = match i % 4 {
            0 => format!("/wp-admin/{i}.php"),
            1 => format!("/v1/forms/form-{i}/extra/{i}"),
            2 => format!("/v1/analyses/{i}"),
            _ => format!("/v1/leads/{i}"),
        };
        let answer = app
            .http
            .request(method, app.url(&path))
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_client_error(),
            "{path}: {}",
            answer.status()
        );
    }
    let real = app
        .post_lead(Some(&app.keys.quiz), &lead("quiz", "/quiz/real"))
        .await;
    assert_eq!(real.status(), 201);
    app.stop().await;

    let names = span_names(&app, 1).await;
    let junk: Vec<&str> = names
        .iter()
        .map(|n| n.name.as_str())
        .filter(|n| *n != "lead.submit" && *n != "POST /v1/leads")
        .collect();
    assert!(
        junk.iter().all(|n| n.starts_with("_OTHER ")),
        "junk methods are _OTHER: {junk:?}"
    );
    assert!(junk.len() <= 3, "span names of 200 junk requests: {junk:?}");

    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    struct Series {
        method: String,
        route: String,
    }
    let series: Vec<Series> = app
        .rows_when(
            "the request duration series",
            "SELECT DISTINCT Attributes['http.request.method'] AS method, \
             Attributes['http.route'] AS route FROM otel_metrics_histogram \
             WHERE ServiceName = ? AND MetricName = 'http.server.request.duration'",
            |s: &[Series]| s.iter().any(|s| s.method == "POST"),
        )
        .await;
    assert!(series.len() <= 4, "series of 201 requests: {series:?}");
    assert!(
        series
            .iter()
            .all(|s| ["_OTHER", "POST"].contains(&s.method.as_str()) && !s.route.contains("form-")),
        "{series:?}"
    );
    // The real attempt is recorded as usual.
    let rows: Vec<Row> = rows_of(&app, 1).await;
    assert_eq!(rows.len(), 1);
}
