//! How the ClickHouse plugin and Grafana expand a dashboard query (the three steps in
//! the parent module's docs): the plugin frontend's `$__conditionalAll`, Grafana's
//! template variables, and the plugin backend's macros; tested against the plugin's
//! documented behaviour.

use std::collections::BTreeMap;

use super::WEEK_INTERVAL_SECONDS;

#[derive(Debug, Clone)]
pub(super) enum Selection {
    All,
    Values(Vec<String>),
    Single(String),
}

#[derive(Debug, Clone)]
pub(super) struct Variable {
    pub(super) options: Vec<String>,
    pub(super) all_value: Option<String>,
    pub(super) selection: Selection,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct TimeRange {
    pub(super) from_ms: i64,
    pub(super) to_ms: i64,
    /// What `$__interval_s` and `$__timeInterval` stand for in this range.
    pub(super) interval_s: i64,
}

/// `getMacroArgs` of CHDatasource.ts: arguments of the call whose `(` is at `open`.
fn plugin_macro_args(query: &str, open: usize) -> Vec<String> {
    let sub = &query[open..];
    let mut args = Vec::new();
    let mut depth = 0i32;
    let mut last = 1usize;
    for (i, c) in sub.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 1 => {
                args.push(sub[last..i].to_owned());
                last = i + 1;
                continue;
            }
            _ => continue,
        }
        if depth == 0 {
            args.push(sub[last..i].to_owned());
            return args;
        }
    }
    Vec::new()
}

/// `applyConditionalAll` of CHDatasource.ts.
fn apply_conditional_all(sql: &str, vars: &BTreeMap<String, Variable>) -> Result<String, String> {
    const MACRO: &str = "$__conditionalAll(";
    let mut raw = sql.to_owned();
    while let Some(idx) = raw.rfind(MACRO) {
        let params = plugin_macro_args(&raw, idx + MACRO.len() - 1);
        if params.len() != 2 {
            return Err(format!(
                "$__conditionalAll needs (condition, $var): {params:?}"
            ));
        }
        let var = params[1].trim();
        let var_name = var
            .strip_prefix('$')
            .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| {
                format!("$__conditionalAll's second argument must be $name, got {var:?}")
            })?;
        let v = vars
            .get(var_name)
            .ok_or_else(|| format!("$__conditionalAll names unknown variable {var_name}"))?;
        let is_all_or_empty = match &v.selection {
            Selection::All => true,
            Selection::Values(vs) => vs.is_empty() || vs.join(",").is_empty(),
            Selection::Single(s) => s.is_empty(),
        };
        let phrase = if is_all_or_empty {
            "1=1".to_owned()
        } else {
            params[0].clone()
        };
        let whole = format!("{MACRO}{},{})", params[0], params[1]);
        raw = raw.replacen(&whole, &phrase, 1);
    }
    Ok(raw)
}

/// Grafana's formatRegistry for the formats the dashboards may use, and the plugin's
/// default `format` (multi-value → `'a','b'`, single value → as is).
fn format_value(values: &[String], is_multi: bool, fmt: Option<&str>) -> Result<String, String> {
    let quoted = |q: char, esc: &str| {
        values
            .iter()
            .map(|v| format!("{q}{}{q}", v.replace(q, esc)))
            .collect::<Vec<_>>()
            .join(",")
    };
    Ok(match fmt {
        None if is_multi => format!("'{}'", values.join("','")),
        None => values.join(","),
        Some("singlequote") => quoted('\'', "\\'"),
        Some("doublequote") => quoted('"', "\\\""),
        Some("sqlstring") => quoted('\'', "''"),
        Some("csv") | Some("raw") => values.join(","),
        Some(other) => return Err(format!("unknown variable format :{other}")),
    })
}

fn variable_value(
    name: &str,
    fmt: Option<&str>,
    vars: &BTreeMap<String, Variable>,
) -> Result<String, String> {
    let v = vars
        .get(name)
        .ok_or_else(|| format!("unknown template variable ${name}"))?;
    match &v.selection {
        Selection::All => {
            if let Some(all) = &v.all_value {
                // Grafana skips formatting of a custom all value.
                return Ok(all.clone());
            }
            format_value(&v.options, true, fmt)
        }
        Selection::Values(vs) => format_value(vs, true, fmt),
        Selection::Single(s) => format_value(std::slice::from_ref(s), false, fmt),
    }
}

/// Grafana's `templateSrv.replace`: `$name`, `[[name:fmt]]`, `${name.path:fmt}`. Names
/// starting with `__` are not dashboard variables and stay for the backend's macros.
fn replace_variables(sql: &str, vars: &BTreeMap<String, Variable>) -> Result<String, String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = sql;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').ok_or("unterminated ${")?;
            let inner = &after[..end];
            let (name_path, fmt) = match inner.split_once(':') {
                Some((n, f)) => (n, Some(f)),
                None => (inner, None),
            };
            let name = name_path.split('.').next().unwrap();
            if name.starts_with("__") {
                return Err(format!(
                    "Grafana built-in ${{{inner}}} is not expected in a panel query"
                ));
            }
            out.push_str(&variable_value(name, fmt, vars)?);
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix("[[") {
            let end = after.find("]]").ok_or("unterminated [[")?;
            let inner = &after[..end];
            let (name, fmt) = match inner.split_once(':') {
                Some((n, f)) => (n, Some(f)),
                None => (inner, None),
            };
            out.push_str(&variable_value(name, fmt, vars)?);
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix('$') {
            let len = after.find(|c: char| !word(c)).unwrap_or(after.len());
            let name = &after[..len];
            if name.is_empty() || name.starts_with("__") {
                out.push('$');
                out.push_str(name);
            } else {
                out.push_str(&variable_value(name, None, vars)?);
            }
            rest = &after[len..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    Ok(out)
}

/// The plugin's macro map (pkg/macros/macros.go) plus sqlutil's defaults, in one order.
const BACKEND_MACROS: [&str; 17] = [
    "fromTime",
    "toTime",
    "fromTime_ms",
    "toTime_ms",
    "timeFilter",
    "timeFilter_ms",
    "dateFilter",
    "dateTimeFilter",
    "dt",
    "timeInterval",
    "timeInterval_ms",
    "interval_s",
    "timeFrom",
    "timeTo",
    "timeGroup",
    "table",
    "column",
];
const NO_ARG_MACROS: [&str; 5] = [
    "fromTime",
    "toTime",
    "fromTime_ms",
    "toTime_ms",
    "interval_s",
];

/// sqlutil's `getMacroMatches`: `\$__name\b`, then a hand scan for the argument parens.
fn macro_matches(input: &str, name: &str) -> Vec<(String, Option<String>)> {
    let needle = format!("$__{name}");
    let mut out = Vec::new();
    for (start, _) in input.match_indices(&needle) {
        let end_of_name = start + needle.len();
        let next = input[end_of_name..].chars().next();
        if next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // \b
        }
        let copy = &input[start..];
        let mut depth = 0usize;
        let mut macro_end = 0usize;
        let mut arg_start = 0usize;
        for (idx, c) in copy.char_indices() {
            if depth == 0 && macro_end > 0 {
                break;
            }
            match c {
                '(' => {
                    depth += 1;
                    if arg_start == 0 {
                        arg_start = idx + 1;
                    }
                }
                ')' => {
                    if depth == 0 {
                        macro_end = 0;
                        break;
                    }
                    depth -= 1;
                    macro_end = idx + 1;
                }
                _ => {}
            }
        }
        if macro_end == 0 {
            macro_end = needle.len();
        }
        let whole = copy[..macro_end].to_owned();
        let args = (arg_start > 0 && arg_start <= macro_end)
            .then(|| copy[arg_start..macro_end - 1].to_owned());
        out.push((whole, args));
    }
    out
}

fn date_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

fn apply_macro(name: &str, args: &[String], range: TimeRange) -> Result<String, String> {
    let (from_s, to_s) = (range.from_ms.div_euclid(1000), range.to_ms.div_euclid(1000));
    let one = |args: &[String]| -> Result<String, String> {
        match args {
            [a] if !a.is_empty() => Ok(a.clone()),
            _ => Err(format!("$__{name} expects 1 argument, got {args:?}")),
        }
    };
    Ok(match name {
        "fromTime" => format!("toDateTime({from_s})"),
        "toTime" => format!("toDateTime({to_s})"),
        "fromTime_ms" => format!("fromUnixTimestamp64Milli({})", range.from_ms),
        "toTime_ms" => format!("fromUnixTimestamp64Milli({})", range.to_ms),
        "timeFilter" => {
            let c = one(args)?;
            format!("{c} >= toDateTime({from_s}) AND {c} <= toDateTime({to_s})")
        }
        "timeFilter_ms" => {
            let c = one(args)?;
            format!(
                "{c} >= fromUnixTimestamp64Milli({}) AND {c} <= fromUnixTimestamp64Milli({})",
                range.from_ms, range.to_ms
            )
        }
        "dateFilter" => {
            let c = one(args)?;
            format!(
                "{c} >= toDate('{}') AND {c} <= toDate('{}')",
                date_of(range.from_ms),
                date_of(range.to_ms)
            )
        }
        "timeInterval" => {
            let c = one(args)?;
            format!(
                "toStartOfInterval(toDateTime({c}), INTERVAL {} second)",
                range.interval_s.max(1)
            )
        }
        "timeInterval_ms" => {
            let c = one(args)?;
            format!(
                "toStartOfInterval(toDateTime64({c}, 3), INTERVAL {} millisecond)",
                (range.interval_s * 1000).max(1)
            )
        }
        "interval_s" => range.interval_s.max(1).to_string(),
        other => {
            return Err(format!(
                "macro $__{other} is not used by these dashboards (add it here first)"
            ));
        }
    })
}

/// sqlutil.Interpolate with the plugin's macros; `reverse` flips the (in Go: random)
/// map order, so a query whose result depends on the order is caught.
fn expand_macros(sql: &str, range: TimeRange, reverse: bool) -> Result<String, String> {
    let mut order: Vec<&str> = BACKEND_MACROS.to_vec();
    if reverse {
        order.reverse();
    }
    let mut raw = sql.to_owned();
    for name in order {
        for (whole, args) in macro_matches(&raw, name) {
            if NO_ARG_MACROS.contains(&name) && args.is_some() {
                return Err(format!(
                    "$__{name} takes no arguments, but the plugin's scanner would swallow {whole:?}; \
                     put a `)` right after it, e.g. toDateTime($__{name})"
                ));
            }
            let args: Vec<String> = match args {
                Some(a) => a.split(',').map(|s| s.trim().to_owned()).collect(),
                None => vec![],
            };
            let res = apply_macro(name, &args, range)?;
            raw = raw.replace(&whole, &res);
        }
    }
    Ok(raw)
}

/// Everything Grafana and the plugin do to a panel's rawSql before ClickHouse sees it.
pub(super) fn expand(
    sql: &str,
    vars: &BTreeMap<String, Variable>,
    range: TimeRange,
) -> Result<String, String> {
    let sql = apply_conditional_all(sql, vars)?;
    let sql = replace_variables(&sql, vars)?;
    let forward = expand_macros(&sql, range, false)?;
    let backward = expand_macros(&sql, range, true)?;
    if forward != backward {
        return Err(format!(
            "macro expansion depends on order:\n{forward}\n---\n{backward}"
        ));
    }
    if let Some(i) = forward.find('$') {
        return Err(format!(
            "unexpanded `{}` left in the query",
            &forward[i..(i + 30).min(forward.len())]
        ));
    }
    if forward.contains('?') {
        return Err("`?` in a query: the test's client would read it as a bind placeholder".into());
    }
    Ok(forward)
}

#[test]
fn the_expander_follows_the_plugin() {
    let range = TimeRange {
        from_ms: 1_700_000_000_123,
        to_ms: 1_700_086_400_999,
        interval_s: WEEK_INTERVAL_SECONDS,
    };
    let mut vars = BTreeMap::new();
    vars.insert(
        "source".to_owned(),
        Variable {
            options: vec!["a".into(), "b'c".into()],
            all_value: None,
            selection: Selection::All,
        },
    );
    vars.insert(
        "tz".to_owned(),
        Variable {
            options: vec!["UTC".into()],
            all_value: None,
            selection: Selection::Single("UTC".into()),
        },
    );
    let sql = "SELECT $__timeInterval(t) AS time FROM x WHERE $__timeFilter(t) AND $__conditionalAll(s IN (${source:singlequote}), $source) AND d <= toDate($__toTime) AND z = '${tz}' AND s IN ($source) AND c IN (${source:csv}) LIMIT $__interval_s";
    let out = expand(sql, &vars, range).unwrap();
    assert_eq!(
        out,
        "SELECT toStartOfInterval(toDateTime(t), INTERVAL 600 second) AS time FROM x WHERE t >= toDateTime(1700000000) AND t <= toDateTime(1700086400) AND 1=1 AND d <= toDate(toDateTime(1700086400)) AND z = 'UTC' AND s IN ('a','b'c') AND c IN (a,b'c) LIMIT 600"
    );
    vars.get_mut("source").unwrap().selection = Selection::Values(vec!["b'c".into()]);
    let out = expand(
        "WHERE $__conditionalAll(s IN (${source:singlequote}), $source) AND $__dateFilter(day)",
        &vars,
        range,
    )
    .unwrap();
    assert_eq!(
        out,
        "WHERE s IN ('b\\'c') AND day >= toDate('2023-11-14') AND day <= toDate('2023-11-15')"
    );
    assert!(
        expand("SELECT $__fromTime AND f(x)", &vars, range).is_err(),
        "a swallowing macro is refused"
    );
    assert!(
        expand("SELECT $nope", &vars, range).is_err(),
        "an unknown variable is refused"
    );
    assert!(
        expand("SELECT $__timeGroup(t, hour)", &vars, range).is_err(),
        "an unknown macro is refused"
    );
    assert!(
        expand("SELECT ${source:json}", &vars, range).is_err(),
        "an unknown format is refused"
    );
}
