//! The console in a real browser: headless Chromium from Debian (`apt-get install
//! chromium`), no driver. `--dump-dom` after `--virtual-time-budget` gives the DOM once
//! the page's fetches and rendering have finished; `--screenshot` saves a picture under
//! `test-output/` (gitignored). `?refresh=0` stops the 5 s refresh, so virtual time
//! runs out quickly once the page is done.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::NaiveDate;
use lead_lab::analyze::records::{Records, SummaryRow};
use serde_json::json;

use crate::fake_ollama::{FakeOllama, Reply};
use crate::simulate::{SCENARIOS, backfill, lab, landed, week_start};
use crate::support::analysis::{ADMIN_TOKEN, analysis_app, plain_report};
use crate::support::{TestDatabase, free_port};

pub fn chromium() -> PathBuf {
    for candidate in ["chromium", "chromium-browser"] {
        let found = std::process::Command::new("which")
            .arg(candidate)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        if let Some(path) = found {
            return path;
        }
    }
    panic!("headless Chromium is needed: apt-get install -y chromium");
}

fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-output");
    std::fs::create_dir_all(&dir).expect("test-output/ can be created");
    dir
}

enum Capture<'a> {
    Dom,
    Screenshot(&'a Path),
}

/// Runs headless Chromium on `url` in a fresh profile; returns the dumped DOM (or an
/// empty string for a screenshot).
async fn browse(
    url: &str,
    width: u32,
    height: u32,
    budget_ms: u32,
    capture: Capture<'_>,
) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(chromium());
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
    ]);
    command.arg(format!("--user-data-dir={}", profile.path().display()));
    command.arg(format!("--window-size={width},{height}"));
    command.arg(format!("--virtual-time-budget={budget_ms}"));
    match capture {
        Capture::Dom => command.arg("--dump-dom"),
        Capture::Screenshot(file) => command.arg(format!("--screenshot={}", file.display())),
    };
    command
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("chromium finishes within 3 minutes")
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub async fn dom(url: &str, width: u32, height: u32, budget_ms: u32) -> String {
    browse(url, width, height, budget_ms, Capture::Dom).await
}

async fn screenshot(url: &str, width: u32, height: u32, name: &str) -> PathBuf {
    let file = output_dir().join(name);
    let _ = std::fs::remove_file(&file);
    browse(url, width, height, 10_000, Capture::Screenshot(&file)).await;
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 1_000,
        "{} was written ({size} bytes)",
        file.display()
    );
    file
}

/// The text of the first element after `anchor` (a unique attribute) whose
/// `data-field` is `field`.
pub fn field_after(dom: &str, anchor: &str, field: &str) -> String {
    let start = dom
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor} in the DOM"));
    let rest = &dom[start..];
    let marker = format!("data-field=\"{field}\">");
    let at = rest
        .find(&marker)
        .unwrap_or_else(|| panic!("{field} after {anchor}"))
        + marker.len();
    rest[at..].split('<').next().unwrap_or_default().to_owned()
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct DayRow {
    day: String,
    total: u64,
    accepted: u64,
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_the_numbers_of_lead_submissions() {
    chromium();
    let crm = free_port();
    let mut app = lab(crm).await;
    let scenario = PathBuf::from(SCENARIOS).join("quiet.toml");
    let report = backfill(&app, &scenario, week_start(), 2, 3, crm).await;
    landed(&app, report.summary.total()).await;

    let days: Vec<DayRow> = app
        .stack
        .client()
        .query(
            "SELECT toString(toDate(event_time, 'UTC')) AS day, count() AS total, \
             countIf(outcome = 'accepted') AS accepted FROM lead_submissions \
             WHERE service = ? AND event_time >= now() - INTERVAL 20 DAY GROUP BY day ORDER BY day",
        )
        .bind(&app.service)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(days.len(), 2, "two backfilled days: {days:?}");
    let total: u64 = days.iter().map(|d| d.total).sum();
    let accepted: u64 = days.iter().map(|d| d.accepted).sum();
    assert_eq!(total, report.summary.total());

    let stats = app.get_json("/v1/stats/overview", None).await;
    assert_eq!(stats["all_time"]["attempts"], json!(total), "{stats}");
    assert_eq!(stats["all_time"]["accepted"], json!(accepted), "{stats}");

    let url = app.url("/?refresh=0&grafana=http://grafana.example:3000");
    let page = dom(&url, 1440, 900, 10_000).await;
    assert!(
        page.contains("data-stats=\"loaded\""),
        "the stats loaded: {page}"
    );
    let all = "data-card=\"all_time\"";
    assert_eq!(field_after(&page, all, "attempts"), thousands(total));
    assert_eq!(field_after(&page, all, "accepted"), thousands(accepted));
    let rate = format!("{:.1}%", accepted as f64 * 100.0 / total as f64);
    assert_eq!(field_after(&page, all, "success_rate"), rate);
    assert_eq!(field_after(&page, "data-card=\"today\"", "attempts"), "0");
    for day in &days {
        let bar = format!("data-day=\"{}\" data-total=\"{}\"", day.day, day.total);
        assert!(page.contains(&bar), "the chart has {bar}");
    }
    assert_eq!(
        page.matches("class=\"bar\"").count(),
        14,
        "fourteen days in the chart"
    );
    assert!(
        page.contains("<tr data-name=\"web_form\">"),
        "per-source table"
    );
    assert!(
        page.contains("grafana.example:3000/explore"),
        "trace links to Grafana"
    );
    assert!(!page.contains("@example"), "no email on the page");

    let shot = screenshot(&url, 1440, 900, "console-1440.png").await;
    eprintln!("screenshot: {}", shot.display());
    app.stop().await;
}

fn summary_row(day: NaiveDate, text: &str) -> SummaryRow {
    SummaryRow {
        run_id: uuid::Uuid::now_v7(),
        day,
        version: 1,
        generated_at: chrono::Utc::now(),
        generator: "model".into(),
        model: "llama3.1:8b".into(),
        time_zone: "UTC".into(),
        executive_summary: text.into(),
        user_behavior: "<script>window.__xss=1</script>".into(),
        system_behavior: "fine".into(),
        misconfiguration_signals:
            json!([{"signal": "<b>bold</b>", "evidence": "x", "severity": "low"}]).to_string(),
        confidence: "medium".into(),
        confidence_reasons: vec!["<i>reason</i>".into()],
        scope: json!({"day": day.to_string()}).to_string(),
        findings: "[]".into(),
        grounding_violations: vec!["<u>42</u>".into()],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn markup_in_a_report_is_shown_as_text() {
    chromium();
    let db = TestDatabase::migrated().await;
    let day = chrono::Utc::now().date_naive() - chrono::Duration::days(3);
    let attack = "<img src=x onerror=document.title='pwned'>";
    Records::new(db.bound_client())
        .save_summary(&summary_row(day, attack))
        .await
        .unwrap();
    let mut app = analysis_app(&db, None, |_| {}).await;
    let url = app.url(&format!("/?day={day}&refresh=0#token={ADMIN_TOKEN}"));
    let page = dom(&url, 1440, 900, 10_000).await;
    assert!(
        page.contains("&lt;img src=x onerror=document.title='pwned'&gt;"),
        "the summary is shown as text: {page}"
    );
    assert!(page.contains("&lt;script&gt;window.__xss=1&lt;/script&gt;"));
    assert!(page.contains("&lt;u&gt;42&lt;/u&gt;"), "violations as text");
    assert!(!page.contains("<img"), "no element was made from the data");
    assert!(!page.contains("pwned</title>"), "the title is untouched");
    assert!(page.contains("<title>lead-lab console</title>"));
    assert!(!page.contains(&format!("#token={ADMIN_TOKEN}")));
    screenshot(&url, 1440, 2400, "console-report.png").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_analyze_flow_runs_from_the_page_and_it_fits_a_phone() {
    chromium();
    let day = chrono::Utc::now().date_naive() - chrono::Duration::days(2);
    let ollama = FakeOllama::start(vec![Reply::GoodJson(plain_report(&day.to_string()))]).await;
    let db = TestDatabase::migrated().await;
    let mut app = analysis_app(&db, Some(&ollama), |_| {}).await;
    // Ten virtual minutes: each poll waits one virtual second, so this allows hundreds
    // of polls while the real analysis runs.
    let url = app.url(&format!(
        "/?day={day}&analyze=1&refresh=0#token={ADMIN_TOKEN}"
    ));
    let page = dom(&url, 1440, 900, 600_000).await;
    assert!(
        page.contains("data-status=\"succeeded\""),
        "the run finished: {page}"
    );
    assert!(page.contains("Leads arrived through the configured sources."));
    assert!(page.contains("People submitted leads during the day."));
    assert!(page.contains("complete day"), "confidence reasons");
    assert!(page.contains("v1 · model · "), "the version list");
    let runs = app
        .get_json(&format!("/v1/analyses?day={day}"), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "one run: {runs}");
    assert_eq!(runs[0]["trigger"], "manual");

    let phone = app.url(&format!("/?day={day}&refresh=0#token={ADMIN_TOKEN}"));
    screenshot(&phone, 375, 800, "console-375.png").await;
    let small = dom(&phone, 375, 800, 10_000).await;
    assert!(small.contains("data-stats=\"loaded\""), "{small}");
    assert!(
        small.contains("data-overflow=\"false\""),
        "nothing wider than the screen at 375 px"
    );
    assert!(small.contains("Leads arrived through the configured sources."));
    app.stop().await;
}
