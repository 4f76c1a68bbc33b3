//! The DDL each schema layout renders is pinned: a change to it must be deliberate, and
//! the single-node and replicated renderings must stay what applied databases ran.
//! `UPDATE_SNAPSHOTS=1 cargo test schema_layouts` rewrites the snapshots after review.

use lead_lab::config::Settings;
use lead_lab::store::layout::SHARDED_TABLES;
use lead_lab::store::migrate::{MigrateError, SchemaTarget};

use crate::support::assert_matches_snapshot;

fn target(configure: impl FnOnce(&mut Settings)) -> SchemaTarget {
    let mut settings = Settings::default();
    configure(&mut settings);
    SchemaTarget::from_settings(&settings).unwrap()
}

fn single_node() -> SchemaTarget {
    target(|_| {})
}

fn replicated() -> SchemaTarget {
    target(|s| {
        s.schema.cluster = Some("lab".into());
        s.schema.replicated = true;
    })
}

fn sharded() -> SchemaTarget {
    target(|s| {
        s.schema.cluster = Some("lab".into());
        s.schema.replicated = true;
        s.schema.sharded = true;
    })
}

#[test]
fn the_single_node_ddl_matches_its_snapshot() {
    let script = single_node().fresh_database_script().unwrap();
    assert!(!script.contains("ON CLUSTER") && !script.contains("_local"));
    assert_matches_snapshot("schema_single_node.snap", &script);
}

#[test]
fn the_replicated_ddl_matches_its_snapshot() {
    let script = replicated().fresh_database_script().unwrap();
    assert!(!script.contains("Distributed") && !script.contains("_local"));
    assert_matches_snapshot("schema_replicated.snap", &script);
}

#[test]
fn the_sharded_ddl_matches_its_snapshot() {
    let script = sharded().fresh_database_script().unwrap();
    assert_matches_snapshot("schema_sharded.snap", &script);
}

/// Apart from the local names and the Distributed tables, sharding changes nothing:
/// the sharded script is the replicated one with `_local` appended to sharded tables.
#[test]
fn the_sharded_ddl_is_the_replicated_ddl_on_local_tables_plus_distributed_ones() {
    let sharded = sharded().fresh_database_script().unwrap();
    let (migrations, distributed) = sharded.split_once("-- distributed tables\n").unwrap();
    let mut expected = replicated().fresh_database_script().unwrap();
    expected.truncate(expected.find("-- distributed tables\n").unwrap());
    for table in SHARDED_TABLES {
        expected = replace_table(&expected, table.name);
    }
    assert_eq!(migrations, expected);
    for table in SHARDED_TABLES {
        assert!(
            distributed.contains(&format!(
                "CREATE TABLE IF NOT EXISTS otel.{0} ON CLUSTER 'lab'\nAS otel.{0}_local\nENGINE = Distributed('lab', 'otel', '{0}_local', {1})",
                table.name, table.sharding_key
            )),
            "{}",
            table.name
        );
    }
}

/// `otel.<name>` followed by a character that cannot continue an identifier.
fn replace_table(script: &str, name: &str) -> String {
    let qualified = format!("otel.{name}");
    let mut out = String::new();
    let mut rest = script;
    while let Some(at) = rest.find(&qualified) {
        let after = &rest[at + qualified.len()..];
        out.push_str(&rest[..at + qualified.len()]);
        if !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            out.push_str("_local");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// An insert a Distributed table forwards to a shard fires the views attached to the
/// local table there; a view on the Distributed table would never fire, and one writing
/// into it would send its rows back across the cluster.
#[test]
fn in_the_sharded_layout_every_materialized_view_reads_and_writes_local_tables() {
    let script = sharded().fresh_database_script().unwrap();
    let views: Vec<&str> = script
        .split(";\n\n")
        .filter(|s| s.contains("CREATE MATERIALIZED VIEW") || s.contains("MODIFY QUERY"))
        .collect();
    assert_eq!(views.len(), 5, "{views:#?}");
    for view in views {
        for line in view.lines() {
            for keyword in ["TO otel.", "FROM otel."] {
                if let Some(at) = line.find(keyword) {
                    let table = &line[at + keyword.len()..];
                    assert!(table.ends_with("_local"), "{line}");
                }
            }
        }
    }
}

#[test]
fn sharding_without_a_cluster_is_refused() {
    let mut settings = Settings::default();
    settings.schema.sharded = true;
    assert!(matches!(
        SchemaTarget::from_settings(&settings),
        Err(MigrateError::ShardedWithoutCluster)
    ));
}
