//! `lead-lab migrate` creates the schema once and is a no-op afterwards.

use std::process::{Command, Output};

use lead_lab::store::migrate::{MIGRATIONS, MigrationState, Migrator};

use crate::support::{ClickHouseEnv, TestDatabase};

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct TableDdl {
    name: String,
    create_table_query: String,
}

async fn schema_of(db: &TestDatabase) -> Vec<TableDdl> {
    db.client()
        .query(
            "SELECT name, create_table_query FROM system.tables WHERE database = ? ORDER BY name",
        )
        .bind(&db.name)
        .fetch_all()
        .await
        .unwrap()
}

async fn recorded_versions(db: &TestDatabase) -> u64 {
    db.client()
        .query(&format!(
            "SELECT count() FROM {}.schema_migrations",
            db.name
        ))
        .fetch_one()
        .await
        .unwrap()
}

fn lead_lab_migrate(db: &TestDatabase, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lead-lab"))
        .arg("migrate")
        .args(extra)
        .clickhouse_env(&db.stack.clickhouse, &db.name)
        .env_remove("LEADLAB_CONFIG")
        .output()
        .expect("the lead-lab binary runs")
}

#[tokio::test]
async fn the_cli_migrates_a_fresh_database_and_a_second_run_changes_nothing() {
    let db = TestDatabase::empty().await;

    let first = lead_lab_migrate(&db, &[]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "{} applied now, 0 already applied",
            MIGRATIONS.len()
        )),
        "{stdout}"
    );
    let schema_after_first = schema_of(&db).await;
    let expected_tables = [
        "ai_summaries",
        "analysis_run_states",
        "lead_latency_15m",
        "lead_latency_15m_mv",
        "lead_submissions",
        "lead_submissions_15m",
        "lead_submissions_15m_mv",
        "lead_submissions_mv",
        "otel_logs",
        "otel_metrics_exponential_histogram",
        "otel_metrics_gauge",
        "otel_metrics_histogram",
        "otel_metrics_sum",
        "otel_metrics_summary",
        "otel_traces",
        "otel_traces_trace_id_ts",
        "otel_traces_trace_id_ts_mv",
        "schema_migrations",
    ];
    let names: Vec<&str> = schema_after_first.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, expected_tables);

    let second = lead_lab_migrate(&db, &[]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success());
    assert!(
        stdout.contains(&format!(
            "0 applied now, {} already applied",
            MIGRATIONS.len()
        )),
        "{stdout}"
    );
    assert_eq!(schema_of(&db).await, schema_after_first);
    assert_eq!(recorded_versions(&db).await, MIGRATIONS.len() as u64);
}

#[tokio::test]
async fn dry_run_lists_pending_migrations_without_applying_them() {
    let db = TestDatabase::empty().await;
    let output = lead_lab_migrate(&db, &["--dry-run"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.matches("pending").count(),
        MIGRATIONS.len(),
        "{stdout}"
    );
    assert!(schema_of(&db).await.is_empty(), "dry run created tables");
}

#[tokio::test]
async fn an_applied_migration_that_changed_is_refused() {
    let db = TestDatabase::migrated().await;
    db.client()
        .query(&format!(
            "INSERT INTO {}.schema_migrations (version, name, checksum) VALUES (1, 'otel_traces', 'edited')",
            db.name
        ))
        .execute()
        .await
        .unwrap();
    let client = db.client();
    let err = Migrator::new(&client, db.target()).run().await.unwrap_err();
    assert!(err.to_string().contains("must not change"), "{err}");

    let output = lead_lab_migrate(&db, &[]);
    assert_eq!(
        output.status.code(),
        Some(5),
        "exit code for a changed migration"
    );
}

#[tokio::test]
async fn status_reports_every_migration_applied_after_a_run() {
    let db = TestDatabase::migrated().await;
    let client = db.client();
    let status = Migrator::new(&client, db.target()).status().await.unwrap();
    assert_eq!(status.len(), MIGRATIONS.len());
    assert!(status.iter().all(|(_, s)| *s == MigrationState::Applied));
}

#[tokio::test]
async fn an_unreachable_clickhouse_exits_with_4() {
    let output = Command::new(env!("CARGO_BIN_EXE_lead-lab"))
        .arg("migrate")
        .env("LEADLAB_CLICKHOUSE_URL", "http://127.0.0.1:9")
        .env_remove("LEADLAB_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&output.stderr).contains("error:"));
}

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct RolledUp {
    submissions: u64,
    by_quarter_hour: u64,
    by_latency_quarter_hour: u64,
}

async fn rolled_up(db: &TestDatabase) -> RolledUp {
    let sql = format!(
        "SELECT ifNull((SELECT count() FROM {db}.lead_submissions), 0) AS submissions, \
         ifNull((SELECT toUInt64(sum(submissions)) FROM {db}.lead_submissions_15m), 0) AS by_quarter_hour, \
         ifNull((SELECT toUInt64(sum(submissions)) FROM {db}.lead_latency_15m), 0) AS by_latency_quarter_hour",
        db = db.name
    );
    db.client().query(&sql).fetch_one().await.unwrap()
}

async fn insert_submissions(db: &TestDatabase, count: u64) {
    let sql = format!(
        "INSERT INTO {}.lead_submissions (event_time, service, source, outcome, duration_ns) \
         SELECT now64(9) - toIntervalSecond(number * 60), 'svc', 'web', 'accepted', 1000000 \
         FROM numbers({count})",
        db.name
    );
    db.client().query(&sql).execute().await.unwrap();
}

/// Applies 0006 again as if for the first time (its tables and views kept, its record
/// gone): what an interrupted run's successor does.
async fn forget_migration_6(db: &TestDatabase) {
    let sql = format!(
        "ALTER TABLE {}.schema_migrations DELETE WHERE version = 6 SETTINGS mutations_sync = 2",
        db.name
    );
    db.client().query(&sql).execute().await.unwrap();
}

#[tokio::test]
async fn the_rollups_take_in_older_submissions_once_and_newer_ones_as_they_come() {
    let db = TestDatabase::migrated().await;
    let client = db.client();
    for object in [
        "lead_submissions_15m_mv",
        "lead_latency_15m_mv",
        "lead_submissions_15m",
        "lead_latency_15m",
    ] {
        let sql = format!("DROP TABLE {}.{object}", db.name);
        client.query(&sql).execute().await.unwrap();
    }
    forget_migration_6(&db).await;
    insert_submissions(&db, 300).await; // stored before the rollups existed

    Migrator::new(&client, db.target()).run().await.unwrap();
    let expected = |n| RolledUp {
        submissions: n,
        by_quarter_hour: n,
        by_latency_quarter_hour: n,
    };
    assert_eq!(rolled_up(&db).await, expected(300), "backfilled");

    forget_migration_6(&db).await;
    Migrator::new(&client, db.target()).run().await.unwrap();
    assert_eq!(rolled_up(&db).await, expected(300), "not counted twice");

    insert_submissions(&db, 40).await;
    assert_eq!(rolled_up(&db).await, expected(340), "kept by the views");
}

/// Applies 0008 again as if for the first time (what an interrupted run's successor does).
async fn forget_migration(db: &TestDatabase, version: u32) {
    let sql = format!(
        "ALTER TABLE {}.schema_migrations DELETE WHERE version = {version} SETTINGS mutations_sync = 2",
        db.name
    );
    db.client().query(&sql).execute().await.unwrap();
}

async fn run_states(db: &TestDatabase) -> u64 {
    let sql = format!("SELECT count() FROM {}.analysis_run_states", db.name);
    db.client().query(&sql).fetch_one().await.unwrap()
}

#[tokio::test]
async fn run_states_survive_merges_and_older_runs_move_over_once() {
    let db = TestDatabase::migrated().await;
    let client = db.client();
    // A database from before 0008: run states in the old ReplacingMergeTree table.
    client
        .query(&format!("DROP TABLE {}.analysis_run_states", db.name))
        .execute()
        .await
        .unwrap();
    forget_migration(&db, 8).await;
    let old_sql = lead_lab::store::migrate::MIGRATIONS
        .iter()
        .find(|m| m.version == 5)
        .unwrap()
        .sql;
    let create_old = db
        .target()
        .render(5, old_sql)
        .unwrap()
        .split(';')
        .find(|s| s.contains("analysis_runs"))
        .unwrap()
        .to_owned();
    client.query(&create_old).execute().await.unwrap();
    let insert = |table: &str, status: &str, ms: u32| {
        format!(
            "INSERT INTO {}.{table} (run_id, day, status, trigger, queued_at, updated_at) \
             VALUES ('00000000-0000-0000-0000-000000000001', '2026-11-30', '{status}', 'manual', \
                     now64(3), toDateTime64('2026-12-01 00:00:00', 3, 'UTC') + toIntervalMillisecond({ms}))",
            db.name
        )
    };
    for (status, ms) in [("queued", 0), ("running", 1)] {
        client
            .query(&insert("analysis_runs", status, ms))
            .execute()
            .await
            .unwrap();
    }

    Migrator::new(&client, db.target()).run().await.unwrap();
    assert_eq!(run_states(&db).await, 2, "both states moved over");
    forget_migration(&db, 8).await;
    Migrator::new(&client, db.target()).run().await.unwrap();
    assert_eq!(
        run_states(&db).await,
        2,
        "not copied twice when 0008 runs again"
    );

    client
        .query(&insert("analysis_run_states", "succeeded", 2))
        .execute()
        .await
        .unwrap();
    let optimize = format!("OPTIMIZE TABLE {}.analysis_run_states FINAL", db.name);
    client.query(&optimize).execute().await.unwrap();
    assert_eq!(
        run_states(&db).await,
        3,
        "merges keep every state of the run"
    );
}
