//! With the collector gone, the service keeps answering and counts what it could not
//! export; once the collector is back, new submissions flow again. The test runs its
//! own rotel (the shared one serves the other tests) against the stack's ClickHouse.

use std::process::Child;
use std::time::Duration;

use serde_json::json;

use crate::app::TestApp;
use crate::support::{Stack, eventually, free_port, logged, rotel_command, unique_name};

struct OwnCollector {
    child: Option<Child>,
    grpc: u16,
    http: u16,
    stack: Stack,
    dir: tempfile::TempDir,
}

impl OwnCollector {
    async fn start(stack: &Stack) -> Self {
        let mut collector = Self {
            child: None,
            grpc: free_port(),
            http: free_port(),
            stack: stack.clone(),
            dir: tempfile::tempdir().unwrap(),
        };
        collector.resume().await;
        collector
    }

    async fn resume(&mut self) {
        let child = rotel_command(
            &self.stack.clickhouse,
            self.grpc,
            self.http,
            self.dir.path(),
        )
        .spawn()
        .expect("rotel starts");
        self.child = Some(child);
        let grpc = self.grpc;
        eventually(
            "our collector to listen",
            Duration::from_secs(20),
            || async move {
                std::net::TcpStream::connect(("127.0.0.1", grpc))
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnCollector {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn submit(app: &TestApp, page: &str) {
    let lead = json!({
        "name": "Outage Tester", "email": format!("{}@example.com", unique_name("outage")),
        "source": "quiz", "page": page, "consent": true
    });
    let response = app
        .post_json("/v1/leads", Some(&app.keys.quiz), &lead)
        .await;
    assert_eq!(
        response.status().as_u16(),
        201,
        "the service keeps accepting leads"
    );
}

async fn rows_on(app: &TestApp, page: &str, expected: u64) {
    let client = app.stack.client();
    eventually(
        &format!("{expected} rows for {page}"),
        Duration::from_secs(30),
        async || {
            let query = client
                .query("SELECT count() FROM lead_submissions WHERE service = ? AND page = ?")
                .bind(&app.service)
                .bind(page);
            logged(query.fetch_one::<u64>().await).filter(|n| *n >= expected)
        },
    )
    .await;
}

async fn export_failures(app: &TestApp) -> u64 {
    let health = app.get_json("/healthz", None).await;
    health["telemetry_export_failures"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_survives_a_collector_outage_and_recovers() {
    let stack = Stack::require().await;
    let mut collector = OwnCollector::start(&stack).await;
    let endpoint = format!("http://127.0.0.1:{}", collector.grpc);
    let mut app = TestApp::spawn_with(|s| {
        s.otel.endpoint = endpoint;
        s.otel.export_timeout_ms = 1_000;
    })
    .await;

    for _ in 0..3 {
        submit(&app, "/before").await;
    }
    rows_on(&app, "/before", 3).await;

    collector.kill();
    for _ in 0..3 {
        submit(&app, "/during").await;
    }
    eventually(
        "export failures to be counted",
        Duration::from_secs(30),
        async || Some(export_failures(&app).await).filter(|n| *n > 0),
    )
    .await;

    collector.resume().await;
    for _ in 0..3 {
        submit(&app, "/after").await;
    }
    rows_on(&app, "/after", 3).await;
    app.stop().await;
}
