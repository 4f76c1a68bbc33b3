//! The Docker deployment cannot run here, but its compose file must stay valid.

use std::process::Command;

#[test]
fn docker_compose_accepts_the_compose_file() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "--quiet"])
        .current_dir(root)
        .output()
        .expect(
            "docker-compose is not installed: `apt-get install docker-compose` (scripts/test does)",
        );
    assert!(
        output.status.success(),
        "docker-compose config rejected docker-compose.yml:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// docker-compose.yml as docker-compose resolves it.
fn resolved_config() -> String {
    resolved(&["docker-compose.yml"])
}

/// The files, each an override of the ones before it, as docker-compose resolves them.
fn resolved(files: &[&str]) -> String {
    let output = Command::new("docker-compose")
        .args(files.iter().flat_map(|file| ["-f", file]))
        .arg("config")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("docker-compose is installed");
    assert!(
        output.status.success(),
        "docker-compose config rejected {files:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn compose_runs_migrations_before_the_collector_and_the_service() {
    let config = resolved_config();
    for service in [
        "clickhouse:",
        "migrate:",
        "otel-collector:",
        "lead-lab:",
        "grafana:",
        "ollama:",
    ] {
        assert!(config.contains(service), "compose lacks service {service}");
    }
    assert!(config.contains("service_completed_successfully"));
}

#[test]
fn compose_runs_two_replicas_on_one_redis_behind_the_proxy() {
    let text = resolved_config();
    for service in ["redis:", "lead-lab-2:", "proxy:"] {
        assert!(text.contains(service), "compose lacks service {service}");
    }
    assert_eq!(
        text.matches("LEADLAB_STATE_URL: redis://redis:6379")
            .count(),
        2,
        "both replicas share the one Redis:\n{text}"
    );
    assert!(text.contains("nginx-replicas.conf"));
}

#[test]
fn the_cluster_override_runs_two_shards_of_two_replicas_on_three_keepers() {
    let text = resolved(&["docker-compose.yml", "docker-compose.cluster.yml"]);
    let cluster = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clickhouse/cluster/cluster.xml"),
    )
    .unwrap();
    for (node, shard) in [
        ("clickhouse", "1"),
        ("clickhouse-s1r2", "1"),
        ("clickhouse-s2r1", "2"),
        ("clickhouse-s2r2", "2"),
    ] {
        assert!(
            text.contains(&format!("\n  {node}:\n")),
            "compose lacks {node}"
        );
        assert!(
            text.contains(&format!(
                "CLICKHOUSE_REPLICA: {node}\n      CLICKHOUSE_SHARD: '{shard}'"
            )),
            "{node} is not replica {node} of shard {shard}:\n{text}"
        );
        assert!(
            text.contains(&format!("hostname: {node}\n")),
            "{node} has no hostname"
        );
        assert!(
            cluster.contains(&format!("<host>{node}</host>")),
            "cluster.xml lacks {node}"
        );
    }
    assert_eq!(cluster.matches("<shard>").count(), 2);
    assert_eq!(cluster.matches("<replica>").count(), 4);
    for keeper in ["keeper-1", "keeper-2", "keeper-3"] {
        assert!(
            text.contains(&format!("\n  {keeper}:\n")),
            "compose lacks {keeper}"
        );
        assert!(cluster.contains(&format!("<host>{keeper}</host>")));
    }
    assert_eq!(
        text.matches("image: clickhouse/clickhouse-server:").count(),
        4
    );
    assert_eq!(
        text.matches("image: clickhouse/clickhouse-keeper:").count(),
        3
    );
    assert_eq!(
        text.matches("/etc/clickhouse-server/config.d/cluster.xml:ro")
            .count(),
        4
    );
    for setting in [
        "LEADLAB_SCHEMA_CLUSTER: lab",
        "LEADLAB_SCHEMA_REPLICATED: \"true\"",
        "LEADLAB_SCHEMA_SHARDED: \"true\"",
    ] {
        assert!(text.contains(setting), "migrate lacks {setting}:\n{text}");
    }
}
