//! The OpenAPI document is part of the contract: a change to it must be deliberate.
//! `UPDATE_SNAPSHOTS=1 cargo test openapi` rewrites the snapshot after a reviewed change.

use crate::support::assert_matches_snapshot;

#[test]
fn the_openapi_spec_matches_its_snapshot() {
    let spec: serde_json::Value = serde_json::from_str(&lead_lab::http::openapi_spec()).unwrap();
    let current = serde_json::to_string_pretty(&spec).unwrap() + "\n";
    assert_matches_snapshot("openapi.json", &current);
}

#[test]
fn every_reason_code_is_documented_in_the_spec_and_in_docs_api_md() {
    let spec = lead_lab::http::openapi_spec();
    let docs = include_str!("../../docs/api.md");
    for reason in lead_lab::domain::Reason::ALL {
        assert!(
            spec.contains(reason.as_str()),
            "spec lacks {}",
            reason.as_str()
        );
        assert!(
            docs.contains(&format!("`{}`", reason.as_str())),
            "docs/api.md lacks {}",
            reason.as_str()
        );
    }
}
