//! A lead-lab service started in-process on port 0 against the local stack, with its
//! own service name (so its telemetry is told apart in the shared `otel` tables), its
//! own keys and, when a test needs one, a fake CRM.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lead_lab::config::{
    DeliveryKind, FormSettings, KeyRole, KeySettings, RateLimitSettings, Settings, SourceSettings,
};
use lead_lab::http::Application;
use lead_lab::ingest::hash_key;
use poem::listener::{Acceptor, Listener};
use poem::web::{Data, Json};
use poem::{EndpointExt, Route, handler, post};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::{ARRIVAL, Stack, eventually, logged, unique_name};

/// API keys of the test sources; each app gets fresh ones.
#[derive(Debug, Clone)]
pub struct Keys {
    pub web_form: String,
    pub quiz: String,
    pub partner: String,
    pub simulator: String,
    pub qr_code: String,
    pub limited: String,
}

impl Keys {
    fn fresh() -> Self {
        let key = |name: &str| unique_name(name);
        Self {
            web_form: key("wf"),
            quiz: key("quiz"),
            partner: key("partner"),
            simulator: key("sim"),
            qr_code: key("qr"),
            limited: key("limited"),
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub service: String,
    pub keys: Keys,
    pub settings: Settings,
    pub stack: Stack,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<()>>,
}

fn key_settings(
    id: &str,
    key: &str,
    roles: Vec<KeyRole>,
    rate_limit: Option<RateLimitSettings>,
) -> KeySettings {
    let vouches_for = if roles.contains(&KeyRole::Simulator) {
        // The test simulator replays every test source's history.
        ["web_form", "quiz", "qr_code"].map(String::from).to_vec()
    } else {
        Vec::new()
    };
    KeySettings {
        id: id.into(),
        sha256: hash_key(key),
        roles,
        rate_limit,
        vouches_for,
    }
}

fn source(
    name: &str,
    require_consent: bool,
    enabled: bool,
    keys: Vec<KeySettings>,
) -> SourceSettings {
    SourceSettings {
        name: name.into(),
        enabled,
        require_consent,
        keys,
    }
}

/// Settings of a test app: four sources (one disabled), one form, a tightly limited key.
pub fn test_settings(stack: &Stack, keys: &Keys) -> Settings {
    let mut settings = Settings {
        clickhouse: stack.clickhouse.clone(),
        ..Settings::default()
    };
    settings.http.listen = "127.0.0.1:0".into();
    settings.http.batch_max_leads = 10;
    settings.http.max_body_bytes = 16 * 1024;
    settings.otel.endpoint = stack.otlp_grpc.clone();
    settings.otel.service_name = unique_name("lead-lab-test");
    settings.otel.scheduled_delay_ms = 100;
    settings.otel.metrics_interval_ms = 500;
    settings.ingest.submitter_secret = unique_name("secret").into();
    settings.rate_limit = RateLimitSettings {
        burst: 1_000,
        per_second: 1_000.0,
    };
    let tight = RateLimitSettings {
        burst: 2,
        per_second: 0.001,
    };
    settings.sources = vec![
        source(
            "web_form",
            true,
            true,
            vec![key_settings("web_form-site", &keys.web_form, vec![], None)],
        ),
        source(
            "quiz",
            false,
            true,
            vec![
                key_settings("quiz-app", &keys.quiz, vec![], None),
                key_settings("quiz-bot", &keys.limited, vec![], Some(tight)),
            ],
        ),
        source(
            "partner_api",
            false,
            true,
            vec![
                key_settings("partner-main", &keys.partner, vec![], None),
                key_settings(
                    "partner-sim",
                    &keys.simulator,
                    vec![KeyRole::Simulator],
                    None,
                ),
            ],
        ),
        source(
            "qr_code",
            false,
            false,
            vec![key_settings("qr-poster", &keys.qr_code, vec![], None)],
        ),
    ];
    settings.forms = vec![FormSettings {
        id: "pricing-contact".into(),
        source: "web_form".into(),
        page: "/pricing".into(),
    }];
    settings
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(customize: impl FnOnce(&mut Settings)) -> Self {
        let stack = Stack::require().await;
        let keys = Keys::fresh();
        let mut settings = test_settings(&stack, &keys);
        customize(&mut settings);
        Self::start(stack, keys, settings).await
    }

    /// Starts another instance with the same settings (a restart).
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        Self::start(self.stack.clone(), self.keys.clone(), self.settings.clone()).await
    }

    /// Another instance with the same settings (service name, keys, secret) running
    /// beside this one: a replica behind the same load balancer.
    pub async fn replica(&self) -> Self {
        Self::start(self.stack.clone(), self.keys.clone(), self.settings.clone()).await
    }

    async fn start(stack: Stack, keys: Keys, settings: Settings) -> Self {
        let app = Application::build(settings.clone())
            .await
            .expect("the app builds");
        let base = format!("http://{}", app.address());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            app.run_until(async {
                let _ = stopped.await;
            })
            .await
            .expect("the app serves");
        });
        Self {
            base,
            service: settings.otel.service_name.clone(),
            keys,
            settings,
            stack,
            http: reqwest::Client::new(),
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    /// Graceful stop: in-flight requests finish and telemetry is flushed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            serving.await.expect("the app stops cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `path` (with `token` as the bearer, if any) and returns its JSON; a non-2xx
    /// answer fails the test with its body.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> serde_json::Value {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn post_lead(
        &self,
        key: Option<&str>,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.post_json("/v1/leads", key, body).await
    }

    pub async fn post_json(
        &self,
        path: &str,
        key: Option<&str>,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.expect("the app answers")
    }

    /// POSTs a body as it is, under `content_type`: for what `post_json` cannot send
    /// (forms, junk, oversized bodies).
    pub async fn post_bytes(
        &self,
        path: &str,
        key: Option<&str>,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.expect("the app answers")
    }

    /// Polls `sql`, whose one `?` is this app's service name, until `done` accepts the
    /// rows or `ARRIVAL` passes: telemetry reaches ClickHouse through the collector's
    /// batches, so every read of it waits.
    pub async fn rows_when<R>(&self, what: &str, sql: &str, done: impl Fn(&[R]) -> bool) -> Vec<R>
    where
        R: clickhouse::RowOwned + clickhouse::RowRead,
    {
        let client = self.stack.client();
        eventually(what, ARRIVAL, async || {
            let query = client.query(sql).bind(&self.service);
            logged(query.fetch_all::<R>().await).filter(|rows| done(rows))
        })
        .await
    }
}

/// A CRM for delivery tests: answers by the lead's `company` — `crm-fail` → 500,
/// `crm-slow` → 3 s, `crm-slow-once` → 3 s the first time an idempotency key is seen,
/// `crm-refuse` → 400, anything else → 200. It keeps every `Idempotency-Key` it got.
pub struct FakeCrm {
    pub url: String,
    pub hits: Arc<AtomicU32>,
    keys: Arc<Mutex<Vec<String>>>,
    _serving: JoinHandle<()>,
}

#[handler]
async fn crm(
    Json(lead): Json<serde_json::Value>,
    headers: &poem::http::HeaderMap,
    hits: Data<&Arc<AtomicU32>>,
    keys: Data<&Arc<Mutex<Vec<String>>>>,
) -> poem::http::StatusCode {
    hits.fetch_add(1, Ordering::SeqCst);
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let seen_before = {
        let mut keys = keys.lock().unwrap();
        let seen = keys.contains(&key);
        keys.push(key);
        seen
    };
    let slow = || tokio::time::sleep(Duration::from_secs(3));
    match lead["company"].as_str() {
        Some("crm-fail") => poem::http::StatusCode::INTERNAL_SERVER_ERROR,
        Some("crm-refuse") => poem::http::StatusCode::BAD_REQUEST,
        Some("crm-slow") => {
            slow().await;
            poem::http::StatusCode::OK
        }
        Some("crm-slow-once") if !seen_before => {
            slow().await;
            poem::http::StatusCode::OK
        }
        _ => poem::http::StatusCode::OK,
    }
}

impl FakeCrm {
    pub async fn start() -> Self {
        let acceptor = poem::listener::TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = *acceptor.local_addr()[0].as_socket_addr().unwrap();
        let hits = Arc::new(AtomicU32::new(0));
        let keys = Arc::new(Mutex::new(Vec::new()));
        let app = Route::new()
            .at("/leads", post(crm))
            .data(hits.clone())
            .data(keys.clone());
        let serving = tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self {
            url: format!("http://{addr}/leads"),
            hits,
            keys,
            _serving: serving,
        }
    }

    /// Like [`FakeCrm::configure`], but waiting up to 5 s for an answer, so the 3 s of
    /// `crm-slow` keep a delivery in flight instead of timing out.
    pub fn configure_patient(&self, settings: &mut Settings) {
        self.configure(settings);
        settings.delivery.timeout_ms = 5_000;
    }

    /// Waits until the CRM has received `deliveries` (so a lead is inside the service).
    pub async fn received(&self, deliveries: u32) {
        let hits = self.hits.clone();
        crate::support::eventually(
            "deliveries at the CRM",
            Duration::from_secs(30),
            async || (hits.load(Ordering::SeqCst) >= deliveries).then_some(()),
        )
        .await;
    }

    /// The `Idempotency-Key` of every delivery received, in order.
    pub fn idempotency_keys(&self) -> Vec<String> {
        self.keys.lock().unwrap().clone()
    }

    /// Points an app's delivery here, with a short timeout so slow answers time out.
    pub fn configure(&self, settings: &mut Settings) {
        settings.delivery.kind = DeliveryKind::Webhook;
        settings.delivery.url = self.url.clone();
        settings.delivery.timeout_ms = 500;
        settings.delivery.max_attempts = 2;
        settings.delivery.retry_backoff_ms = 10;
    }
}
