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

#[test]
fn compose_runs_migrations_before_the_collector_and_the_service() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(root)
        .output()
        .expect("docker-compose is installed");
    let config = String::from_utf8_lossy(&output.stdout);
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
