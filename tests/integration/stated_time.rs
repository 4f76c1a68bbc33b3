//! Stated times are bounded and scoped: no time beyond a few minutes ahead or past the
//! submissions' retention, a simulator key vouches only for its configured sources, and
//! replayed history has rate-limit and dedup state of its own, so it can never throttle
//! or dedupe a live lead. A client's retry after its request was cut off mid-delivery
//! is neither a duplicate nor a second CRM lead.

use std::time::Duration;

use chrono::Utc;
use lead_lab::config::{KeyRole, KeySettings};
use lead_lab::ingest::hash_key;
use serde_json::{Value, json};

use crate::app::{FakeCrm, TestApp};
use crate::ingest::{expect_accepted, expect_refused, lead, with};
use crate::support::{ARRIVAL, eventually, logged, unique_name};

async fn stated(
    app: &TestApp,
    key: &str,
    sim_key: &str,
    at: &str,
    body: &Value,
) -> reqwest::Response {
    app.http
        .post(app.url("/v1/leads"))
        .bearer_auth(key)
        .header("x-simulator-key", sim_key)
        .header("x-submitted-at", at)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn field_error(answer: reqwest::Response) {
    let body = expect_refused(answer, 422, "invalid_field").await;
    assert_eq!(body["field"], "submitted_at", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stated_times_out_of_bounds_or_unvouched_are_refused() {
    let web_sim = unique_name("web-sim");
    let mut app = TestApp::spawn_with(|s| {
        // A simulator key of web_form that vouches for web_form only.
        let web_form = s.sources.iter_mut().find(|s| s.name == "web_form").unwrap();
        web_form.keys.push(KeySettings {
            id: "web_form-sim".into(),
            sha256: hash_key(&web_sim),
            roles: vec![KeyRole::Simulator],
            rate_limit: None,
            vouches_for: vec![],
        });
        s.schema.submissions_ttl_days = 30;
    })
    .await;
    let k = app.keys.clone();
    let quiz = || lead("quiz", "/quiz/replay");
    let in_an_hour = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let long_ago = (Utc::now() - chrono::Duration::days(31)).to_rfc3339();
    let yesterday = (Utc::now() - chrono::Duration::days(1)).to_rfc3339();

    field_error(stated(&app, &k.quiz, &k.simulator, &in_an_hour, &quiz()).await).await;
    field_error(stated(&app, &k.quiz, &k.simulator, &long_ago, &quiz()).await).await;
    field_error(stated(&app, &k.quiz, &k.simulator, "last tuesday", &quiz()).await).await;
    let in_body = with(quiz(), "submitted_at", json!(in_an_hour));
    field_error(stated(&app, &k.quiz, &k.simulator, "", &in_body).await).await;
    // A live key may not state a time at all, in a header or in the body.
    let live = app
        .http
        .post(app.url("/v1/leads"))
        .bearer_auth(&k.quiz)
        .header("x-submitted-at", &yesterday)
        .json(&quiz())
        .send()
        .await
        .unwrap();
    field_error(live).await;
    // web_form's simulator key vouches for web_form, not for quiz.
    field_error(stated(&app, &k.quiz, &web_sim, &yesterday, &quiz()).await).await;
    let web = lead("web_form", "/contact");
    let ok = stated(&app, &k.web_form, &web_sim, &yesterday, &web).await;
    expect_accepted(ok).await;
    app.stop().await;

    let client = app.stack.client();
    let (replayed, days_ago): (u8, i64) = eventually("the replayed row", ARRIVAL, async || {
        let query = client
            .query(
                "SELECT replayed, toInt64(dateDiff('hour', event_time, now64(9))) FROM lead_submissions \
                 WHERE service = ? AND outcome = 'accepted'",
            )
            .bind(&app.service);
 logged(query.fetch_optional::<(u8, i64)>().await).flatten()
})
    .await;
    assert_eq!(replayed, 1);
    assert!(
        (23..=25).contains(&days_ago),
        "recorded at the stated time, {days_ago} h ago"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_history_cannot_throttle_or_dedupe_live_leads() {
    let mut app = TestApp::spawn().await;
    let k = app.keys.clone();
    let an_hour_ago = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    // `limited` (quiz-bot) has a burst of 2: replaying three attempts empties its
    // replay bucket...
    for (i, status) in [201, 201, 429].into_iter().enumerate() {
        let body = lead("quiz", &format!("/quiz/bot/{i}"));
        let answer = stated(&app, &k.limited, &k.simulator, &an_hour_ago, &body).await;
        assert_eq!(answer.status().as_u16(), status);
    }
    // ...and its live bucket is untouched.
    let answer = app
        .post_lead(Some(&k.limited), &lead("quiz", "/quiz/bot/live"))
        .await;
    expect_accepted(answer).await;
    // The same lead replayed and then sent live is not a duplicate of itself.
    let same = lead("quiz", "/quiz/same");
    expect_accepted(stated(&app, &k.quiz, &k.simulator, &an_hour_ago, &same).await).await;
    expect_accepted(app.post_lead(Some(&k.quiz), &same).await).await;
    expect_refused(app.post_lead(Some(&k.quiz), &same).await, 409, "duplicate").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_a_cut_off_delivery_is_neither_a_duplicate_nor_a_second_crm_lead() {
    let crm = FakeCrm::start().await;
    let mut app = TestApp::spawn_with(|s| crm.configure_patient(s)).await;
    let body = with(
        lead("quiz", "/quiz/impatient"),
        "company",
        json!("crm-slow-once"),
    );
    // The client gives up while the CRM is still working on the lead: its request
    // future is dropped inside the service.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let cut_off = impatient
        .post(app.url("/v1/leads"))
        .bearer_auth(&app.keys.quiz)
        .json(&body)
        .send()
        .await;
    assert!(cut_off.is_err(), "the client timed out");
    // The service learns of the hang-up when hyper drops the request, which under load
    // can come after a quick retry arrives (that retry would meet the live reservation,
    // a duplicate, as designed). Retry once the cut-off attempt is on record.
    let client = app.stack.client();
    eventually("the cut-off attempt on record", ARRIVAL, async || {
        let query = client
            .query("SELECT count() FROM lead_submissions WHERE service = ? AND reason = 'client_closed'")
            .bind(&app.service);
 (logged(query.fetch_one::<u64>().await)? >= 1).then_some(())
})
    .await;
    let retry = app.post_lead(Some(&app.keys.quiz), &body).await;
    expect_accepted(retry).await;
    app.stop().await;

    let keys = crm.idempotency_keys();
    assert_eq!(keys.len(), 2, "two deliveries: {keys:?}");
    assert_eq!(
        keys[0], keys[1],
        "one idempotency key: the CRM keeps one lead"
    );
    assert_eq!(keys[0].len(), 32);

    let reasons: Vec<String> = app
        .rows_when(
            "both attempts on record",
            "SELECT reason FROM lead_submissions WHERE service = ? ORDER BY event_time",
            |r: &[String]| r.len() >= 2,
        )
        .await;
    assert_eq!(
        reasons,
        ["client_closed", ""],
        "the cut-off attempt is recorded too"
    );
}
