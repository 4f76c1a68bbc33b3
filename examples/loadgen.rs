//! Load generator and analyzer benchmark for `scripts/bench` (docs/performance.md).
//!
//! ```sh
//! cargo run --release --example loadgen -- trivial --listen 127.0.0.1:18190
//! cargo run --release --example loadgen -- run --url http://127.0.0.1:18180 --mode lead --rate 2000 --duration 10
//! cargo run --release --example loadgen -- run --url http://127.0.0.1:18180 --mode lead --rate 0 --concurrency 64
//! cargo run --release --example loadgen -- analyzer --clickhouse http://127.0.0.1:28123 --rows 100000
//! ```
//!
//! `run` prints one JSON object: requests, status counts, achieved req/s and latency
//! quantiles. At a fixed rate the load is open-loop (a request is started on every tick
//! whether or not earlier ones have answered) and latency is measured from the tick, so a
//! stalled server cannot hide its queueing (no coordinated omission). At `--rate 0` it is
//! closed-loop saturation with `--concurrency` workers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use lead_lab::analyze::{detect, facts};
use lead_lab::config::{ClickHouseSettings, DetectorSettings, Settings};
use lead_lab::store::{self, migrate::Migrator, migrate::SchemaTarget};
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};

#[derive(Parser)]
#[command(about = "lead-lab load generator and analyzer benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A trivial poem server answering 200 to everything: the ceiling.
    Trivial {
        #[arg(long, default_value = "127.0.0.1:18190")]
        listen: String,
    },
    /// Drives load against a server and prints the results as JSON.
    Run(RunArgs),
    /// Times facts + detectors over a bulk-loaded day against a plain count().
    Analyzer(AnalyzerArgs),
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Mode {
    /// GET {url}/ (the trivial server) or any path given with --path.
    Get,
    /// POST {url}/v1/leads with a valid, unique lead.
    Lead,
    /// An attacker without a key: batches of 100 leads and single leads, every one
    /// with a page of its own (docs/reliability.md, threat model).
    Flood,
}

#[derive(Parser, Clone)]
struct RunArgs {
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value = "lead")]
    mode: Mode,
    #[arg(long, default_value = "/")]
    path: String,
    /// Requests per second; 0 = saturation (closed loop).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of unmeasured warm-up before.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Workers at saturation; most requests in flight at a fixed rate.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Tag making emails unique across runs.
    #[arg(long, default_value = "bench")]
    tag: String,
    /// Poll this ClickHouse for sampled lead ids to time response → row visible.
    #[arg(long)]
    visibility_clickhouse: Option<String>,
    #[arg(long, default_value = "otel")]
    database: String,
    /// One sampled lead per this many accepted ones.
    #[arg(long, default_value_t = 200)]
    sample_every: u64,
    /// The server's process id (Linux): its CPU time during the measured window is
    /// reported, per request too, a cost measure that other load on the machine
    /// disturbs far less than throughput.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Another process sharing the machine, as NAME=PID (repeatable): a collector, the
    /// ClickHouse server. Its CPU time in the measured window is reported per request
    /// beside the server's, the load generator's own and the whole machine's, so a
    /// throughput ratio between two targets can be accounted for process by process.
    #[arg(long = "peer-pid", value_parser = parse_peer)]
    peer_pids: Vec<(String, u32)>,
}

fn parse_peer(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PID, got {text:?}"))?;
    let pid = pid.parse().map_err(|_| format!("not a pid: {pid:?}"))?;
    Ok((name.to_owned(), pid))
}

#[derive(Parser)]
struct AnalyzerArgs {
    #[arg(long)]
    clickhouse: String,
    /// Submissions in the analysed day.
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// Baseline days before it, filled with the same volume.
    #[arg(long, default_value_t = 7)]
    baseline_days: u32,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Keep the scratch database (default: drop it).
    #[arg(long)]
    keep: bool,
}

// The same allocator as the service, so the trivial ceiling is measured like for like.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Cmd::Trivial { listen } => trivial(&listen).await,
            Cmd::Run(args) => run(args).await,
            Cmd::Analyzer(args) => analyzer(args).await,
        }
    })
}

// --- the ceiling ----------------------------------------------------------

#[poem::handler]
fn trivial_ok() -> &'static str {
    "ok"
}

async fn trivial(listen: &str) -> anyhow::Result<()> {
    use poem::EndpointExt;
    let app = poem::Route::new()
        .at("/*", trivial_ok)
        .at("/", trivial_ok)
        .map_to_response();
    poem::Server::new(poem::listener::TcpListener::bind(listen))
        .run(app)
        .await?;
    Ok(())
}

// --- load -----------------------------------------------------------------

/// (source, simulator key) from config/local.toml: the demo keys README lists.
const KEYS: [(&str, &str); 6] = [
    ("web_form", "demo-web-form-sim-key"),
    ("funnel_page", "demo-funnel-page-sim-key"),
    ("quiz", "demo-quiz-sim-key"),
    ("qr_code", "demo-qr-code-sim-key"),
    ("partner_api", "demo-partner-api-sim-key"),
    ("ad_webhook", "demo-ad-webhook-sim-key"),
];

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<String, u64>,
}

struct Shared {
    args: RunArgs,
    http: reqwest::Client,
    counter: AtomicU64,
    accepted: AtomicU64,
    measuring_from: Instant,
    tally: Mutex<Tally>,
    visibility: Mutex<Vec<u64>>,
    visibility_missing: AtomicU64,
    pollers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Shared {
    /// One request; latency from `scheduled` (the tick), recorded when measuring.
    async fn one(self: &Arc<Self>, scheduled: Instant) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let request = match self.args.mode {
            Mode::Get => self
                .http
                .get(format!("{}{}", self.args.url, self.args.path)),
            Mode::Lead => {
                let (source, key) = KEYS[(n % KEYS.len() as u64) as usize];
                let body = json!({
                    "name": "Bench Lead",
                    "email": format!("{}-{n}@bench.example.com", self.args.tag),
                    "source": source,
                    "page": "/bench",
                    "consent": true,
                });
                self.http
                    .post(format!("{}/v1/leads", self.args.url))
                    .bearer_auth(key)
                    .json(&body)
            }
            Mode::Flood => {
                let lead = |i: u64| {
                    json!({
                        "name": "Flood Lead",
                        "email": format!("{}-{n}-{i}@flood.example.com", self.args.tag),
                        "source": KEYS[(n % KEYS.len() as u64) as usize].0,
                        "page": format!("/attack/{n}/{i}"),
                        "consent": true,
                    })
                };
                if n.is_multiple_of(2) {
                    let leads: Vec<_> = (0..100).map(lead).collect();
                    self.http
                        .post(format!("{}/v1/leads/batch", self.args.url))
                        .json(&json!({ "leads": leads }))
                } else {
                    self.http
                        .post(format!("{}/v1/leads", self.args.url))
                        .json(&lead(0))
                }
            }
        };
        let outcome = request.send().await;
        let (status, lead_id) = match outcome {
            Ok(response) => {
                let status = response.status().as_u16();
                let id = if status == 201 && self.args.visibility_clickhouse.is_some() {
                    response
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|b| b["lead_id"].as_str().map(str::to_owned))
                } else {
                    let _ = response.bytes().await;
                    None
                };
                (status.to_string(), id)
            }
            Err(err) if err.is_timeout() => ("timeout".to_owned(), None),
            Err(_) => ("error".to_owned(), None),
        };
        let answered = Instant::now();
        if scheduled < self.measuring_from {
            return;
        }
        {
            let mut tally = self.tally.lock().await;
            tally
                .latencies_us
                .push(answered.duration_since(scheduled).as_micros() as u64);
            *tally.statuses.entry(status).or_default() += 1;
        }
        if let Some(id) = lead_id {
            let accepted = self.accepted.fetch_add(1, Ordering::Relaxed);
            if accepted.is_multiple_of(self.args.sample_every.max(1)) {
                let shared = self.clone();
                let poll = tokio::spawn(async move { shared.poll_visible(id, answered).await });
                self.pollers.lock().await.push(poll);
            }
        }
    }

    /// Polls ClickHouse every 100 ms until the lead's row is there (at most 60 s).
    async fn poll_visible(&self, lead_id: String, answered: Instant) {
        let Some(url) = &self.args.visibility_clickhouse else {
            return;
        };
        let client = store::client(&ClickHouseSettings {
            url: url.clone(),
            user: "default".into(),
            password: Default::default(),
            database: self.args.database.clone(),
        });
        while answered.elapsed() < Duration::from_secs(60) {
            let found = client
                .query("SELECT count() FROM lead_submissions WHERE lead_id = ?")
                .bind(&lead_id)
                .fetch_one::<u64>()
                .await;
            if matches!(found, Ok(n) if n > 0) {
                let took = answered.elapsed().as_millis() as u64;
                self.visibility.lock().await.push(took);
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.visibility_missing.fetch_add(1, Ordering::Relaxed);
    }
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64
}

/// USER_HZ, the unit of `/proc`'s CPU times, is 100 on every mainstream Linux
/// architecture (`scripts/bench` checks `getconf CLK_TCK`).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of a process so far (`self` for this one), from
/// `/proc/<pid>/stat`.
fn process_cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces: count fields after its ')'.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(index)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15; the remainder starts at field 3.
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

/// CPU time the whole machine spent busy so far (every state of `/proc/stat`'s `cpu`
/// line but idle and iowait), in seconds summed over the cores.
fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|line| line.starts_with("cpu "))
        .ok_or_else(|| anyhow::anyhow!("no cpu line in /proc/stat"))?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(state, _)| !matches!(state, 3 | 4))
        .map(|(_, t)| t)
        .sum();
    Ok(busy / TICKS_PER_SECOND)
}

/// The CPU clocks read at the start and the end of the measured window: the server's,
/// the peers', this load generator's and the machine's.
struct CpuClocks {
    server: Option<f64>,
    peers: BTreeMap<String, f64>,
    loadgen: f64,
    machine: f64,
}

impl CpuClocks {
    fn read(args: &RunArgs) -> anyhow::Result<Self> {
        let server = args
            .server_pid
            .map(|pid| process_cpu_seconds(&pid.to_string()))
            .transpose()?;
        let peers = args
            .peer_pids
            .iter()
            .map(|(name, pid)| Ok((name.clone(), process_cpu_seconds(&pid.to_string())?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            server,
            peers,
            loadgen: process_cpu_seconds("self")?,
            machine: machine_busy_seconds()?,
        })
    }

    /// CPU µs per request of each clock between `start` and `self`.
    fn per_request(&self, start: &Self, requests: u64) -> serde_json::Value {
        let us = |seconds: f64| seconds * 1e6 / requests.max(1) as f64;
        let peers: BTreeMap<&str, f64> = self
            .peers
            .iter()
            .map(|(name, end)| (name.as_str(), us(end - start.peers[name])))
            .collect();
        json!({
            "server_cpu_s": self.server.zip(start.server).map(|(end, start)| end - start),
            "server_cpu_us_per_request": self.server.zip(start.server).map(|(end, start)| us(end - start)),
            "peers_cpu_us_per_request": peers,
            "loadgen_cpu_us_per_request": us(self.loadgen - start.loadgen),
            "machine_cpu_us_per_request": us(self.machine - start.machine),
        })
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(args.concurrency.max(16))
        .tcp_nodelay(true)
        .build()?;
    let start = Instant::now();
    let warmup = Duration::from_secs(args.warmup);
    let measured = Duration::from_secs(args.duration);
    let shared = Arc::new(Shared {
        args: args.clone(),
        http,
        counter: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        measuring_from: start + warmup,
        tally: Mutex::new(Tally::default()),
        visibility: Mutex::new(Vec::new()),
        visibility_missing: AtomicU64::new(0),
        pollers: Mutex::new(Vec::new()),
    });
    let end = start + warmup + measured;
    let cpu_at_measuring_start = {
        let (at, args) = (start + warmup, args.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            CpuClocks::read(&args)
        })
    };
    let mut late = 0u64;
    if args.rate == 0 {
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| {
                let shared = shared.clone();
                tokio::spawn(async move {
                    while Instant::now() < end {
                        shared.one(Instant::now()).await;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await?;
        }
    } else {
        // Open loop: requests start on schedule; the semaphore only bounds memory, and a
        // tick that finds it exhausted is counted as late (the server cannot keep up).
        let limit = Arc::new(Semaphore::new(args.concurrency));
        let period = Duration::from_secs_f64(1.0 / args.rate as f64);
        let mut next = start;
        let mut tasks = tokio::task::JoinSet::new();
        while next < end {
            let now = Instant::now();
            if next > now {
                tokio::time::sleep_until(next.into()).await;
            }
            let scheduled = next;
            next += period;
            match limit.clone().try_acquire_owned() {
                Ok(permit) => {
                    let shared = shared.clone();
                    tasks.spawn(async move {
                        shared.one(scheduled).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    if scheduled >= start + warmup {
                        late += 1;
                    }
                }
            }
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }
    let elapsed = start.elapsed().saturating_sub(warmup).as_secs_f64();
    let cpu_at_measuring_end = CpuClocks::read(&args)?;
    let cpu_at_measuring_start = cpu_at_measuring_start.await??;
    let pollers = std::mem::take(&mut *shared.pollers.lock().await);
    for poll in pollers {
        let _ = poll.await;
    }

    let mut tally = shared.tally.lock().await;
    tally.latencies_us.sort_unstable();
    let count = tally.latencies_us.len() as u64;
    let ok: u64 = tally
        .statuses
        .iter()
        .filter(|(status, _)| status.starts_with('2'))
        .map(|(_, n)| n)
        .sum();
    let ms = |q: f64| quantile(&tally.latencies_us, q) / 1000.0;
    let mut visibility = shared.visibility.lock().await.clone();
    visibility.sort_unstable();
    let mut report = json!({
        "mode": match args.mode { Mode::Get => "get", Mode::Lead => "lead", Mode::Flood => "flood" },
        "target_rate": args.rate,
        "duration_s": elapsed,
        "requests": count,
        "ok": ok,
        "late": late,
        "statuses": tally.statuses,
        "rps": ok as f64 / elapsed,
        "rps_all": count as f64 / elapsed,
        "p50_ms": ms(0.50),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
        "max_ms": ms(1.0),
        "visibility_samples": visibility.len(),
        "visibility_missing": shared.visibility_missing.load(Ordering::Relaxed),
        "visibility_p50_ms": quantile(&visibility, 0.50),
        "visibility_p95_ms": quantile(&visibility, 0.95),
    });
    if let (Some(report), serde_json::Value::Object(cpu)) = (
        report.as_object_mut(),
        cpu_at_measuring_end.per_request(&cpu_at_measuring_start, count),
    ) {
        report.extend(cpu);
    }
    println!("{report}");
    Ok(())
}

// --- analyzer -------------------------------------------------------------

/// The day analysed; any past day works, the fixture writes it.
const DAY: &str = "2026-11-20";

fn fixture_sql(database: &str, day: &str, rows: u64, service: &str) -> String {
    // A plausible day: six sources, four endpoints/pages, 5% rejected with a mix of
    // reasons, 1% failed downstream, submitters repeating a little, latency 1–6 ms.
    format!(
        "INSERT INTO {database}.lead_submissions \
         SELECT \
           toDateTime64('{day} 00:00:00', 9, 'UTC') + toIntervalMillisecond(intDiv(number * 86400000, {rows})) AS event_time, \
           hex(cityHash64(number, 't')) AS trace_id, \
           hex(cityHash64(number, 's')) AS span_id, \
           '{service}' AS service, \
           'bench-instance' AS instance, \
           ['web_form','funnel_page','quiz','qr_code','partner_api','ad_webhook'][number % 6 + 1] AS source, \
           ['leads','leads','forms','batch'][number % 4 + 1] AS endpoint, \
           ['/pricing','/demo','/quiz/start','/checkout','/qr/poster'][number % 5 + 1] AS page, \
           if(endpoint = 'forms', 'pricing-contact', '') AS form_id, \
           multiIf(number % 20 = 7, 'rejected', number % 100 = 13, 'failed', 'accepted') AS outcome, \
           multiIf(outcome = 'rejected', ['invalid_field','duplicate','rate_limited','unauthorized','source_key_mismatch'][intDiv(number, 20) % 5 + 1], \
                   outcome = 'failed', 'downstream_error', '') AS reason, \
           if(reason = 'invalid_field', ['email','phone','name'][number % 3 + 1], '') AS field, \
           substring(hex(cityHash64(number % {submitters})), 1, 16) AS submitter_hash, \
           concat(source, '-site') AS client_id, \
           if(outcome = 'accepted', toString(generateUUIDv4(number)), '') AS lead_id, \
           multiIf(outcome = 'accepted', 201, reason = 'invalid_field', 422, reason = 'duplicate', 409, \
                   reason = 'rate_limited', 429, reason = 'unauthorized', 401, reason = 'source_key_mismatch', 403, 502) AS http_status, \
           if(outcome = 'rejected', 0, 1) AS delivery_attempts, \
           1000000 + (cityHash64(number, 'd') % 5000000) AS duration_ns, \
           0 AS replayed \
         FROM numbers({rows})",
        submitters = (rows / 3).max(1),
    )
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn analyzer(args: AnalyzerArgs) -> anyhow::Result<()> {
    let database = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let service = "lead-lab-bench-analyzer";
    let ch = ClickHouseSettings {
        url: args.clickhouse.clone(),
        user: "default".into(),
        password: Default::default(),
        database: database.clone(),
    };
    let settings = Settings {
        clickhouse: ch.clone(),
        ..Settings::default()
    };
    let server = store::server_client(&ch);
    Migrator::new(&server, SchemaTarget::from_settings(&settings)?)
        .run()
        .await?;
    let day: NaiveDate = DAY.parse()?;
    let load_start = Instant::now();
    for back in 0..=args.baseline_days {
        let date = day - chrono::Days::new(u64::from(back));
        server
            .query(&fixture_sql(
                &database,
                &date.to_string(),
                args.rows,
                service,
            ))
            .execute()
            .await?;
    }
    let load_s = load_start.elapsed().as_secs_f64();
    let client = store::client(&ch);
    let detectors = DetectorSettings::default();
    let query = facts::FactsQuery {
        day,
        time_zone: chrono_tz::UTC,
        baseline_days: args.baseline_days.max(1),
        service: Some(service.into()),
        burst_per_minute: detectors.burst_per_minute,
    };
    let count_sql = format!(
        "SELECT count() FROM lead_submissions WHERE service = '{service}' \
         AND event_time >= toDateTime64('{DAY} 00:00:00', 9, 'UTC') \
         AND event_time < toDateTime64('{DAY} 00:00:00', 9, 'UTC') + toIntervalDay(1)"
    );
    let (mut floors, mut analyses) = (Vec::new(), Vec::new());
    let (mut findings, mut counted) = (0usize, 0u64);
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        counted = client.query(&count_sql).fetch_one::<u64>().await?;
        floors.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let day_facts = facts::compute(&client, &query, Utc::now()).await?;
        findings = detect::detect(&day_facts, &detectors).len();
        analyses.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    if !args.keep {
        server
            .query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute()
            .await?;
    }
    let (floor, analysis) = (median(floors), median(analyses));
    println!(
        "{}",
        json!({
            "rows_per_day": args.rows,
            "rows_counted": counted,
            "baseline_days": args.baseline_days,
            "load_s": load_s,
            "count_ms": floor,
            "facts_detect_ms": analysis,
            "ratio": analysis / floor,
            "findings": findings,
        })
    );
    Ok(())
}
