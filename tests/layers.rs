//! The top-level modules of `src/` form layers, and every dependency points down.
//!
//! Parses the crate with `syn` from `lib.rs` down its `mod` declarations and resolves every
//! path to the top-level module it points at (`layers/resolve.rs` says how: `use` trees,
//! `crate::`/`super::`/`self::` paths, aliases such as `use crate as c`, macros and attributes),
//! leaving out test modules only. Each dependency is checked against [`LAYERS`]: a module may
//! use modules of lower layers only; core modules may also use each other as long as they form
//! no cycle. A module missing from the table fails the test too, so a new module gets a place
//! in the picture (ARCHITECTURE.md) when it is added.

#[path = "layers/resolve.rs"]
mod resolve;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the bottom up. Keep in step with ARCHITECTURE.md's picture.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "core",
        &[
            "budget",
            "canary",
            "clock",
            "console",
            "expo",
            "health",
            "heap",
            "host",
            "net",
            "phase",
            "point",
            "promql",
            "redact",
            "setting",
            "shutdown",
            "telemetry",
            "variant",
        ],
    ),
    ("contracts", &["ports"]),
    ("subsystems", &["alerts", "hub", "promsource", "proxy", "remote", "scrape", "store"]),
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

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
}

fn library() -> resolve::Graph {
    resolve::walk(&resolve::Disk(src_dir()), Path::new("lib.rs"))
}

/// Dependencies of `edges` that do not point down.
fn upward(edges: &BTreeMap<(String, String), PathBuf>) -> Vec<String> {
    let mut out = Vec::new();
    for ((from, to), file) in edges {
        if ROOTS.contains(&from.as_str()) {
            continue;
        }
        let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) else { continue };
        if b > a || (b == a && a != 0) {
            out.push(format!("{from} ({}) -> {to} ({}) in src/{}", LAYERS[a].0, LAYERS[b].0, file.display()));
        }
    }
    out
}

#[test]
fn every_top_level_module_has_a_layer() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let missing: BTreeSet<String> =
        files.iter().map(|f| top_module(f)).filter(|m| layer_of(m).is_none() && !ROOTS.contains(&m.as_str())).collect();
    assert!(missing.is_empty(), "give these modules a layer in tests/layers.rs and ARCHITECTURE.md: {missing:?}");
}

/// The walk reaches every file of the library: each is read, or belongs to a test module.
#[test]
fn the_walk_reads_every_file_of_the_library() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let graph = library();
    let unread: Vec<PathBuf> = files
        .iter()
        .map(|f| f.strip_prefix(src_dir()).unwrap().to_path_buf())
        .filter(|f| f != Path::new("main.rs") && !graph.files.contains(f) && !graph.test_files.contains(f))
        .collect();
    assert!(unread.is_empty(), "files no `mod` declaration reaches: {unread:?}");
    assert!(graph.files.len() > 100, "{} files read", graph.files.len());
}

#[test]
fn dependencies_point_down() {
    let up = upward(&library().edges);
    assert!(up.is_empty(), "dependencies that do not point down:\n{}", up.join("\n"));
}

#[test]
fn core_modules_form_no_cycle() {
    let core = LAYERS[0].1;
    let edges: Vec<(String, String)> =
        library().edges.into_keys().filter(|(a, b)| core.contains(&a.as_str()) && core.contains(&b.as_str())).collect();
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

// The resolver on small crates. `lib.rs` declares `clock` (core), `store` (a subsystem) and
// `web`; every snippet hides a dependency of `store` on `web` (upward) or `clock` (down). The
// text reader this file used before (find `crate::`, take the name after it, or split a
// `{...}` group up to its first `}`; cut each file at its first `#[cfg(test)]`; drop `//`
// comments) missed each of the hidden `web` edges below, as its comment says.

const LIB: &str = "pub mod clock;\npub mod store;\npub mod web;\n";

/// The dependencies of `store` in a crate of `LIB` plus `files`.
fn store_edges(files: &[(&str, &str)]) -> Vec<String> {
    let mut sources: BTreeMap<PathBuf, String> =
        files.iter().map(|(p, t)| (PathBuf::from(p), (*t).to_owned())).collect();
    sources.insert("lib.rs".into(), LIB.to_owned());
    for m in ["clock.rs", "web.rs"] {
        sources.entry(m.into()).or_default();
    }
    let graph = resolve::walk(&sources, Path::new("lib.rs"));
    graph.edges.into_keys().filter(|(from, _)| from == "store").map(|(_, to)| to).collect()
}

/// Old reader: the group `{clock::{Clock, Manual}, web::Router}` was cut at its first `}`, so
/// it saw `clock` and `Manual` and never `web`.
#[test]
fn nested_use_groups_are_read_whole() {
    let store = "use crate::{clock::{Clock, Manual}, web::Router};\n";
    assert_eq!(store_edges(&[("store.rs", store)]), ["clock", "web"]);
    let deeper = "use crate::{clock::Clock, {web::{self, pages}}};\n";
    assert_eq!(store_edges(&[("store.rs", deeper)]), ["clock", "web"]);
}

/// Old reader: no `crate::` in the text, so nothing.
#[test]
fn super_paths_resolve_from_the_module_they_are_in() {
    let files = [
        ("store/mod.rs", "mod write;\nmod read { pub fn f() -> super::super::clock::Time { todo!() } }\n"),
        ("store/write.rs", "use super::super::web;\nfn f() { super::super::web::serve(); }\n"),
    ];
    assert_eq!(store_edges(&files), ["clock", "web"]);
    let top = [("store.rs", "fn f() -> super::web::Page { todo!() }\n")];
    assert_eq!(store_edges(&top), ["web"], "`super` of a top-level module is the crate root");
}

/// Old reader: `use crate as c` has no `crate::`, and `c::web` is not `crate::web`.
#[test]
fn aliases_of_the_crate_root_are_followed() {
    let aliased = "use crate as c;\nfn f() { c::web::serve(); }\n";
    assert_eq!(store_edges(&[("store.rs", aliased)]), ["web"]);
    let chained = "use crate::{self as c};\nuse c::web as w;\nfn f() -> w::Page { todo!() }\n";
    assert_eq!(store_edges(&[("store.rs", chained)]), ["web"]);
    let external = "extern crate self as zd;\nfn f() { zd::web::serve(); }\n";
    assert_eq!(store_edges(&[("store.rs", external)]), ["web"]);
    let inherited = [
        ("store/mod.rs", "use crate as c;\nmod write;\n"),
        ("store/write.rs", "use super::*;\nfn f() { c::web::serve(); }\n"),
    ];
    assert_eq!(store_edges(&inherited), ["web"], "`use super::*` brings the parent's alias");
}

/// Old reader: everything after the first `#[cfg(test)]` of a file was cut, test helper or not.
#[test]
fn only_test_modules_are_left_out() {
    let store = "#[cfg(test)]\nfn helper() {}\n\
                 #[cfg(test)]\nmod tests { use crate::clock; }\n\
                 pub fn page() -> crate::web::Page { todo!() }\n";
    assert_eq!(store_edges(&[("store.rs", store)]), ["web"]);
    let test_file = [("store/mod.rs", "#[cfg(test)]\nmod tests;\n"), ("store/tests.rs", "use crate::web;\n")];
    assert!(store_edges(&test_file).is_empty(), "a test module's own file is left out too");
}

/// Paths in types, trait impls, patterns, macros and attributes count; doc comments do not.
/// (The old reader saw these too; the parser must not lose them.)
#[test]
fn paths_in_types_macros_and_attributes_count() {
    let cases = [
        "impl crate::web::Render for u8 {}\n",
        "fn f(p: &dyn crate::web::Render) {}\n",
        "fn f(x: Option<u8>) { if let Some(crate::web::ZERO) = x {} }\n",
        "fn f() { println!(\"{}\", crate::web::NAME); }\n",
        "macro_rules! m { () => { $crate::web::serve() }; }\n",
        "#[derive(serde::Serialize)]\nstruct S { #[serde(serialize_with = \"crate::web::ser\")] x: u8 }\n",
        "pub(in crate::store) fn f() -> <u8 as crate::web::Render>::Out { todo!() }\n",
    ];
    for code in cases {
        assert_eq!(store_edges(&[("store.rs", code)]), ["web"], "{code}");
    }
    let doc = "//! Serves crate::web.\n/// Shown by [`crate::web::pages`].\nfn f() {}\n";
    assert!(store_edges(&[("store.rs", doc)]).is_empty());
}

/// A path of another crate or a local name is nobody's module.
#[test]
fn external_and_local_paths_are_not_modules() {
    let code = "use std::sync::Arc;\nuse ::web::Thing;\nfn f(web: u8) -> u8 { let clock = web; clock }\n";
    assert!(store_edges(&[("store.rs", code)]).is_empty());
}
