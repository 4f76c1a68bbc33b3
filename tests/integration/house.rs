//! House rules checked on the tree: the layering rule of docs/architecture.md (a module may
//! import only modules of a lower layer and itself; test code at the bottom of a file,
//! `#[cfg(test)]`, and `tests.rs` files may reach anywhere), and docs/contributing.md
//! naming only files that exist.

use std::path::{Path, PathBuf};

/// Lowest first. A new top-level module must be placed here, which is the point: its
/// place in the layers is a decision, not an accident.
const LAYERS: &[&[&str]] = &[
    &["config"],
    &["domain", "telemetry"],
    &["store", "state"],
    &["ingest", "analyze", "simulate"],
    &["http"],
    &["evaluate"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `src/analyze/facts/sql.rs` → `analyze`.
fn top_module(file: &Path) -> String {
    let relative = file.strip_prefix(src()).expect("under src/");
    let first = relative.components().next().expect("a file");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate modules a source text names as `crate::module`, outside its tests.
fn imported_modules(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            // `use crate::{a, b}`: every name in the braces.
            let group = rest.trim_start_matches('{');
            let group = &group[..group.find('}').unwrap_or(group.len())];
            found.extend(group.split(',').filter_map(|item| {
                let head = item.trim().split("::").next()?.trim();
                (!head.is_empty()).then(|| head.to_owned())
            }));
        } else {
            found.push(name);
        }
    }
    found
}

fn violations() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut problems = Vec::new();
    for file in files {
        let module = top_module(&file);
        if ["lib", "main"].contains(&module.as_str()) || file.ends_with("tests.rs") {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            problems.push(format!("src/{module} has no layer in LAYERS"));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("readable");
        for imported in imported_modules(&text) {
            match layer_of(&imported) {
                Some(layer) if imported != module && layer >= own => problems.push(format!(
                    "{} imports crate::{imported} (layer {layer}, its own is {own})",
                    file.display()
                )),
                _ => {}
            }
        }
    }
    problems
}

#[test]
fn no_module_imports_its_own_layer_or_one_above() {
    let problems = violations();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scanner_sees_plain_and_grouped_imports() {
    let text =
        "use crate::http::x;\nuse crate::{cli, domain::Reason};\n#[cfg(test)]\nuse crate::store;";
    assert_eq!(imported_modules(text), ["http", "cli", "domain"]);
}

/// Backticked repository paths in a Markdown text: `src/…`, `tests/…`, `docs/…`, ….
fn paths_named(text: &str) -> Vec<&str> {
    const ROOTS: [&str; 7] = [
        "src/",
        "tests/",
        "docs/",
        "grafana/",
        "scripts/",
        "scenarios/",
        "config/",
    ];
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| ROOTS.iter().any(|root| span.starts_with(root)))
        .filter(|span| !span.contains(' ') && !span.contains('<') && !span.contains('*'))
        .collect()
}

#[test]
fn contributing_md_names_only_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docs/contributing.md")).expect("exists");
    let named = paths_named(&text);
    assert!(named.len() > 20, "the page names the files of each recipe");
    let missing: Vec<_> = named.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "docs/contributing.md names missing files: {missing:?}"
    );
}
