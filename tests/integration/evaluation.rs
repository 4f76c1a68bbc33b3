//! `lead-lab eval` over every shipped scenario, through the binary: the detectors'
//! targets (recall 100 %, one finding per incident, window error within 15 minutes of
//! the incident's evidence, no unexplained High finding) hold on every scenario, and the
//! figures come back as JSON with every scenario and labelled incident in them.

use std::path::PathBuf;

use serde_json::Value;

use crate::simulate::SCENARIOS;
use crate::support::{ClickHouseEnv, Stack, root, unique_name};

fn shipped_scenarios() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(SCENARIOS)
        .expect("scenarios/ lists")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// One line per scenario with what it missed, for the failure message.
fn misses(results: &[Value]) -> String {
    let mut text = String::new();
    for result in results {
        text.push_str(&format!(
            "{}: recall {}, precision {}, max findings/incident {}, max window error {}, unexplained High {}\n",
            result["scenario"],
            result["recall"],
            result["precision"],
            result["max_findings_per_incident"],
            result["max_window_error_minutes"],
            result["unexplained_high"]
        ));
        for incident in result["incidents"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "  {} {}: found {}, {} findings, window error {} (vs label {}), missed {}\n",
                incident["day"],
                incident["incident"],
                incident["found"],
                incident["findings"],
                incident["window_error_minutes"],
                incident["label_window_error_minutes"],
                incident["missed"]
            ));
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn every_shipped_scenario_meets_the_detector_targets() {
    let stack = Stack::require().await;
    let scenarios = shipped_scenarios();
    assert!(scenarios.len() >= 8, "{scenarios:?}");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_lead-lab"))
        .arg("eval")
        .arg("--scenario")
        .args(&scenarios)
        .args(["--seed", "1", "--json", "--quiet"])
        .env("LEADLAB_CONFIG", root().join("config/local.toml"))
        .clickhouse_env(&stack.clickhouse, &stack.clickhouse.database)
        .env("LEADLAB_OTEL_ENDPOINT", &stack.otlp_grpc)
        .env("LEADLAB_OTEL_SERVICE_NAME", unique_name("eval"))
        .env("LEADLAB_LOG_LEVEL", "error")
        .output()
        .await
        .expect("lead-lab runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let results: Vec<Value> = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("eval prints JSON ({e}); stderr: {stderr}"));
    assert_eq!(results.len(), scenarios.len(), "every scenario is scored");
    for result in &results {
        let labelled = result["incidents"].as_array().map_or(0, Vec::len);
        let quiet = result["scenario"] == "quiet";
        assert!(
            quiet || labelled > 0,
            "{}: no labelled incident was scored",
            result["scenario"]
        );
        assert!(result["attempts"].as_u64().unwrap_or(0) > 1_000, "{result}");
    }
    assert!(output.status.success(), "eval ran: {stderr}");
    let mut problems = Vec::new();
    for result in &results {
        let scenario = result["scenario"].as_str().unwrap_or_default();
        if result["unexplained_high"].as_u64() != Some(0) {
            problems.push(format!("{scenario}: an unexplained High finding"));
        }
        for incident in result["incidents"].as_array().into_iter().flatten() {
            let kind = incident["incident"].as_str().unwrap_or_default();
            let missed = incident["missed"]
                .as_array()
                .expect("every incident lists what it missed");
            if !missed.is_empty() {
                problems.push(format!("{scenario} {kind}: misses {missed:?}"));
            }
            // Only an incident that removes traffic has no changed attempt to measure by.
            let removes_traffic = kind.starts_with("source_silent");
            if incident["evidence_start"].is_string() == removes_traffic {
                problems.push(format!(
                    "{scenario} {kind}: evidence window {:?}",
                    incident["evidence_start"]
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n{}{stderr}",
        problems.join("\n"),
        misses(&results)
    );
}
