//! The server sheds abusive clients without losing the record: keyless floods are
//! limited by address before their bodies are read and cannot amplify; slow clients are
//! cut off by the header and body timeouts; the in-flight and connection caps hold;
//! admin bodies are bounded and the admin token is checked before one is read.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::app::{FakeCrm, TestApp};
use crate::ingest::{expect, expect_accepted, lead, with};
use crate::support::{ARRIVAL, eventually, logged};

fn address(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Sends `head` (and nothing more) on a fresh connection.
async fn stalled(app: &TestApp, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address(app)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// What the server sends until it closes the connection, or None if it is still open
/// after `within`.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&answer).into_owned())
}

fn keyless_flood_body(i: u64) -> Value {
    let leads: Vec<Value> = (0..100)
        .map(|j| lead("quiz", &format!("/attacker/{i}/{j}")))
        .collect();
    json!({ "leads": leads })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyless_flood_cannot_amplify_or_push_valid_leads_off_the_record() {
    // Bodies of 100 leads fit: the flood is refused for having no key, not for its size.
    let mut app = TestApp::spawn_with(|s| s.http.max_body_bytes = 64 * 1024).await;
    let flood_requests = Arc::new(AtomicU64::new(0));
    let statuses = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut flooders = Vec::new();
    for worker in 0..8u64 {
        let (http, base) = (reqwest::Client::new(), app.base.clone());
        let (sent, statuses) = (flood_requests.clone(), statuses.clone());
        flooders.push(tokio::spawn(async move {
            let mut i = worker * 1_000_000;
            while Instant::now() < deadline {
                i += 1;
                let request = if i % 2 == 0 {
                    http.post(format!("{base}/v1/leads/batch"))
                        .json(&keyless_flood_body(i))
                } else {
                    http.post(format!("{base}/v1/leads"))
                        .json(&lead("quiz", &format!("/attacker/{i}")))
                };
                if let Ok(answer) = request.send().await {
                    statuses.lock().unwrap().insert(answer.status().as_u16());
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut valid = 0u64;
    while Instant::now() < deadline {
        let answer = app
            .post_lead(Some(&app.keys.quiz), &lead("quiz", "/quiz/real"))
            .await;
        expect_accepted(answer).await;
        valid += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for flooder in flooders {
        flooder.await.unwrap();
    }
    app.stop().await;
    let flood = flood_requests.load(Ordering::Relaxed);
    assert!(
        flood >= 10 * valid,
        "the flood ({flood}) is at least 10× the valid traffic ({valid})"
    );
    let statuses = statuses.lock().unwrap().clone();
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "keyless requests get 401 or 429, never a 5xx: {statuses:?}"
    );
    assert!(statuses.contains(&429), "the flood was limited");

    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    struct Tally {
        accepted: u64,
        keyless: u64,
        keyless_batches: u64,
        pages: u64,
    }
    let client = app.stack.client();
    let tally: Tally = eventually("every recorded attempt", ARRIVAL, async || {
        let query = client
            .query(
                "SELECT countIf(outcome = 'accepted') AS accepted, \
                        countIf(client_id = '') AS keyless, \
                        countIf(client_id = '' AND endpoint = 'batch') AS keyless_batches, \
                        uniqExact(page) AS pages \
                 FROM lead_submissions WHERE service = ?",
            )
            .bind(&app.service);
        logged(query.fetch_one::<Tally>().await)
            .filter(|t: &Tally| t.accepted + t.keyless >= valid + flood)
    })
    .await;
    assert_eq!(tally.accepted, valid, "every accepted lead is on record");
    assert_eq!(
        tally.keyless, flood,
        "one record per keyless request, batches included"
    );
    assert!(tally.keyless_batches <= flood / 2 + 4, "{tally:?}");
    assert!(
        tally.pages <= 2,
        "only pages the service decided: {tally:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_clients_are_cut_off_while_health_answers() {
    let mut app = TestApp::spawn_with(|s| {
        s.http.body_read_timeout_ms = 1_000;
        s.http.header_read_timeout_ms = 1_000;
    })
    .await;
    let head = format!(
        "POST /v1/leads HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\":",
        app.keys.quiz
    );
    let mut stalled_bodies = Vec::new();
    for _ in 0..300 {
        stalled_bodies.push(stalled(&app, &head).await);
    }
    let mut stalled_head = stalled(&app, "POST /v1/leads HTTP/1.1\r\nHost: te").await;

    let mut took = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let health = app.http.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        took.push(started.elapsed());
    }
    took.sort();
    assert!(
        took[took.len() / 2] < Duration::from_millis(100)
            && took[took.len() - 1] < Duration::from_secs(1),
        "healthz while 300 clients stall: {took:?}"
    );

    let header_cut = until_closed(&mut stalled_head, Duration::from_secs(5)).await;
    assert!(
        header_cut.is_some(),
        "a stalled header is closed within the header timeout"
    );
    for stream in &mut stalled_bodies {
        let answer = until_closed(stream, Duration::from_secs(5))
            .await
            .expect("a stalled body is answered and closed within the body timeout");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        assert!(answer.contains("request_timeout"), "{answer}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_bodies_are_bounded_and_need_the_token_first() {
    let mut app = TestApp::spawn_with(|s| s.admin_token = "admin-secret".into()).await;
    // 100 MB announced, never sent: both answers come without reading a byte of it.
    for (token, status) in [("wrong", "401"), ("admin-secret", "413")] {
        let head = format!(
            "POST /v1/analyses HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
        );
        let mut stream = stalled(&app, &head).await;
        let answer = until_closed(&mut stream, Duration::from_secs(5))
            .await
            .expect("answered at once and closed");
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(answer.contains("\"message\""), "{answer}");
    }
    // A chunked admin body, without a length, is cut off at the limit too (16 KiB here).
    let mut stream = stalled(
        &app,
        "POST /v1/analyses HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer admin-secret\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
    for _ in 0..32 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server may close as soon as it has refused the body
        }
    }
    let answer = until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_in_flight_cap_attempts_are_shed_and_still_recorded() {
    let crm = FakeCrm::start().await;
    let mut app = TestApp::spawn_with(|s| {
        crm.configure_patient(s);
        s.http.max_in_flight = 2;
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        let request = app
            .http
            .post(app.url("/v1/leads"))
            .bearer_auth(&app.keys.quiz)
            .json(&with(
                lead("quiz", "/quiz/slow"),
                "company",
                json!("crm-slow"),
            ));
        slow.push(tokio::spawn(request.send()));
    }
    crm.received(2).await;
    let shed = app
        .post_json(
            "/v1/leads",
            Some(&app.keys.quiz),
            &lead("quiz", "/quiz/shed"),
        )
        .await;
    assert_eq!(
        shed.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("1".to_owned())
    );
    expect(shed, 503, "failed", Some("overloaded")).await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "health probes are exempt");
    for request in slow {
        assert_eq!(request.await.unwrap().unwrap().status(), 201);
    }
    app.stop().await;
    let client = app.stack.client();
    let (source, reason): (String, String) = eventually("the shed attempt's row", ARRIVAL, async || {
        let query = client
            .query("SELECT source, reason FROM lead_submissions WHERE service = ? AND reason = 'overloaded'")
            .bind(&app.service);
 logged(query.fetch_optional::<(String, String)>().await).flatten()
})
    .await;
    assert_eq!((source.as_str(), reason.as_str()), ("quiz", "overloaded"));
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_connection_cap_new_connections_wait_for_a_free_place() {
    let mut app = TestApp::spawn_with(|s| s.http.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = stalled(&app, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await;
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(stream); // kept alive: each holds one of the three places
    }
    let fourth = reqwest::Client::new();
    let waiting = tokio::time::timeout(
        Duration::from_millis(700),
        fourth.get(app.url("/healthz")).send(),
    )
    .await;
    assert!(
        waiting.is_err(),
        "a fourth connection is not served while three are open"
    );
    drop(held.pop());
    let served = tokio::time::timeout(
        Duration::from_secs(5),
        fourth.get(app.url("/healthz")).send(),
    )
    .await
    .expect("served once a place is free")
    .unwrap();
    assert_eq!(served.status(), 200);
    drop(held);
    app.stop().await;
}
