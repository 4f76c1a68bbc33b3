//! What every integration test needs: the stack's addresses, a fresh database per test,
//! and polling for data that arrives asynchronously through the collector.

pub mod analysis;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lead_lab::config::{ClickHouseSettings, Settings};
use lead_lab::store::{self, migrate::Migrator, migrate::SchemaTarget};

/// A port nothing listens on right now (the OS picks it), for servers a test starts.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Addresses of the local stack, read from the same variables scripts/stack uses.
#[derive(Debug, Clone)]
pub struct Stack {
    pub clickhouse: ClickHouseSettings,
    pub otlp_grpc: String,
    pub otlp_http: String,
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

impl Stack {
    pub fn from_env() -> Self {
        let ch = format!(
            "http://{}:{}",
            var("LEADLAB_CH_HOST", "127.0.0.1"),
            var("LEADLAB_CH_PORT", "8123")
        );
        let otlp_host = var("LEADLAB_OTLP_HOST", "127.0.0.1");
        Self {
            clickhouse: ClickHouseSettings {
                url: ch,
                user: var("LEADLAB_CH_USER", "default"),
                password: var("LEADLAB_CH_PASSWORD", "").into(),
                database: var("LEADLAB_CLICKHOUSE_DATABASE", "otel"),
            },
            otlp_grpc: format!(
                "http://{otlp_host}:{}",
                var("LEADLAB_OTLP_GRPC_PORT", "4317")
            ),
            otlp_http: format!(
                "http://{otlp_host}:{}",
                var("LEADLAB_OTLP_HTTP_PORT", "4318")
            ),
        }
    }

    /// The stack, after checking it answers: a test never passes by not talking to it.
    pub async fn require() -> Self {
        let stack = Self::from_env();
        let ping = format!("{}/ping", stack.clickhouse.url);
        let answer = reqwest::get(&ping).await.and_then(|r| r.error_for_status());
        if let Err(err) = answer {
            panic!(
                "the local stack does not answer at {ping} ({err}); start it with `scripts/stack up` \
                 (scripts/test does this for you)"
            );
        }
        stack
    }

    /// A client with the crate's defaults (lz4, validation), bound to the stack's database.
    pub fn client(&self) -> clickhouse::Client {
        store::client(&self.clickhouse)
    }

    /// The same, bound to no database.
    pub fn server_client(&self) -> clickhouse::Client {
        store::server_client(&self.clickhouse)
    }
}

/// A database of its own for one test, with the whole schema migrated, dropped at the end.
pub struct TestDatabase {
    pub name: String,
    pub stack: Stack,
}

impl TestDatabase {
    pub async fn migrated() -> Self {
        let db = Self::empty().await;
        let client = db.client();
        Migrator::new(&client, db.target())
            .run()
            .await
            .expect("migrations apply to a fresh database");
        db
    }

    pub async fn empty() -> Self {
        let stack = Stack::require().await;
        let name = unique_name("test");
        Self { name, stack }
    }

    pub fn target(&self) -> SchemaTarget {
        let mut settings = Settings::default();
        settings.clickhouse.database = self.name.clone();
        SchemaTarget::from_settings(&settings).unwrap()
    }

    /// Not bound to the database (it may not exist yet); statements name tables fully.
    pub fn client(&self) -> clickhouse::Client {
        self.stack.server_client()
    }

    /// Bound to this database, for the crate's `insert`, which takes a bare table name.
    pub fn bound_client(&self) -> clickhouse::Client {
        self.client().with_database(&self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let client = self.client();
        let sql = format!("DROP DATABASE IF EXISTS {}", self.name);
        // Drop runs outside async context; a short-lived runtime on its own thread does
        // the cleanup without blocking the test's runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(client.query(&sql).execute()))
        })
        .join();
    }
}

/// `prefix_<32 hex>`: a valid identifier and a value no other test run produces.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// How long telemetry may take to pass the collector and land in ClickHouse.
pub const ARRIVAL: Duration = Duration::from_secs(30);

/// Polls `probe` until it returns Some, or panics with `what` after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the service at `base` answers `/healthz`.
pub async fn healthy(base: &str) {
    let healthz = format!("{base}/healthz");
    eventually(
        "the service to answer",
        Duration::from_secs(30),
        async || {
            let answer = reqwest::get(&healthz).await.ok()?;
            answer.status().is_success().then_some(())
        },
    )
    .await;
}

/// For probes: an error is worth seeing in the test output, then retrying.
pub fn logged<T, E: std::fmt::Display>(result: Result<T, E>) -> Option<T> {
    result
        .map_err(|err| eprintln!("probe failed (will retry): {err}"))
        .ok()
}

/// The repository root.
/// Compares `current` with the reviewed file `tests/snapshots/{file}`;
/// `UPDATE_SNAPSHOTS=1 cargo test <filter>` rewrites it after a reviewed change.
pub fn assert_matches_snapshot(file: &str, current: &str) {
    let path = root().join("tests/snapshots").join(file);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, current).unwrap();
    }
    let snapshot = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        snapshot == current,
        "{} changed; review the difference and run UPDATE_SNAPSHOTS=1 cargo test",
        path.display()
    );
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rotel binary of the stack's venv (scripts/test exports LEADLAB_ROTEL_BIN).
pub fn rotel_binary() -> PathBuf {
    let path = std::env::var("LEADLAB_ROTEL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".venv/lib/python3.11/site-packages/rotel/rotel-agent"));
    assert!(
        path.exists(),
        "rotel not found at {path:?}: run scripts/stack up (scripts/test sets LEADLAB_ROTEL_BIN)"
    );
    path
}

/// A rotel of a test's own, writing into `clickhouse` and configured as scripts/stack
/// configures the shared one (synchronous inserts, lz4, batches that never fill: see
/// docs/reliability.md), its pid file in `dir`.
pub fn rotel_command(clickhouse: &ClickHouseSettings, grpc: u16, http: u16, dir: &Path) -> Command {
    let mut command = Command::new(rotel_binary());
    command
        .args([
            "start",
            "--exporter",
            "clickhouse",
            "--batch-max-size",
            "262144",
        ])
        .args(["--clickhouse-exporter-async-insert", "false"])
        .args(["--clickhouse-exporter-compression", "lz4"])
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
        .args(["--clickhouse-exporter-endpoint", &clickhouse.url])
        .args(["--clickhouse-exporter-database", &clickhouse.database])
        .args(["--clickhouse-exporter-table-prefix", "otel"])
        .args(["--clickhouse-exporter-user", &clickhouse.user])
        .args(["--pid-file", &dir.join("rotel.pid").to_string_lossy()])
        .env(
            "ROTEL_CLICKHOUSE_EXPORTER_PASSWORD",
            clickhouse.password.expose(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// The stack's Redis (scripts/stack up --with-redis; scripts/test starts it), after
/// checking it answers.
pub async fn redis_url() -> String {
    let url = format!(
        "redis://{}:{}",
        var("LEADLAB_REDIS_HOST", "127.0.0.1"),
        var("LEADLAB_REDIS_PORT", "6379")
    );
    let client = redis::Client::open(url.as_str()).expect("a redis:// URL");
    let answer = match client.get_multiplexed_async_connection().await {
        Ok(mut connection) => redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    if let Err(err) = answer {
        panic!(
            "the stack's Redis does not answer at {url} ({err}); start it with \
             `scripts/stack up --with-redis` (scripts/test does this for you)"
        );
    }
    url
}

/// A redis-server of a test's own (one the test may stop without disturbing others),
/// on a free port, with nothing persisted. Killed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port) and waits until it answers.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs it)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        eventually(
            "the private Redis to answer",
            Duration::from_secs(10),
            async || {
                let mut connection = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .ok()
            },
        )
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Points a spawned `lead-lab` (or anything reading `LEADLAB_CLICKHOUSE_*`) at a
/// ClickHouse and one of its databases: the four settings every CLI run in the tests sets.
pub trait ClickHouseEnv {
    fn clickhouse_env(&mut self, clickhouse: &ClickHouseSettings, database: &str) -> &mut Self;
}

macro_rules! clickhouse_env_for {
    ($($command:ty),+) => {$(
        impl ClickHouseEnv for $command {
            fn clickhouse_env(&mut self, clickhouse: &ClickHouseSettings, database: &str) -> &mut Self {
                self.env("LEADLAB_CLICKHOUSE_URL", &clickhouse.url)
                    .env("LEADLAB_CLICKHOUSE_USER", &clickhouse.user)
                    .env("LEADLAB_CLICKHOUSE_PASSWORD", clickhouse.password.expose())
                    .env("LEADLAB_CLICKHOUSE_DATABASE", database)
            }
        }
    )+};
}

clickhouse_env_for!(Command, tokio::process::Command);

/// `lead-lab serve` as a process of its own on a free port (so a test can signal or kill
/// it): `configure` sets what the test needs; the schedule is off, logs go to the test's
/// stderr at warn. Returns once `/healthz` answers.
pub async fn serve_process(configure: impl FnOnce(&mut Command)) -> (std::process::Child, String) {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_lead-lab"));
    command
        .arg("serve")
        .env("LEADLAB_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("LEADLAB_ANALYZER_SCHEDULE_ENABLED", "false")
        .env("LEADLAB_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    configure(&mut command);
    let child = command.spawn().expect("the lead-lab binary runs");
    let base = format!("http://127.0.0.1:{port}");
    healthy(&base).await;
    (child, base)
}
