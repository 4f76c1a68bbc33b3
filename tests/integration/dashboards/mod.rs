//! The Grafana dashboards under grafana/dashboards are code: every file in the folder is
//! checked statically (structure, ids, datasource) and every query in it — panel targets,
//! annotations, template-variable queries and the trace links — is expanded the way the
//! ClickHouse plugin and Grafana expand it, then run against the local stack's `otel`
//! database, filled by a simulator backfill and analyzer runs (see `fill`). A dashboard
//! added later is covered without touching this file.
//!
//! Expansion follows the sources (see docs/dashboards.md#how-the-test-expands-queries):
//! 1. the plugin's frontend (`CHDatasource.applyTemplateVariables`) first rewrites
//!    `$__conditionalAll(cond, $var)` to `1=1` when `$var` is All or empty, else to `cond`;
//! 2. Grafana's template service replaces `$var`, `${var}`, `${var:fmt}` and `[[var]]`;
//!    a multi-value without a format goes through the plugin's `format`, `'a','b'`;
//!    All without a custom all value means every option of the variable;
//! 3. the backend (grafana-plugin-sdk-go `sqlutil.Interpolate` with the plugin's
//!    `pkg/macros` map) expands `$__name` / `$__name(args)`, scanning for the argument
//!    parentheses by hand, so a no-argument macro swallows a later `(...)` unless a `)`
//!    comes first — the test rejects such queries.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

mod expansion;
mod fill;

use expansion::{Selection, TimeRange, Variable, expand};
use fill::fill;

use crate::support::{Stack, root};

const DATASOURCE_TYPE: &str = "grafana-clickhouse-datasource";
const EXPECTED_DASHBOARDS: [&str; 5] = [
    "ai-analysis.json",
    "day-by-day.json",
    "failures.json",
    "latency.json",
    "overview.json",
];
/// `$__interval_s` and `$__timeInterval`: what Grafana picks for ~8 days on a wide panel.
const WEEK_INTERVAL_SECONDS: i64 = 600;
/// The same for the few minutes of the live range (Grafana's ~100 ms, at least a second).
const LIVE_INTERVAL_SECONDS: i64 = 1;

/// Every `*.json` in grafana/dashboards, parsed (a parse error fails here).
fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("grafana/dashboards exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{name} is not valid JSON: {err}"));
        out.push((name, json));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The datasource uid and type the provisioning file defines.
fn provisioned_datasource() -> (String, String) {
    let path = root().join("grafana/provisioning/datasources/clickhouse.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let field = |key: &str| {
        text.lines()
            .map(str::trim)
            .map(|l| l.trim_start_matches("- "))
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("clickhouse.yaml has no {key}"))
    };
    (field("uid:"), field("type:"))
}

/// All panels, rows' nested panels included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        for nested in panel["panels"].as_array().into_iter().flatten() {
            out.push(nested);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    TimeSeries,
    Table,
    Annotation,
    Variable,
}

#[derive(Debug, Clone)]
struct Query {
    what: String,
    sql: String,
    kind: Kind,
    /// Columns the panel needs beyond what `kind` implies (e.g. trace_id for links).
    needs: Vec<String>,
    /// SQL of the trace-view link on this panel's trace_id column, if any.
    trace_link: Option<String>,
}

fn variable_sql(var: &Value) -> Option<String> {
    match &var["query"] {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("rawSql").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn queries(name: &str, dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for panel in all_panels(dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?");
        let links = trace_links(panel);
        for target in panel["targets"].as_array().into_iter().flatten() {
            let sql = target["rawSql"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: panel {title:?} has a target without rawSql"));
            let kind = match target["format"].as_i64() {
                Some(0) => Kind::TimeSeries,
                Some(1) => Kind::Table,
                other => panic!("{name}: panel {title:?}: unexpected format {other:?}"),
            };
            if panel["type"] == "timeseries" {
                assert_eq!(
                    kind,
                    Kind::TimeSeries,
                    "{name}: {title:?} is a time series panel"
                );
            }
            out.push(Query {
                what: format!("panel {title:?} target {}", target["refId"]),
                sql: sql.to_owned(),
                kind,
                needs: if links.is_empty() {
                    vec![]
                } else {
                    vec!["trace_id".into()]
                },
                trace_link: links.first().cloned(),
            });
        }
    }
    for ann in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if ann["builtIn"] == 1 {
            continue;
        }
        let sql = ann["target"]["rawSql"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: annotation {} has no target.rawSql", ann["name"]));
        out.push(Query {
            what: format!("annotation {}", ann["name"]),
            sql: sql.to_owned(),
            kind: Kind::Annotation,
            needs: vec![],
            trace_link: None,
        });
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] == "query" {
            out.push(Query {
                what: format!("variable {}", var["name"]),
                sql: variable_sql(var).expect("query variable has a query"),
                kind: Kind::Variable,
                needs: vec![],
                trace_link: None,
            });
        }
    }
    out
}

/// The SQL of every Explore trace link on the panel's trace_id column (URL-decoded).
fn trace_links(panel: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for ov in panel["fieldConfig"]["overrides"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if ov["matcher"]["options"] != "trace_id" {
            continue;
        }
        for prop in ov["properties"].as_array().into_iter().flatten() {
            if prop["id"] != "links" {
                continue;
            }
            for link in prop["value"].as_array().into_iter().flatten() {
                let url = link["url"].as_str().expect("link has a url");
                let panes = url
                    .split_once("panes=")
                    .expect("an Explore link carries panes")
                    .1;
                let panes: Value = serde_json::from_str(&percent_decode(panes))
                    .unwrap_or_else(|e| panic!("panes of {url} are not JSON: {e}"));
                let pane = panes.as_object().unwrap().values().next().unwrap();
                assert_eq!(pane["datasource"], "clickhouse");
                let q = &pane["queries"][0];
                assert_eq!(q["queryType"], "traces", "trace link is in trace mode");
                assert_eq!(q["format"], 3, "trace link uses the trace format");
                assert_eq!(q["datasource"]["uid"], "clickhouse");
                assert_eq!(
                    q["builderOptions"]["meta"]["traceId"], "${__value.raw}",
                    "trace link passes the clicked trace id"
                );
                out.push(q["rawSql"].as_str().unwrap().to_owned());
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

// ---------------------------------------------------------------------------------------
// Static checks
// ---------------------------------------------------------------------------------------

#[test]
fn the_folder_holds_the_five_dashboards() {
    let names: BTreeSet<String> = dashboards().into_iter().map(|(n, _)| n).collect();
    for expected in EXPECTED_DASHBOARDS {
        assert!(
            names.contains(expected),
            "grafana/dashboards lacks {expected}: {names:?}"
        );
    }
}

#[test]
fn dashboards_are_well_formed_and_use_the_provisioned_datasource() {
    let (uid, ds_type) = provisioned_datasource();
    assert_eq!(ds_type, DATASOURCE_TYPE);
    let expected = serde_json::json!({"type": DATASOURCE_TYPE, "uid": uid});
    let mut uids = HashSet::new();
    for (name, d) in dashboards() {
        let duid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no uid"));
        assert!(!duid.is_empty() && duid.len() <= 40, "{name}: uid {duid:?}");
        assert!(
            uids.insert(duid.to_owned()),
            "{name}: uid {duid} is used twice"
        );
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name} has no title"
        );
        let schema = d["schemaVersion"].as_i64().unwrap_or(0);
        assert!(schema >= 39, "{name}: schemaVersion {schema} < 39");

        let mut ids = HashSet::new();
        for panel in all_panels(&d) {
            let id = panel["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("{name}: panel without id"));
            assert!(ids.insert(id), "{name}: panel id {id} is used twice");
            if panel["type"] == "row" {
                continue;
            }
            let title = &panel["title"];
            assert_eq!(
                panel["datasource"], expected,
                "{name}: panel {title} datasource"
            );
            let targets = panel["targets"].as_array();
            assert!(
                targets.is_some_and(|t| !t.is_empty()),
                "{name}: panel {title} has no query"
            );
            for t in targets.unwrap() {
                assert_eq!(
                    t["datasource"], expected,
                    "{name}: panel {title} target datasource"
                );
                assert_eq!(
                    t["editorType"], "sql",
                    "{name}: panel {title} uses the SQL editor"
                );
            }
            assert!(
                panel["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: panel {title} says which question it answers (description)"
            );
        }
        for ann in d["annotations"]["list"].as_array().into_iter().flatten() {
            if ann["builtIn"] == 1 {
                continue;
            }
            assert_eq!(
                ann["datasource"], expected,
                "{name}: annotation {} datasource",
                ann["name"]
            );
            assert_eq!(ann["enable"], true);
            assert_eq!(ann["target"]["editorType"], "sql");
            assert_eq!(ann["target"]["format"], 1);
        }
        for var in d["templating"]["list"].as_array().into_iter().flatten() {
            if var["type"] == "query" {
                assert_eq!(
                    var["datasource"], expected,
                    "{name}: variable {} datasource",
                    var["name"]
                );
                assert_eq!(var["multi"], true, "{name}: {} is multi-value", var["name"]);
                assert_eq!(
                    var["includeAll"], true,
                    "{name}: {} includes All",
                    var["name"]
                );
            }
        }
    }
}

/// The dashboards that draw time series carry the AI-summary annotation.
#[test]
fn time_series_dashboards_carry_the_ai_summary_annotation() {
    for (name, d) in dashboards() {
        let has_ts = all_panels(&d).iter().any(|p| p["type"] == "timeseries");
        if !has_ts {
            continue;
        }
        let anns = d["annotations"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ai = anns.iter().find(|a| {
            a["target"]["rawSql"]
                .as_str()
                .is_some_and(|s| s.contains("FROM ai_summaries"))
        });
        let ai =
            ai.unwrap_or_else(|| panic!("{name} has time series but no AI-summary annotation"));
        let sql = ai["target"]["rawSql"].as_str().unwrap();
        for needle in ["executive_summary", "generator", "confidence", " AS tags"] {
            assert!(
                sql.contains(needle),
                "{name}: the AI annotation lacks {needle}"
            );
        }
    }
}

fn mentions_table(sql: &str, table: &str) -> bool {
    sql.match_indices(table).any(|(i, _)| {
        let before = sql[..i].chars().last();
        let after = sql[i + table.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

fn raw_tables(sql: &str) -> Vec<&'static str> {
    const RAW: [&str; 9] = [
        "lead_submissions",
        "otel_traces",
        "otel_logs",
        "otel_metrics_sum",
        "otel_metrics_gauge",
        "otel_metrics_histogram",
        "otel_metrics_exponential_histogram",
        "otel_metrics_summary",
        "otel_traces_trace_id_ts",
    ];
    RAW.into_iter().filter(|t| mentions_table(sql, t)).collect()
}

#[test]
fn every_query_on_a_raw_table_is_time_bounded_and_unqualified() {
    for (name, d) in dashboards() {
        for q in queries(&name, &d) {
            let sql = &q.sql;
            let ctx = format!("{name}: {}", q.what);
            assert!(!sql.contains("otel."), "{ctx}: table names are unqualified");
            if !raw_tables(sql).is_empty() {
                assert!(
                    sql.contains("$__timeFilter(")
                        || sql.contains("$__timeFilter_ms(")
                        || sql.contains("$__fromTime")
                        || sql.contains("$__toTime"),
                    "{ctx}: reads {:?} without a time filter",
                    raw_tables(sql)
                );
            }
            if mentions_table(sql, "ai_summaries") || mentions_table(sql, "analysis_run_states") {
                assert!(
                    sql.contains("$__dateFilter(day)")
                        || (sql.contains("day >= toDate($__fromTime)")
                            && sql.contains("day <= toDate($__toTime)")),
                    "{ctx}: reads the analyzer tables without a day range"
                );
            }
            if let Some(link) = &q.trace_link {
                assert!(
                    link.contains("Timestamp >= trace_start")
                        && link.contains("otel_traces_trace_id_ts"),
                    "{ctx}: the trace link bounds otel_traces by the trace's own time range"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running every query
// ---------------------------------------------------------------------------------------

struct Answer {
    columns: Vec<(String, String)>,
    rows: Vec<serde_json::Map<String, Value>>,
}

async fn run(client: &clickhouse::Client, sql: &str) -> Result<Answer, String> {
    let mut cursor = client
        .query(sql)
        .fetch_bytes("JSON")
        .map_err(|e| e.to_string())?;
    let bytes = cursor.collect().await.map_err(|e| e.to_string())?;
    let json: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let columns = json["meta"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let rows = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect();
    Ok(Answer { columns, rows })
}

/// `expand`, then `run`; the error says which step failed.
async fn expand_and_run(
    client: &clickhouse::Client,
    sql: &str,
    vars: &BTreeMap<String, Variable>,
    range: TimeRange,
) -> Result<(String, Answer), String> {
    let sql = expand(sql, vars, range)?;
    match run(client, &sql).await {
        Ok(answer) => Ok((sql, answer)),
        Err(e) => Err(format!("ClickHouse refused it: {e}\n{sql}")),
    }
}

fn is_numeric(t: &str) -> bool {
    let t = t.trim_start_matches("Nullable(");
    ["UInt", "Int", "Float", "Decimal"]
        .iter()
        .any(|p| t.starts_with(p))
}

/// The selections of a dashboard's variables one scenario tests, and the query variable
/// it narrows to one value, if any.
struct Scenario {
    label: String,
    vars: BTreeMap<String, Variable>,
    narrowed: Option<String>,
}

/// The variables of a dashboard with options from their own queries, and the selections
/// to test: everything at All, then each multi-value variable at one concrete value, and
/// the time-zone variable at a non-UTC zone.
async fn scenarios(
    client: &clickhouse::Client,
    name: &str,
    dashboard: &Value,
    range: TimeRange,
) -> Vec<Scenario> {
    let mut base = BTreeMap::new();
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let vname = var["name"].as_str().unwrap().to_owned();
        let all_value = var["allValue"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let variable = match var["type"].as_str().unwrap() {
            "query" => {
                let sql = expand(&variable_sql(var).unwrap(), &base, range)
                    .unwrap_or_else(|e| panic!("{name}: variable {vname}: {e}"));
                let answer = run(client, &sql).await.unwrap_or_else(|e| {
                    panic!("{name}: variable {vname} query failed: {e}\n{sql}")
                });
                let first = answer.columns[0].0.clone();
                let options: Vec<String> = answer
                    .rows
                    .iter()
                    .map(|r| match &r[&first] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                assert!(
                    !options.is_empty(),
                    "{name}: variable {vname} has no options"
                );
                Variable {
                    options,
                    all_value,
                    selection: Selection::All,
                }
            }
            "custom" => {
                let options: Vec<String> = var["query"]
                    .as_str()
                    .unwrap()
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .collect();
                let current = var["current"]["value"]
                    .as_str()
                    .unwrap_or(&options[0])
                    .to_owned();
                assert!(
                    options.contains(&current),
                    "{name}: {vname}'s current value is an option"
                );
                let selection = if var["multi"] == true {
                    Selection::Values(vec![current])
                } else {
                    Selection::Single(current)
                };
                Variable {
                    options,
                    all_value,
                    selection,
                }
            }
            other => panic!("{name}: variable type {other} is not covered by this test"),
        };
        base.insert(vname, variable);
    }
    let mut out = vec![Scenario {
        label: "all".to_owned(),
        vars: base.clone(),
        narrowed: None,
    }];
    for (vname, v) in &base {
        let mut changed = base.clone();
        match v.selection {
            Selection::All => {
                changed.get_mut(vname).unwrap().selection =
                    Selection::Values(vec![v.options[0].clone()]);
                out.push(Scenario {
                    label: format!("{vname}={}", v.options[0]),
                    vars: changed,
                    narrowed: Some(vname.clone()),
                });
            }
            Selection::Single(_) | Selection::Values(_) => {
                let other = v
                    .options
                    .iter()
                    .find(|o| *o != "UTC")
                    .unwrap_or(&v.options[0])
                    .clone();
                changed.get_mut(vname).unwrap().selection = Selection::Single(other.clone());
                out.push(Scenario {
                    label: format!("{vname}={other}"),
                    vars: changed,
                    narrowed: None,
                });
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_runs_against_the_real_schema_and_returns_data() {
    let (week, live) = fill().await;
    let client = Stack::require().await.client();
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut links = 0;
    // Rows of the logs panel: the service's warnings in otel_logs, with their traces.
    let mut log_rows = 0;

    for (name, dashboard) in dashboards() {
        let qs = queries(&name, &dashboard);
        assert!(!qs.is_empty(), "{name} has no queries");
        let scenarios = scenarios(&client, &name, &dashboard, week).await;
        // Every query over the week; the metric queries again over the live range, where
        // the run's metric points spread over many intervals (over the week they fall
        // into the one or two 10-minute intervals of the run's wall-clock minute).
        for (pass, range) in [("week", week), ("live", live)] {
            for Scenario {
                label: scenario,
                vars,
                narrowed,
            } in &scenarios
            {
                for q in &qs {
                    let reads_metrics = raw_tables(&q.sql)
                        .iter()
                        .any(|t| t.starts_with("otel_metrics"));
                    if pass == "live" && !reads_metrics {
                        continue;
                    }
                    let ctx = format!("{name}: {} [{scenario}, {pass}]", q.what);
                    let (mut sql, mut answer) =
                        match expand_and_run(&client, &q.sql, vars, range).await {
                            Ok(done) => done,
                            Err(e) => {
                                failures.push(format!("{ctx}: {e}"));
                                continue;
                            }
                        };
                    ran += 1;
                    // One value may rightly select nothing for a panel (a source without key
                    // mismatches): the filter works if another value of the variable finds rows.
                    if let Some(var) = narrowed.as_ref().filter(|_| answer.rows.is_empty()) {
                        for option in vars[var].options.iter().skip(1) {
                            let mut other = vars.clone();
                            other.get_mut(var).unwrap().selection =
                                Selection::Values(vec![option.clone()]);
                            if let Ok((s, a)) = expand_and_run(&client, &q.sql, &other, range).await
                                && !a.rows.is_empty()
                            {
                                (sql, answer) = (s, a);
                                break;
                            }
                        }
                    }
                    let has = |c: &str| answer.columns.iter().any(|(n, _)| n == c);
                    let mut problems = Vec::new();
                    if answer.rows.is_empty() {
                        problems.push("returned no rows".to_owned());
                    }
                    match q.kind {
                        Kind::TimeSeries => {
                            match answer.columns.iter().find(|(n, _)| n == "time") {
                                Some((_, t)) if t.contains("Date") => {}
                                other => problems
                                    .push(format!("needs a DateTime `time` column, has {other:?}")),
                            }
                            if !answer
                                .columns
                                .iter()
                                .any(|(n, t)| n != "time" && is_numeric(t))
                            {
                                problems.push("has no numeric value column".into());
                            }
                            let nonzero = answer.rows.iter().any(|row| {
                                answer.columns.iter().any(|(n, t)| {
                                    n != "time"
                                        && is_numeric(t)
                                        && match &row[n] {
                                            Value::Number(x) => {
                                                x.as_f64().is_some_and(|x| x != 0.0)
                                            }
                                            Value::String(x) => {
                                                x.parse::<f64>().is_ok_and(|x| x != 0.0)
                                            }
                                            _ => false,
                                        }
                                })
                            });
                            if !nonzero {
                                problems.push("every value is zero".into());
                            }
                            if scenario == "all"
                                && (pass == "live" || !reads_metrics)
                                && answer.rows.len() < 2
                            {
                                problems
                                    .push(format!("a series of {} point(s)", answer.rows.len()));
                            }
                        }
                        Kind::Annotation => {
                            for c in ["time", "text"] {
                                if !has(c) {
                                    problems.push(format!("needs a `{c}` column"));
                                }
                            }
                        }
                        Kind::Table | Kind::Variable => {
                            if answer.columns.is_empty() {
                                problems.push("has no columns".into());
                            }
                        }
                    }
                    for c in &q.needs {
                        if !has(c) {
                            problems.push(format!("needs a `{c}` column (its data link uses it)"));
                        }
                    }
                    if !problems.is_empty() {
                        failures.push(format!("{ctx}: {}\n{sql}", problems.join("; ")));
                        continue;
                    }
                    if mentions_table(&q.sql, "otel_logs") {
                        log_rows += answer.rows.len();
                    }
                    // The trace link: open the first traced row's trace id the way Explore
                    // would (a log line outside any span has no trace to link to).
                    let traced = answer.rows.iter().find(|row| {
                        row.get("trace_id")
                            .and_then(Value::as_str)
                            .is_some_and(|id| !id.is_empty())
                    });
                    if let (Some(link), Some(row)) = (&q.trace_link, traced) {
                        let trace_id = row["trace_id"].as_str().unwrap();
                        let link_sql = link.replace("${__value.raw}", trace_id);
                        match run(&client, &link_sql).await {
                            Ok(spans) if !spans.rows.is_empty() => {
                                links += 1;
                                for c in [
                                    "traceID",
                                    "spanID",
                                    "parentSpanID",
                                    "serviceName",
                                    "operationName",
                                    "startTime",
                                    "duration",
                                    "tags",
                                    "serviceTags",
                                ] {
                                    if !spans.columns.iter().any(|(n, _)| n == c) {
                                        failures
                                            .push(format!("{ctx}: trace link lacks column {c}"));
                                    }
                                }
                            }
                            Ok(_) => failures
                                .push(format!("{ctx}: trace link found no spans for {trace_id}")),
                            Err(e) => failures
                                .push(format!("{ctx}: trace link query failed: {e}\n{link_sql}")),
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} dashboard queries failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(ran > 100, "ran only {ran} queries");
    assert!(links > 0, "no trace link was exercised");
    assert!(log_rows > 0, "the logs panel found no warning in otel_logs");
    eprintln!("ran {ran} expanded dashboard queries and {links} trace links");
}
