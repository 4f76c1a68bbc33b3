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
    let output = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("docker-compose is installed");
    assert!(output.status.success());
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
