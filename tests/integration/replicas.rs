//! Several `serve` instances on one Redis (`state.url`) behave as one: a lead is
//! accepted once whichever instance it reaches, a client's rate limit is one budget
//! across them, the schedule runs once per firing, a crashed lease holder's analysis is
//! finished by another instance, and a Redis outage gives the documented answers
//! (docs/scaling.md): dedup refuses with 503 `state_unavailable`, rate limits let
//! requests through, nothing answers 500.

use std::process::Child;
use std::time::Duration;

use chrono::Timelike as _;
use lead_lab::config::Settings;
use serde_json::{Value, json};

use crate::app::TestApp;
use crate::fake_ollama::{FakeOllama, Reply};
use crate::ingest::{expect, expect_accepted, expect_refused, lead, rows_of};
use crate::support::analysis::{ADMIN_TOKEN, finished, plain_report, start_analysis as start};
use crate::support::{
    ClickHouseEnv, PrivateRedis, TestDatabase, eventually, redis_url, serve_process,
};

/// Two instances of one service on the stack's Redis.
async fn replicas(customize: impl FnOnce(&mut Settings)) -> (TestApp, TestApp) {
    let url = redis_url().await;
    let first = TestApp::spawn_with(|s| {
        s.state.url = url.into();
        customize(s);
    })
    .await;
    let second = first.replica().await;
    (first, second)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_lead_posted_to_two_instances_is_accepted_once() {
    let (mut a, mut b) = replicas(|_| {}).await;
    let body = lead("quiz", "/pricing");
    expect_accepted(a.post_lead(Some(&a.keys.quiz), &body).await).await;
    let again = b.post_lead(Some(&b.keys.quiz), &body).await;
    expect_refused(again, 409, "duplicate").await;
    a.stop().await;
    b.stop().await;

    // The same pair without the shared state accepts it twice: what Redis prevents.
    let mut alone = TestApp::spawn().await;
    let mut beside = alone.replica().await;
    let body = lead("quiz", "/pricing");
    for app in [&alone, &beside] {
        let answer = app.post_lead(Some(&app.keys.quiz), &body).await;
        expect_accepted(answer).await;
    }
    alone.stop().await;
    beside.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_spread_over_two_instances_is_limited_by_one_budget() {
    let (mut a, mut b) = replicas(|_| {}).await;
    // `limited` (quiz-bot) may send 2 at once and gets a token back every 1000 s.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let app = if i % 2 == 0 { &a } else { &b };
        let answer = app
            .post_lead(Some(&app.keys.limited), &lead("quiz", "/q"))
            .await;
        statuses.push(answer.status().as_u16());
    }
    let accepted = statuses.iter().filter(|s| **s == 201).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((accepted, limited), (2, 4), "{statuses:?}");
    a.stop().await;
    b.stop().await;
}

fn yesterday() -> String {
    (chrono::Utc::now().date_naive() - chrono::Duration::days(1)).to_string()
}

fn analyzer_settings(s: &mut Settings, db: &TestDatabase, ollama: &FakeOllama) {
    s.clickhouse.database = db.name.clone();
    s.admin_token = ADMIN_TOKEN.into();
    s.llm = ollama.settings();
    s.analyzer.retry_backoff_ms = 50;
    s.state.lease_ttl_ms = 1_500;
}

async fn runs_of(app: &TestApp, day: &str) -> Vec<Value> {
    let runs = app
        .get_json(&format!("/v1/analyses?day={day}"), Some(ADMIN_TOKEN))
        .await;
    runs.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_with_the_schedule_on_run_it_once() {
    let day = yesterday();
    let replies = (0..4)
        .map(|_| Reply::GoodJson(plain_report(&day)))
        .collect();
    let ollama = FakeOllama::start(replies).await;
    let db = TestDatabase::migrated().await;
    // Fires once a minute, some seconds from now: both instances are up by then.
    let second = (chrono::Utc::now() + chrono::Duration::seconds(10)).second();
    let (mut a, mut b) = replicas(|s| {
        analyzer_settings(s, &db, &ollama);
        s.analyzer.schedule = format!("{second} * * * * *");
        s.analyzer.schedule_enabled = true;
    })
    .await;
    let run = eventually("the scheduled run", Duration::from_secs(90), || async {
        runs_of(&a, &day)
            .await
            .into_iter()
            .find(|run| run["status"] == "succeeded")
    })
    .await;
    assert_eq!(run["trigger"], "schedule");
    // The other instance's firing had time to queue a second run, had it won too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let runs = runs_of(&b, &day).await;
    assert_eq!(runs.len(), 1, "one run for the day: {runs:?}");
    a.stop().await;
    b.stop().await;
}

/// `lead-lab serve` as a process of its own, so it can be killed outright.
struct Process {
    child: Child,
    base: String,
}

impl Process {
    async fn spawn(settings: &Settings) -> Self {
        let ch = &settings.clickhouse;
        let (child, base) = serve_process(|command| {
            command
                .env_remove("LEADLAB_CONFIG")
                .clickhouse_env(ch, &ch.database)
                .env("LEADLAB_OTEL_ENDPOINT", &settings.otel.endpoint)
                .env("LEADLAB_OTEL_SERVICE_NAME", &settings.otel.service_name)
                .env("LEADLAB_ADMIN_TOKEN", settings.admin_token.expose())
                .env("LEADLAB_LLM_URL", &settings.llm.url)
                .env("LEADLAB_LLM_MODEL", &settings.llm.model)
                // Its model call hangs until it is killed.
                .env("LEADLAB_LLM_TIMEOUT_MS", "300000")
                .env("LEADLAB_STATE_URL", settings.state.url.expose())
                .env(
                    "LEADLAB_STATE_LEASE_TTL_MS",
                    settings.state.lease_ttl_ms.to_string(),
                );
        })
        .await;
        Self { child, base }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_lease_holder_lets_the_other_instance_finish_the_run() {
    let day = (chrono::Utc::now().date_naive() - chrono::Duration::days(2)).to_string();
    let ollama = FakeOllama::start(vec![
        Reply::slow(
            Duration::from_secs(600),
            Reply::GoodJson(plain_report(&day)),
        ),
        Reply::GoodJson(plain_report(&day)),
    ])
    .await;
    let db = TestDatabase::migrated().await;
    let url = redis_url().await;
    let mut survivor = TestApp::spawn_with(|s| {
        analyzer_settings(s, &db, &ollama);
        s.analyzer.schedule_enabled = false;
        s.state.url = url.into();
    })
    .await;
    let mut holder = Process::spawn(&survivor.settings).await;
    let accepted: Value = reqwest::Client::new()
        .post(format!("{}/v1/analyses", holder.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "day": day }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = accepted["run_id"].as_str().unwrap().to_owned();
    eventually(
        "the holder to call the model",
        Duration::from_secs(30),
        || async { (!ollama.chat_requests().is_empty()).then_some(()) },
    )
    .await;
    // A request to the survivor meanwhile starts no run of its own: the day is held.
    assert_eq!(start(&survivor, &day).await.status().as_u16(), 202);
    holder.child.kill().unwrap();
    holder.child.wait().unwrap();

    let view = finished(&survivor, &run_id).await;
    assert_eq!(view["run"]["status"], "succeeded", "{view}");
    assert_eq!(ollama.chat_requests().len(), 2, "one call each, no third");
    let runs = runs_of(&survivor, &day).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    let summaries = view["summary"]["version"].as_u64();
    assert_eq!(summaries, Some(1), "{view}");
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_dedup_refuses_with_503_rate_limits_let_through_and_nothing_is_500() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let mut app = TestApp::spawn_with(|s| {
        s.state.url = url.into();
        s.state.timeout_ms = 300;
    })
    .await;
    let quiz = app.keys.quiz.clone();
    expect_accepted(app.post_lead(Some(&quiz), &lead("quiz", "/up")).await).await;

    redis.stop();
    let waiting = lead("quiz", "/down");
    let refused = app.post_lead(Some(&quiz), &waiting).await;
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    expect(refused, 503, "failed", Some("state_unavailable")).await;
    // The tightly limited key is not limited (fail open), yet nothing is accepted.
    for _ in 0..3 {
        let answer = app
            .post_lead(Some(&app.keys.limited), &lead("quiz", "/q"))
            .await;
        expect(answer, 503, "failed", Some("state_unavailable")).await;
    }
    // Requests without a key past their address's burst (10): still let through.
    for _ in 0..12 {
        let answer = app.post_lead(None, &lead("quiz", "/q")).await;
        assert_eq!(answer.status().as_u16(), 401);
    }

    redis.restart().await;
    eventually(
        "Redis to be used again",
        Duration::from_secs(20),
        async || {
            let answer = app.post_lead(Some(&quiz), &waiting).await;
            let status = answer.status().as_u16();
            assert_ne!(status, 500);
            (status == 201).then_some(())
        },
    )
    .await;
    let rows = rows_of(&app, 1 + 1 + 3 + 12 + 1).await;
    let refusals = rows
        .iter()
        .filter(|r| r.reason == "state_unavailable" && r.http_status == 503)
        .count();
    assert!(refusals >= 4, "every refusal is recorded: {rows:?}");
    assert!(rows.iter().all(|r| r.http_status != 500), "{rows:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_leases_expire_and_fence_and_versions_are_allocated_once() {
    use lead_lab::state::StateBackend as _;
    use lead_lab::state::redis::RedisState;
    let url = redis_url().await;
    let service = crate::support::unique_name("state");
    let state = |_: u8| {
        RedisState::new(
            &url,
            &service,
            Duration::from_secs(60),
            Duration::from_millis(500),
        )
        .unwrap()
    };
    let (one, other) = (state(1), state(2));
    let ttl = Duration::from_millis(400);
    let lease = one.acquire_lease("day", ttl).await.unwrap().unwrap();
    assert!(other.acquire_lease("day", ttl).await.unwrap().is_none());
    assert!(one.renew_lease(&lease, ttl).await.unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let next = other.acquire_lease("day", ttl).await.unwrap().unwrap();
    assert!(one.was_leased("day").await.unwrap());
    assert!(!one.was_leased("never").await.unwrap());
    assert!(
        next.fence > lease.fence,
        "a later holder has a higher fence"
    );
    assert!(
        !one.renew_lease(&lease, ttl).await.unwrap(),
        "the old lease is gone"
    );
    one.release_lease(&lease).await.unwrap();
    assert!(
        one.acquire_lease("day", ttl).await.unwrap().is_none(),
        "an old holder cannot release the new holder's lease"
    );

    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
    let mut versions = Vec::new();
    for backend in [&one, &other, &one] {
        versions.push(backend.allocate_version(day, 4).await.unwrap());
    }
    assert_eq!(versions, [5, 6, 7]);
    assert_eq!(other.allocate_version(day, 10).await.unwrap(), 11);
}
