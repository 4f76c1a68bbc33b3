//! The sharded layout: every table a reader or writer names becomes a local table
//! (`<name>_local`, one per shard, Replicated inside the shard) under a Distributed
//! table that keeps the name, so the collector, the service, the analyzer, the console
//! and the dashboards use the same table names on one node and on a sharded cluster.
//!
//! The applied migration files cannot change (their checksums are recorded), so the
//! local names are made when a migration is rendered: in the sharded layout every
//! `${DATABASE}.<name>` of a table listed here renders as `<database>.<name>_local`.
//! Materialized views therefore read and write local tables: an insert that a
//! Distributed table forwards to a shard fires the views on that shard, and each
//! shard's rollups cover its own rows (readers merge them with `sum` and `*Merge`).

/// A table of the sharded layout and the key its Distributed table routes inserts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardedTable {
    pub name: &'static str,
    pub sharding_key: &'static str,
}

/// Suffix of the per-shard table under a Distributed table.
pub const LOCAL_SUFFIX: &str = "_local";

const fn sharded(name: &'static str, sharding_key: &'static str) -> ShardedTable {
    ShardedTable { name, sharding_key }
}

/// In the order the migrations create them. A span and everything derived from it
/// (the submission row, the trace's time range) land on the shard of its trace id, so
/// a trace is read from one shard and the views never need another shard's rows; a
/// day's analysis runs and reports share a shard; points and log records are spread
/// evenly (`rand()`), as nothing reads them by key.
pub const SHARDED_TABLES: &[ShardedTable] = &[
    sharded("otel_traces", "cityHash64(TraceId)"),
    sharded("otel_traces_trace_id_ts", "cityHash64(TraceId)"),
    sharded("otel_logs", "rand()"),
    sharded("otel_metrics_sum", "rand()"),
    sharded("otel_metrics_gauge", "rand()"),
    sharded("otel_metrics_histogram", "rand()"),
    sharded("otel_metrics_exponential_histogram", "rand()"),
    sharded("otel_metrics_summary", "rand()"),
    sharded("lead_submissions", "cityHash64(trace_id)"),
    sharded("lead_submissions_15m", "rand()"),
    sharded("lead_latency_15m", "rand()"),
    sharded("ai_summaries", "cityHash64(day)"),
    sharded("analysis_run_states", "cityHash64(day)"),
];

/// The name of the per-shard table when `rest` (what follows `<database>.` in a
/// statement) starts with a sharded table's name, and how many bytes that name spans.
pub fn local_name_at(rest: &str) -> Option<(String, usize)> {
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let name = &rest[..end];
    SHARDED_TABLES
        .iter()
        .any(|table| table.name == name)
        .then(|| (format!("{name}{LOCAL_SUFFIX}"), end))
}

/// The Distributed tables over the local ones, created once every migration ran (a
/// Distributed table takes its columns from the local table when it is created).
pub fn distributed_tables(database: &str, cluster: &str) -> Vec<String> {
    SHARDED_TABLES
        .iter()
        .map(|table| {
            let name = table.name;
            format!(
                "CREATE TABLE IF NOT EXISTS {database}.{name} ON CLUSTER '{cluster}'\n\
                 AS {database}.{name}{LOCAL_SUFFIX}\n\
                 ENGINE = Distributed('{cluster}', '{database}', '{name}{LOCAL_SUFFIX}', {key})",
                key = table.sharding_key,
            )
        })
        .collect()
}

/// A column as `system.columns` describes it.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub struct Column {
    pub name: String,
    pub r#type: String,
    pub default_kind: String,
    pub default_expression: String,
}

/// The `ALTER`s that give a Distributed table the columns its local table gained
/// after it was created (by a later migration), each at the local table's position.
pub fn missing_columns(
    database: &str,
    cluster: &str,
    table: &str,
    local: &[Column],
    distributed: &[Column],
) -> Vec<String> {
    local
        .iter()
        .enumerate()
        .filter(|(_, column)| !distributed.iter().any(|d| d.name == column.name))
        .map(|(position, column)| {
            let default = match column.default_kind.as_str() {
                "" => String::new(),
                kind => format!(" {kind} {}", column.default_expression),
            };
            let place = match position {
                0 => " FIRST".to_owned(),
                _ => format!(" AFTER `{}`", local[position - 1].name),
            };
            format!(
                "ALTER TABLE {database}.{table} ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS `{}` {}{default}{place}",
                column.name, column.r#type
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, default_kind: &str) -> Column {
        Column {
            name: name.into(),
            r#type: "String".into(),
            default_kind: default_kind.into(),
            default_expression: if default_kind.is_empty() { "" } else { "'x'" }.into(),
        }
    }

    #[test]
    fn a_column_the_local_table_gained_is_added_where_it_stands() {
        let local = [column("a", ""), column("b", "DEFAULT"), column("c", "")];
        let distributed = [column("a", ""), column("c", "")];
        assert_eq!(
            missing_columns("otel", "lab", "t", &local, &distributed),
            vec![
                "ALTER TABLE otel.t ON CLUSTER 'lab' ADD COLUMN IF NOT EXISTS `b` String DEFAULT 'x' AFTER `a`"
            ]
        );
        assert!(missing_columns("otel", "lab", "t", &local, &local).is_empty());
    }

    #[test]
    fn only_a_whole_listed_name_is_made_local() {
        assert_eq!(
            local_name_at("lead_submissions ON CLUSTER"),
            Some(("lead_submissions_local".into(), 16))
        );
        assert_eq!(
            local_name_at("lead_submissions_15m\n"),
            Some(("lead_submissions_15m_local".into(), 20))
        );
        assert_eq!(local_name_at("lead_submissions_mv ON CLUSTER"), None);
        assert_eq!(local_name_at("schema_migrations"), None);
    }

    #[test]
    fn every_distributed_table_reads_its_local_table_on_the_cluster() {
        let statements = distributed_tables("otel", "lab");
        assert_eq!(statements.len(), SHARDED_TABLES.len());
        assert!(statements[0].contains(
            "AS otel.otel_traces_local\nENGINE = Distributed('lab', 'otel', 'otel_traces_local', cityHash64(TraceId))"
        ));
    }
}
