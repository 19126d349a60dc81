//! The top-level modules of `src/` form layers, and every dependency points down.
//!
//! Reads every `crate::` path in the non-test code of each top-level module and checks it
//! against [`LAYERS`]: a module may use modules of lower layers only; core modules may also
//! use each other as long as they form no cycle. A module missing from the table fails the
//! test too, so a new module gets a place in the picture (ARCHITECTURE.md) when it is added.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the bottom up. Keep in step with ARCHITECTURE.md's picture.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "core",
        &[
            "alerting",
            "budget",
            "canary",
            "clock",
            "compare",
            "expo",
            "health",
            "host",
            "ingest",
            "net",
            "point",
            "promql",
            "redact",
            "samples",
            "setting",
            "shutdown",
            "source",
            "stats",
            "telemetry",
            "variant",
        ],
    ),
    ("subsystems", &["alerts", "engine", "hub", "proxy", "remote", "scrape", "store"]),
    ("web", &["web"]),
    ("configuration", &["config"]),
    ("application", &["app", "healthcheck"]),
    ("demo", &["demo"]),
    ("commands", &["commands"]),
];

/// Entry points that sit above everything.
const ROOTS: &[&str] = &["lib", "main"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/scrape/parse.rs` -> `scrape`).
fn top_module(file: &Path) -> String {
    let rel = file.strip_prefix(src_dir()).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.strip_suffix(".rs").map(str::to_owned).unwrap_or(first)
}

/// The code of a file without its test module and comments.
fn production_code(text: &str) -> String {
    let code = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    code.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Top-level modules named by `crate::name` paths, including `use crate::{a, b::c}` groups.
fn referenced_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.insert(name);
        }
    }
    out
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
}

/// Every dependency between top-level modules, with a file that shows it.
fn dependencies() -> BTreeMap<(String, String), String> {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| top_module(f)).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let from = top_module(file);
        let code = production_code(&std::fs::read_to_string(file).unwrap());
        for to in referenced_modules(&code) {
            if to != from && modules.contains(&to) {
                let shown = file.strip_prefix(src_dir()).unwrap().display().to_string();
                edges.entry((from.clone(), to)).or_insert(shown);
            }
        }
    }
    edges
}

#[test]
fn every_top_level_module_has_a_layer() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let missing: BTreeSet<String> =
        files.iter().map(|f| top_module(f)).filter(|m| layer_of(m).is_none() && !ROOTS.contains(&m.as_str())).collect();
    assert!(missing.is_empty(), "give these modules a layer in tests/layers.rs and ARCHITECTURE.md: {missing:?}");
}

#[test]
fn dependencies_point_down() {
    let mut upward = Vec::new();
    for ((from, to), file) in dependencies() {
        if ROOTS.contains(&from.as_str()) {
            continue;
        }
        let (Some(a), Some(b)) = (layer_of(&from), layer_of(&to)) else { continue };
        if b > a || (b == a && a != 0) {
            upward.push(format!("{from} ({}) -> {to} ({}) in src/{file}", LAYERS[a].0, LAYERS[b].0));
        }
    }
    assert!(upward.is_empty(), "dependencies that do not point down:\n{}", upward.join("\n"));
}

#[test]
fn core_modules_form_no_cycle() {
    let core = LAYERS[0].1;
    let edges: Vec<(String, String)> =
        dependencies().into_keys().filter(|(a, b)| core.contains(&a.as_str()) && core.contains(&b.as_str())).collect();
    let reaches = |start: &str, goal: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.to_owned()];
        while let Some(m) = todo.pop() {
            for (a, b) in &edges {
                if *a == m && seen.insert(b.clone()) {
                    todo.push(b.clone());
                }
            }
        }
        seen.contains(goal)
    };
    let cycles: Vec<String> =
        edges.iter().filter(|(a, b)| reaches(b, a)).map(|(a, b)| format!("{a} <-> {b}")).collect();
    assert!(cycles.is_empty(), "core modules in a cycle: {cycles:?}");
}

#[test]
fn the_check_sees_groups_and_ignores_comments_and_tests() {
    let code = production_code(
        "use crate::{clock::X, point};\n// crate::web in a comment\nfn f() { crate::store::open(); }\n#[cfg(test)]\nuse crate::app;",
    );
    let found: Vec<String> = referenced_modules(&code).into_iter().collect();
    assert_eq!(found, ["clock", "point", "store"]);
}
