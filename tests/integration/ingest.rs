//! The ingest service end to end: HTTP in, `lead.submit` spans through the collector,
//! rows in `lead_submissions`, metric points in `otel_metrics_sum`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::app::{FakeCrm, TestApp};
use crate::support::{ARRIVAL, eventually, logged, unique_name};

/// A lead that passes validation, with a unique email so no test dedups another.
pub fn lead(source: &str, page: &str) -> Value {
    json!({
        "name": "Ada Lovelace",
        "email": format!("{}@example.com", unique_name("ada")),
        "phone": "+44 20 7946 0018",
        "company": "Analytical Engines",
        "source": source,
        "page": page,
        "consent": true,
        "utm": {"source": "newsletter", "medium": "email", "campaign": "autumn"}
    })
}

pub fn with(mut lead: Value, key: &str, value: Value) -> Value {
    lead[key] = value;
    lead
}

fn without(mut lead: Value, key: &str) -> Value {
    lead.as_object_mut().unwrap().remove(key);
    lead
}

/// One row of `lead_submissions`, the part a test can predict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, clickhouse::Row, serde::Deserialize)]
pub struct Row {
    pub endpoint: String,
    pub source: String,
    pub page: String,
    pub outcome: String,
    pub reason: String,
    pub field: String,
    pub http_status: u16,
}

fn row(
    endpoint: &str,
    source: &str,
    page: &str,
    outcome: &str,
    reason: &str,
    field: &str,
    status: u16,
) -> Row {
    Row {
        endpoint: endpoint.into(),
        source: source.into(),
        page: page.into(),
        outcome: outcome.into(),
        reason: reason.into(),
        field: field.into(),
        http_status: status,
    }
}

pub async fn rows_of(app: &TestApp, expected: usize) -> Vec<Row> {
    let mut rows: Vec<Row> = app
        .rows_when(
            "the app's lead.submit spans in lead_submissions",
            "SELECT endpoint, source, page, outcome, reason, field, http_status \
             FROM lead_submissions WHERE service = ?",
            |rows: &[Row]| rows.len() >= expected,
        )
        .await;
    rows.sort();
    rows
}

/// Sends `body` and checks the answer: status, the one JSON shape, and the reason.
pub async fn expect(
    response: reqwest::Response,
    status: u16,
    outcome: &str,
    reason: Option<&str>,
) -> Value {
    let got = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").cloned();
    let body: Value = response.json().await.expect("every answer is JSON");
    assert_eq!(got, status, "{body}");
    assert_eq!(body["outcome"], outcome, "{body}");
    assert_eq!(body["reason"].as_str(), reason, "{body}");
    let trace_id = body["trace_id"].as_str().unwrap();
    assert!(trace_id.len() == 32 && trace_id != "0".repeat(32), "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty());
    assert_eq!(body["lead_id"].is_string(), outcome == "accepted", "{body}");
    if status == 429 {
        assert!(retry_after.is_some(), "429 carries Retry-After");
    }
    body
}

/// Checks an answer is the one accepted shape (201).
pub async fn expect_accepted(response: reqwest::Response) -> Value {
    expect(response, 201, "accepted", None).await
}

/// Checks an answer is a refusal with this status and reason.
pub async fn expect_refused(response: reqwest::Response, status: u16, reason: &str) -> Value {
    expect(response, status, "rejected", Some(reason)).await
}

async fn raw(app: &TestApp, key: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    app.post_bytes("/v1/leads", Some(key), content_type, body)
        .await
}

async fn form(app: &TestApp, form_id: &str, key: &str, body: &str) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/v1/forms/{form_id}")))
        .header("x-api-key", key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// What a test expects of each attempt: its answer and, later, its row.
#[derive(Default)]
struct Ledger {
    rows: Vec<Row>,
}

impl Ledger {
    /// Checks the answer against `row` (status, outcome, reason, field) and keeps the row.
    async fn expect(&mut self, response: reqwest::Response, row: Row) -> Value {
        let reason = Some(row.reason.as_str()).filter(|r| !r.is_empty());
        let body = expect(response, row.http_status, &row.outcome, reason).await;
        let field = body["field"].as_str().unwrap_or_default();
        assert_eq!(field, row.field, "{body}");
        self.rows.push(row);
        body
    }
}

fn accepted(endpoint: &str, source: &str, page: &str) -> Row {
    row(endpoint, source, page, "accepted", "", "", 201)
}

fn rejected(source: &str, page: &str, reason: &str, field: &str, status: u16) -> Row {
    row("leads", source, page, "rejected", reason, field, status)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_outcome_and_reason_is_answered_recorded_once_and_counted() {
    let crm = FakeCrm::start().await;
    let mut app = TestApp::spawn_with(|s| crm.configure(s)).await;
    let k = app.keys.clone();
    let mut ledger = Ledger::default();
    let quiz = |page: &str| lead("quiz", page);

    // Accepted through each endpoint.
    let answer = app.post_lead(Some(&k.quiz), &quiz("/quiz/start")).await;
    ledger
        .expect(answer, accepted("leads", "quiz", "/quiz/start"))
        .await;
    let email = unique_name("form") + "@example.com";
    let body = format!("name=Grace+Hopper&email={email}&phone=%2B15551234567&consent=on");
    let answer = form(&app, "pricing-contact", &k.web_form, &body).await;
    ledger
        .expect(answer, accepted("forms", "web_form", "/pricing"))
        .await;
    let bad_email = with(quiz("/quiz/end"), "email", json!("not-an-email"));
    let batch = json!({"leads": [quiz("/quiz/end"), bad_email]});
    let reply = app
        .post_json("/v1/leads/batch", Some(&k.quiz), &batch)
        .await;
    assert_eq!(reply.status().as_u16(), 200);
    let reply: Value = reply.json().await.unwrap();
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(reply["rejected"], 1, "{reply}");
    assert_eq!(reply["results"][1]["reason"], "invalid_field");
    assert_eq!(reply["results"][1]["field"], "email");
    ledger.rows.push(accepted("batch", "quiz", "/quiz/end"));
    ledger.rows.push(row(
        "batch",
        "quiz",
        "/quiz/end",
        "rejected",
        "invalid_field",
        "email",
        422,
    ));

    // The body itself is wrong.
    let bodies: [(&str, Vec<u8>, u16, &str); 5] = [
        ("application/json", vec![], 400, "invalid_payload"),
        (
            "application/json",
            b"{\"name\":".to_vec(),
            400,
            "invalid_payload",
        ),
        (
            "application/json",
            vec![0xff, 0xfe, 0x7b],
            400,
            "invalid_payload",
        ),
        (
            "text/plain",
            b"hello".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "application/json",
            vec![b' '; 1 << 20],
            413,
            "payload_too_large",
        ),
    ];
    // Unreadable bodies are still attributed to the source of the key that sent them.
    for (content_type, body, status, reason) in bodies {
        let answer = raw(&app, &k.quiz, content_type, body).await;
        ledger
            .expect(answer, rejected("quiz", "", reason, "", status))
            .await;
    }
    let extra = with(quiz("/quiz/start"), "favourite_colour", json!("teal"));
    let answer = app.post_lead(Some(&k.quiz), &extra).await;
    ledger
        .expect(
            answer,
            rejected("quiz", "/quiz/start", "invalid_payload", "", 400),
        )
        .await;

    // A field is wrong: the source and page are still recorded.
    let fields = [
        (
            without(quiz("/quiz/start"), "email"),
            "email",
            "quiz",
            "/quiz/start",
        ),
        (
            with(quiz("/quiz/start"), "name", json!("x".repeat(300))),
            "name",
            "quiz",
            "/quiz/start",
        ),
        (
            with(quiz("/quiz/start"), "phone", json!("call me maybe")),
            "phone",
            "quiz",
            "/quiz/start",
        ),
        (
            with(quiz("/x"), "page", json!("/pricing'; DROP TABLE leads;--")),
            "page",
            "quiz",
            "",
        ),
        (
            with(quiz("/quiz/start"), "source", json!("quiz' OR 1=1 --")),
            "source",
            "quiz",
            "/quiz/start",
        ),
        (
            with(lead("web_form", "/contact"), "consent", json!(false)),
            "consent",
            "web_form",
            "/contact",
        ),
        (
            with(
                quiz("/quiz/start"),
                "submitted_at",
                json!("2026-01-01T00:00:00Z"),
            ),
            "submitted_at",
            "quiz",
            "/quiz/start",
        ),
    ];
    for (body, field, source, page) in fields {
        let key = if source == "web_form" {
            &k.web_form
        } else {
            &k.quiz
        };
        let answer = app.post_lead(Some(key), &body).await;
        ledger
            .expect(answer, rejected(source, page, "invalid_field", field, 422))
            .await;
    }
    // Markup in a name is data, not a threat to a JSON API: accepted as is.
    let html = with(
        quiz("/quiz/start"),
        "name",
        json!("<script>alert(1)</script>"),
    );
    ledger
        .expect(
            app.post_lead(Some(&k.quiz), &html).await,
            accepted("leads", "quiz", "/quiz/start"),
        )
        .await;

    // Who is asking.
    let answer = form(&app, "no-such-form", &k.web_form, "name=A").await;
    ledger
        .expect(
            answer,
            row("forms", "web_form", "", "rejected", "unknown_form", "", 404),
        )
        .await;
    // Without a valid key the page a request claims is not recorded: it is request
    // text an attacker could spray. The claimed source is, being a configured name.
    for key in [None, Some("wrong-key")] {
        let answer = app.post_lead(key, &quiz("/quiz/start")).await;
        ledger
            .expect(answer, rejected("quiz", "", "unauthorized", "", 401))
            .await;
    }
    let answer = app
        .post_lead(Some(&k.quiz), &lead("partner_api", "/api"))
        .await;
    ledger
        .expect(
            answer,
            rejected("partner_api", "/api", "source_key_mismatch", "", 403),
        )
        .await;
    let answer = app
        .post_lead(Some(&k.qr_code), &lead("qr_code", "/poster"))
        .await;
    ledger
        .expect(
            answer,
            rejected("qr_code", "/poster", "source_disabled", "", 403),
        )
        .await;

    // Too many, twice, and the CRM's troubles.
    for _ in 0..2 {
        let answer = app.post_lead(Some(&k.limited), &quiz("/quiz/bot")).await;
        ledger
            .expect(answer, accepted("leads", "quiz", "/quiz/bot"))
            .await;
    }
    let answer = app.post_lead(Some(&k.limited), &quiz("/quiz/bot")).await;
    ledger
        .expect(
            answer,
            rejected("quiz", "/quiz/bot", "rate_limited", "", 429),
        )
        .await;
    let twice = quiz("/quiz/again");
    ledger
        .expect(
            app.post_lead(Some(&k.quiz), &twice).await,
            accepted("leads", "quiz", "/quiz/again"),
        )
        .await;
    let answer = app.post_lead(Some(&k.quiz), &twice).await;
    ledger
        .expect(
            answer,
            rejected("quiz", "/quiz/again", "duplicate", "", 409),
        )
        .await;
    for (company, status, reason) in [
        ("crm-fail", 502, "downstream_error"),
        ("crm-refuse", 502, "downstream_error"),
        ("crm-slow", 504, "downstream_timeout"),
    ] {
        let answer = app
            .post_lead(
                Some(&k.quiz),
                &with(quiz("/quiz/crm"), "company", json!(company)),
            )
            .await;
        ledger
            .expect(
                answer,
                row("leads", "quiz", "/quiz/crm", "failed", reason, "", status),
            )
            .await;
    }

    // Every attempt is one row.
    let mut expected = ledger.rows;
    expected.sort();
    assert_eq!(rows_of(&app, expected.len()).await, expected);

    // And one count in the metric.
    app.stop().await;
    let mut by_outcome: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in &expected {
        *by_outcome
            .entry((r.outcome.clone(), r.reason.clone()))
            .or_default() += 1.0;
    }
    let counted = submission_counts(&app, by_outcome.values().sum()).await;
    assert_eq!(counted, by_outcome);
    assert!(crm.hits.load(std::sync::atomic::Ordering::SeqCst) >= 10);
}

/// `leads.submissions` totals per (outcome, reason): the latest cumulative point of each
/// attribute set, summed.
async fn submission_counts(app: &TestApp, expected_total: f64) -> BTreeMap<(String, String), f64> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Count {
        outcome: String,
        reason: String,
        total: f64,
    }
    let client = app.stack.client();
    let sql = "SELECT outcome, reason, sum(latest) AS total FROM ( \
                 SELECT Attributes['lead.outcome'] AS outcome, Attributes['lead.reason'] AS reason, \
                        argMax(Value, TimeUnix) AS latest \
                 FROM otel_metrics_sum WHERE ServiceName = ? AND MetricName = 'leads.submissions' \
                 GROUP BY Attributes) GROUP BY outcome, reason";
    let counts: Vec<Count> = eventually("leads.submissions totals", ARRIVAL, async || {
        let query = client.query(sql).bind(&app.service);
        let counts = logged(query.fetch_all::<Count>().await)?;
        let total: f64 = counts.iter().map(|c| c.total).sum();
        (total >= expected_total).then_some(counts)
    })
    .await;
    counts
        .into_iter()
        .map(|c| ((c.outcome, c.reason), c.total))
        .collect()
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct SpanRow {
    span_name: String,
    span_id: String,
    parent: String,
    kind: String,
    attribute_keys: Vec<String>,
}

impl SpanRow {
    fn named<'a>(spans: &'a [SpanRow], name: &str) -> &'a SpanRow {
        spans
            .iter()
            .find(|s| s.span_name == name)
            .unwrap_or_else(|| panic!("a {name} span in {spans:?}"))
    }
}

const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Posts one lead under a caller's `traceparent`, stops the app (flushing its spans) and
/// returns the spans of that trace once at least `expected` have arrived.
async fn spans_of_a_traced_lead(mut app: TestApp, expected: usize) -> Vec<SpanRow> {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let response = app
        .http
        .post(app.url("/v1/leads"))
        .bearer_auth(&app.keys.quiz)
        .header("traceparent", format!("00-{trace_id}-{CALLER_SPAN}-01"))
        .json(&lead("quiz", "/quiz/start"))
        .send()
        .await
        .unwrap();
    let body = expect_accepted(response).await;
    assert_eq!(body["trace_id"], trace_id.as_str());
    app.stop().await;

    let client = app.stack.client();
    eventually("the trace's spans", ARRIVAL, async || {
        let query = client
            .query(
                "SELECT SpanName AS span_name, SpanId AS span_id, ParentSpanId AS parent, SpanKind AS kind, \
                 arrayMap(k -> toString(k), mapKeys(SpanAttributes)) AS attribute_keys \
                 FROM otel_traces WHERE TraceId = ? AND ServiceName = ? ORDER BY Timestamp",
            )
            .bind(&trace_id)
            .bind(&app.service);
 logged(query.fetch_all::<SpanRow>().await).filter(|s| s.len() >= expected)
})
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callers_traceparent_joins_our_spans_to_its_trace() {
    let spans = spans_of_a_traced_lead(TestApp::spawn().await, 2).await;
    let server = spans
        .iter()
        .find(|s| s.kind.contains("Server"))
        .expect("a server span");
    assert_eq!(
        server.parent, CALLER_SPAN,
        "the server span continues the caller's span"
    );
    assert_eq!(server.span_name, "POST /v1/leads");
    let submit = SpanRow::named(&spans, "lead.submit");
    assert_eq!(
        submit.parent, server.span_id,
        "lead.submit is a child of the server span"
    );
    assert_eq!(
        spans.len(),
        2,
        "no CRM is configured, so there is no delivery span: {spans:?}"
    );
    // An accepted lead without a form: no reason, field, form id or delivery to tell.
    let keys = &submit.attribute_keys;
    assert!(keys.iter().any(|k| k == "lead.id"), "{keys:?}");
    for unset in [
        "lead.reason",
        "lead.field",
        "lead.form_id",
        "lead.delivery.attempts",
    ] {
        assert!(!keys.iter().any(|k| k == unset), "{unset} in {keys:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_to_a_crm_is_a_client_span_under_the_attempt() {
    let crm = FakeCrm::start().await;
    let app = TestApp::spawn_with(|s| crm.configure(s)).await;
    let spans = spans_of_a_traced_lead(app, 3).await;
    let submit = SpanRow::named(&spans, "lead.submit");
    let deliver = SpanRow::named(&spans, "lead.deliver");
    assert_eq!(deliver.parent, submit.span_id);
    assert!(deliver.kind.contains("Client"), "{deliver:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_table_holds_a_submitted_email_phone_or_name() {
    let crm = FakeCrm::start().await;
    let mut app = TestApp::spawn_with(|s| crm.configure(s)).await;
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("pii-{marker}@example.com");
    let name = format!("Pii Person {}", &marker[..12]);
    let phone = format!(
        "+4477{}",
        &marker
            .chars()
            .filter(char::is_ascii_digit)
            .chain("1234567890".chars())
            .take(8)
            .collect::<String>()
    );
    let lead = json!({
        "name": name, "email": email, "phone": phone, "company": "crm-fail",
        "source": "quiz", "page": "/quiz/pii", "consent": true
    });
    let k = app.keys.clone();
    app.post_json(
        "/v1/leads",
        Some(&k.quiz),
        &with(lead.clone(), "company", json!("ok")),
    )
    .await;
    app.post_json("/v1/leads", Some(&k.quiz), &lead).await; // failed delivery
    app.post_json("/v1/leads", Some(&k.partner), &lead).await; // key mismatch
    app.post_json(
        "/v1/leads",
        Some(&k.quiz),
        &with(lead.clone(), "page", json!("bad page")),
    )
    .await;
    rows_of(&app, 4).await;
    app.stop().await;

    let client = app.stack.client();
    let tables: Vec<String> = client
        .query("SELECT name FROM system.tables WHERE database = currentDatabase() AND engine NOT LIKE '%View'")
        .fetch_all()
        .await
        .unwrap();
    assert!(tables.contains(&"otel_traces".to_owned()));
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    for table in tables {
        for needle in [
            &email,
            &name,
            &phone,
            &digits,
            &email.split('@').next().unwrap().to_owned(),
        ] {
            let found: u64 = client
                .query(&format!(
                    "SELECT count() FROM {table} WHERE positionCaseInsensitive(formatRowNoNewline('TSV', *), ?) > 0"
                ))
                .bind(needle)
                .fetch_one()
                .await
                .unwrap();
            assert_eq!(found, 0, "{table} holds a submitted value in clear");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_simulator_key_backdates_the_span_and_the_row() {
    let mut app = TestApp::spawn().await;
    let at = chrono::Utc::now() - chrono::Duration::days(3);
    let body = with(
        lead("partner_api", "/api/leads"),
        "submitted_at",
        json!(at.to_rfc3339()),
    );
    expect_accepted(
        app.post_json("/v1/leads", Some(&app.keys.simulator), &body)
            .await,
    )
    .await;
    app.stop().await;
    let client = app.stack.client();
    let stored: i64 = eventually("the backdated row", ARRIVAL, async || {
        let query = client
            .query("SELECT toInt64(toUnixTimestamp(event_time)) FROM lead_submissions WHERE service = ?")
            .bind(&app.service);
 logged(query.fetch_optional::<i64>().await).flatten()
})
    .await;
    assert!(
        (stored - at.timestamp()).abs() <= 1,
        "event_time {stored} vs {}",
        at.timestamp()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dedup_survives_a_restart() {
    let app = TestApp::spawn().await;
    let body = lead("quiz", "/quiz/restart");
    expect_accepted(
        app.post_json("/v1/leads", Some(&app.keys.quiz), &body)
            .await,
    )
    .await;
    rows_of(&app, 1).await;
    let mut app = app.restart().await;
    expect_refused(
        app.post_json("/v1/leads", Some(&app.keys.quiz), &body)
            .await,
        409,
        "duplicate",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_spec_and_docs_are_served() {
    let mut app = TestApp::spawn().await;
    let get = |path: &str| app.http.get(app.url(path)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let spec: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert!(spec["paths"]["/v1/leads"]["post"].is_object());
    let docs = get("/docs").await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
    app.stop().await;

    let mut dark = TestApp::spawn_with(|s| s.otel.enabled = false).await;
    assert_eq!(
        dark.http
            .get(dark.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    dark.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_lets_in_flight_requests_finish_and_flushes_their_spans() {
    let crm = FakeCrm::start().await;
    let mut app = TestApp::spawn_with(|s| crm.configure_patient(s)).await;
    let slow = with(lead("quiz", "/quiz/shutdown"), "company", json!("crm-slow"));
    let in_flight = tokio::spawn(
        app.http
            .post(app.url("/v1/leads"))
            .bearer_auth(&app.keys.quiz)
            .json(&slow)
            .send(),
    );
    // Stop while the lead waits on the CRM (it answers after 3 s): once the CRM has the
    // delivery, the request is certainly inside the service.
    crm.received(1).await;
    app.stop().await;
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    expect_accepted(response).await;
    assert_eq!(
        rows_of(&app, 1).await.len(),
        1,
        "its span was flushed at shutdown"
    );
}

/// The server stops reading a body over the limit, so it closes the connection after its
/// 413; saying `Connection: close` keeps a client from sending its next request down a
/// connection that is going away (hyper reports that as IncompleteMessage).
#[tokio::test(flavor = "multi_thread")]
async fn a_too_large_body_closes_the_connection_and_says_so() {
    let mut app = TestApp::spawn().await;
    let key = app.keys.quiz.clone();
    let answer = raw(&app, &key, "application/json", vec![b' '; 1 << 20]).await;
    assert_eq!(answer.status(), 413);
    let connection = answer.headers().get("connection").cloned();
    assert_eq!(
        connection.as_ref().and_then(|v| v.to_str().ok()),
        Some("close")
    );
    let next = app
        .post_lead(Some(&key), &lead("quiz", "/quiz/start"))
        .await;
    assert_eq!(next.status(), 201);
    app.stop().await;
}
