//! Versioned, idempotent schema migrations (the SQL files under `clickhouse/migrations`).
//!
//! ClickHouse has no transactional DDL, so every statement is written to be safe to
//! re-run (`IF NOT EXISTS`), and a version is recorded in `schema_migrations` only after
//! all of its statements succeeded: an interrupted run is finished by the next one.
//! An applied migration whose file changed since is refused rather than half-applied.

use clickhouse::Client;
use sha2::{Digest, Sha256};

use super::layout::{self, LOCAL_SUFFIX, SHARDED_TABLES};
use super::{InvalidIdentifier, check_identifier};
use crate::config::Settings;

/// One migration file, embedded in the binary so a deployed `lead-lab` carries its schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $prefix:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(
                "../../clickhouse/migrations/",
                $prefix,
                "_",
                $name,
                ".sql"
            )),
        }
    };
}

/// In version order. A test checks this list against the files on disk.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001", "otel_traces"),
    migration!(2, "0002", "otel_logs"),
    migration!(3, "0003", "otel_metrics"),
    migration!(4, "0004", "lead_submissions"),
    migration!(5, "0005", "analysis"),
    migration!(6, "0006", "submission_rollups"),
    migration!(7, "0007", "record_attribution"),
    migration!(8, "0008", "analysis_run_states"),
];

impl Migration {
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Identifier(#[from] InvalidIdentifier),
    #[error(
        "schema.sharded needs schema.cluster: the Distributed tables read that cluster's shards"
    )]
    ShardedWithoutCluster,
    #[error("migration {version} uses unknown placeholder ${{{placeholder}}}")]
    UnknownPlaceholder { version: u32, placeholder: String },
    #[error(
        "migration {version}_{name} was applied with checksum {applied} but the file now has {current}; \
         applied migrations must not change: add a new migration instead"
    )]
    ChecksumMismatch {
        version: u32,
        name: &'static str,
        applied: String,
        current: String,
    },
    #[error("migration {version} failed on `{statement}`: {source}")]
    Statement {
        version: u32,
        statement: String,
        source: clickhouse::error::Error,
    },
    #[error("the Distributed table statement `{statement}` failed: {source}")]
    Distributed {
        statement: String,
        source: clickhouse::error::Error,
    },
    #[error("cannot read or record applied migrations: {0}")]
    Bookkeeping(#[from] clickhouse::error::Error),
}

/// Where and how the schema is created: the values the SQL's `${...}` placeholders take.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaTarget {
    pub database: String,
    pub cluster: Option<String>,
    pub replicated: bool,
    /// Local `*_local` tables under Distributed ones (src/store/layout.rs).
    pub sharded: bool,
    pub telemetry_ttl_days: u32,
    pub submissions_ttl_days: u32,
}

/// The statements that make `schema_migrations`, run before any migration.
const BOOKKEEPING: &str = "CREATE DATABASE IF NOT EXISTS ${DATABASE} ${ON_CLUSTER};
             CREATE TABLE IF NOT EXISTS ${DATABASE}.schema_migrations ${ON_CLUSTER} (
                 version    UInt32,
                 name       String,
                 checksum   String,
                 applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
             ) ENGINE = ${ENGINE_PREFIX}ReplacingMergeTree ORDER BY version";

impl SchemaTarget {
    pub fn from_settings(settings: &Settings) -> Result<Self, MigrateError> {
        let database = check_identifier(&settings.clickhouse.database)?.to_owned();
        if let Some(cluster) = &settings.schema.cluster {
            check_identifier(cluster)?;
        }
        if settings.schema.sharded && settings.schema.cluster.is_none() {
            return Err(MigrateError::ShardedWithoutCluster);
        }
        Ok(Self {
            database,
            cluster: settings.schema.cluster.clone(),
            replicated: settings.schema.replicated,
            sharded: settings.schema.sharded,
            telemetry_ttl_days: settings.schema.telemetry_ttl_days,
            submissions_ttl_days: settings.schema.submissions_ttl_days,
        })
    }

    fn placeholder(&self, name: &str) -> Option<String> {
        Some(match name {
            "DATABASE" => self.database.clone(),
            "ON_CLUSTER" => self
                .cluster
                .as_ref()
                .map(|c| format!("ON CLUSTER '{c}'"))
                .unwrap_or_default(),
            "ENGINE_PREFIX" => if self.replicated { "Replicated" } else { "" }.to_owned(),
            "TELEMETRY_TTL_DAYS" => self.telemetry_ttl_days.to_string(),
            "SUBMISSIONS_TTL_DAYS" => self.submissions_ttl_days.to_string(),
            _ => return None,
        })
    }

    /// Replaces every `${NAME}` in `sql`; an unknown name is an error, not left behind.
    /// In the sharded layout `${DATABASE}.<sharded table>` names the table's local part.
    pub fn render(&self, version: u32, sql: &str) -> Result<String, MigrateError> {
        let mut out = String::with_capacity(sql.len());
        let mut rest = sql;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').unwrap_or(after.len());
            let name = &after[..end];
            let value = self
                .placeholder(name)
                .ok_or_else(|| MigrateError::UnknownPlaceholder {
                    version,
                    placeholder: name.to_owned(),
                })?;
            out.push_str(&value);
            rest = after.get(end + 1..).unwrap_or("");
            if let Some((local, after_table)) = self.local_table_after(name, rest) {
                out.push('.');
                out.push_str(&local);
                rest = after_table;
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// In the sharded layout, the local name of the sharded table that follows a
    /// `${DATABASE}` (`rest` is what follows the placeholder), and what follows the name.
    fn local_table_after<'a>(&self, placeholder: &str, rest: &'a str) -> Option<(String, &'a str)> {
        let table = rest
            .strip_prefix('.')
            .filter(|_| self.sharded && placeholder == "DATABASE")?;
        let (local, len) = layout::local_name_at(table)?;
        Some((local, &table[len..]))
    }

    /// The Distributed tables of the sharded layout; none in the other layouts.
    pub fn distributed_tables(&self) -> Vec<String> {
        match (&self.cluster, self.sharded) {
            (Some(cluster), true) => layout::distributed_tables(&self.database, cluster),
            _ => Vec::new(),
        }
    }

    /// Every statement a migration of an empty database runs, in order, each group
    /// headed by a comment naming where it comes from: what the snapshot tests pin.
    pub fn fresh_database_script(&self) -> Result<String, MigrateError> {
        let mut script = String::new();
        let mut section = |title: &str, statements: Vec<String>| {
            script.push_str(&format!("-- {title}\n"));
            for statement in statements {
                script.push_str(&statement);
                script.push_str(";\n\n");
            }
        };
        section(
            "bookkeeping",
            split_statements(&self.render(0, BOOKKEEPING)?),
        );
        for m in MIGRATIONS {
            let sql = self.render(m.version, m.sql)?;
            section(
                &format!("{:04}_{}", m.version, m.name),
                split_statements(&sql),
            );
        }
        section("distributed tables", self.distributed_tables());
        Ok(script)
    }
}

/// Splits a file into statements on `;` outside quotes and comments, dropping
/// statements that are only comments.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                current.push(c);
                if c == '\\' {
                    current.extend(chars.next());
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '-' && chars.peek() == Some(&'-') => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            None if c == ';' => statements.push(std::mem::take(&mut current)),
            None => {
                if matches!(c, '\'' | '"' | '`') {
                    quote = Some(c);
                }
                current.push(c);
            }
        }
    }
    statements.push(current);
    statements
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationState {
    Applied,
    Pending,
}

#[derive(Debug, Default)]
pub struct MigrationReport {
    /// Migrations this run applied, in order.
    pub applied: Vec<Migration>,
    /// Migrations that were already applied before this run.
    pub already_applied: usize,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct AppliedRow {
    version: u32,
    checksum: String,
}

pub struct Migrator<'a> {
    client: &'a Client,
    target: SchemaTarget,
}

impl<'a> Migrator<'a> {
    pub fn new(client: &'a Client, target: SchemaTarget) -> Self {
        Self { client, target }
    }

    /// Applies every pending migration; a second run with nothing pending changes nothing.
    #[tracing::instrument(name = "schema.migrate", skip_all, fields(db.namespace = %self.target.database))]
    pub async fn run(&self) -> Result<MigrationReport, MigrateError> {
        self.ensure_bookkeeping().await?;
        let applied = self.applied_checksums().await?;
        let mut report = MigrationReport::default();
        for migration in MIGRATIONS {
            match applied.iter().find(|row| row.version == migration.version) {
                Some(row) => {
                    verify_unchanged(migration, &row.checksum)?;
                    report.already_applied += 1;
                }
                None => {
                    self.apply(migration).await?;
                    report.applied.push(*migration);
                }
            }
        }
        self.ensure_distributed_tables().await?;
        Ok(report)
    }

    /// Each known migration and whether it is applied; verifies checksums on the way.
    pub async fn status(&self) -> Result<Vec<(Migration, MigrationState)>, MigrateError> {
        let applied = if self.bookkeeping_exists().await? {
            self.applied_checksums().await?
        } else {
            Vec::new()
        };
        MIGRATIONS
            .iter()
            .map(|migration| {
                let state = match applied.iter().find(|row| row.version == migration.version) {
                    Some(row) => {
                        verify_unchanged(migration, &row.checksum)?;
                        MigrationState::Applied
                    }
                    None => MigrationState::Pending,
                };
                Ok((*migration, state))
            })
            .collect()
    }

    #[tracing::instrument(
        name = "schema.apply",
        skip_all,
        fields(schema.version = migration.version, schema.name = migration.name)
    )]
    async fn apply(&self, migration: &Migration) -> Result<(), MigrateError> {
        let sql = self.target.render(migration.version, migration.sql)?;
        for statement in split_statements(&sql) {
            tracing::debug!(version = migration.version, %statement, "applying statement");
            self.execute(&statement)
                .await
                .map_err(|source| MigrateError::Statement {
                    version: migration.version,
                    statement: first_line(&statement),
                    source,
                })?;
        }
        let record = format!(
            "INSERT INTO {}.schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
            self.target.database
        );
        self.client
            .query(&record)
            .bind(migration.version)
            .bind(migration.name)
            .bind(migration.checksum())
            .execute()
            .await?;
        tracing::debug!(
            version = migration.version,
            name = migration.name,
            "migration recorded"
        );
        Ok(())
    }

    /// Runs one statement; our SQL has no bind parameters, so `?` must reach the server as is.
    async fn execute(&self, statement: &str) -> Result<(), clickhouse::error::Error> {
        self.client
            .query(&statement.replace('?', "??"))
            .execute()
            .await
    }

    /// Creates the sharded layout's Distributed tables and gives them the columns
    /// their local tables gained since (a no-op in the other layouts).
    async fn ensure_distributed_tables(&self) -> Result<(), MigrateError> {
        let Some(cluster) = self
            .target
            .cluster
            .as_deref()
            .filter(|_| self.target.sharded)
        else {
            return Ok(());
        };
        for statement in self.target.distributed_tables() {
            self.execute_layout(&statement).await?;
        }
        let database = &self.target.database;
        for table in SHARDED_TABLES {
            let local = self
                .columns(&format!("{}{LOCAL_SUFFIX}", table.name))
                .await?;
            let distributed = self.columns(table.name).await?;
            for alter in
                layout::missing_columns(database, cluster, table.name, &local, &distributed)
            {
                self.execute_layout(&alter).await?;
            }
        }
        Ok(())
    }

    async fn execute_layout(&self, statement: &str) -> Result<(), MigrateError> {
        self.execute(statement)
            .await
            .map_err(|source| MigrateError::Distributed {
                statement: first_line(statement),
                source,
            })
    }

    async fn columns(&self, table: &str) -> Result<Vec<layout::Column>, MigrateError> {
        Ok(self
            .client
            .query(
                "SELECT name, type, default_kind, default_expression FROM system.columns \
                 WHERE database = ? AND table = ? ORDER BY position",
            )
            .bind(&self.target.database)
            .bind(table)
            .fetch_all()
            .await?)
    }

    async fn ensure_bookkeeping(&self) -> Result<(), MigrateError> {
        let sql = self.target.render(0, BOOKKEEPING)?;
        for statement in split_statements(&sql) {
            self.execute(&statement).await?;
        }
        Ok(())
    }

    async fn bookkeeping_exists(&self) -> Result<bool, MigrateError> {
        let exists = self
            .client
            .query("SELECT count() FROM system.tables WHERE database = ? AND name = 'schema_migrations'")
            .bind(&self.target.database)
            .fetch_one::<u64>()
            .await?;
        Ok(exists > 0)
    }

    async fn applied_checksums(&self) -> Result<Vec<AppliedRow>, MigrateError> {
        let sql = format!(
            "SELECT version, argMax(checksum, applied_at) AS checksum \
             FROM {}.schema_migrations GROUP BY version ORDER BY version",
            self.target.database
        );
        Ok(self.client.query(&sql).fetch_all::<AppliedRow>().await?)
    }
}

fn verify_unchanged(migration: &Migration, applied: &str) -> Result<(), MigrateError> {
    let current = migration.checksum();
    if current == applied {
        Ok(())
    } else {
        Err(MigrateError::ChecksumMismatch {
            version: migration.version,
            name: migration.name,
            applied: applied.to_owned(),
            current,
        })
    }
}

fn first_line(statement: &str) -> String {
    statement.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SchemaTarget {
        SchemaTarget {
            database: "otel".into(),
            cluster: None,
            replicated: false,
            sharded: false,
            telemetry_ttl_days: 30,
            submissions_ttl_days: 400,
        }
    }

    #[test]
    fn every_file_on_disk_is_listed_in_order_and_vice_versa() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/clickhouse/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, listed);
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }

    #[test]
    fn every_migration_renders_with_no_placeholder_left() {
        for m in MIGRATIONS {
            let sql = target().render(m.version, m.sql).unwrap();
            assert!(!sql.contains("${"), "{}", m.name);
        }
    }

    #[test]
    fn cluster_and_replication_render_into_the_ddl() {
        let t = SchemaTarget {
            cluster: Some("lab".into()),
            replicated: true,
            ..target()
        };
        let sql = t.render(1, MIGRATIONS[0].sql).unwrap();
        assert!(sql.contains("otel.otel_traces ON CLUSTER 'lab'"));
        assert!(sql.contains("ENGINE = ReplicatedMergeTree"));
        let plain = target().render(1, MIGRATIONS[0].sql).unwrap();
        assert!(!plain.contains("ON CLUSTER"));
        assert!(plain.contains("ENGINE = MergeTree"));
    }

    #[test]
    fn an_unknown_placeholder_is_an_error() {
        let err = target().render(9, "CREATE TABLE ${NOPE}.t").unwrap_err();
        assert!(matches!(
            err,
            MigrateError::UnknownPlaceholder { version: 9, .. }
        ));
    }

    #[test]
    fn statements_split_on_semicolons_outside_quotes_and_comments() {
        let sql = "-- a comment; with a semicolon\nSELECT 'a;b';\n\nSELECT \"x;\" -- trailing;\n;\n-- only a comment\n";
        assert_eq!(split_statements(sql), vec!["SELECT 'a;b'", "SELECT \"x;\""]);
    }

    #[test]
    fn the_lead_submissions_view_reads_only_lead_submit_spans() {
        let sql = target().render(4, MIGRATIONS[3].sql).unwrap();
        assert!(sql.contains("FROM otel.otel_traces\nWHERE SpanName = 'lead.submit'"));
    }
}
