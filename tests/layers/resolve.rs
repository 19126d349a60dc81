//! Which top-level modules a crate's code points at, read with `syn` as the compiler would
//! resolve the paths, not by searching the text for `crate::`.
//!
//! The walk starts at the crate root and follows `mod` declarations (inline or in files,
//! `#[path]` included), so it reads exactly the modules the crate compiles, except test
//! modules (`#[cfg(test)] mod ...`), which are left out whole, files included. Every other item
//! counts, wherever it sits in its file.
//!
//! In each module it resolves:
//! - `use` trees: nested groups, renames, `self`, globs; a path may start with `crate`,
//!   `super` (any number), `self`, `$crate`, or a name an earlier `use` bound (`use crate as c;
//!   use c::store`), and `extern crate self as name` binds the root too;
//! - paths in expressions, types, patterns, trait bounds and visibilities (`pub(in crate::x)`),
//!   through the names the module's `use` items bound (inherited from the parent with
//!   `use super::*`; a glob of the root brings every top-level module into scope);
//! - paths inside macro invocations and attributes, read from their tokens (an identifier
//!   followed by `::` identifiers), and string literals of attributes that are paths
//!   (`#[serde(with = "crate::x")]`). Doc comments are not code and are skipped.
//!
//! A module's `use` bindings are gathered from the whole module (function bodies included)
//! before its paths are resolved: a name bound in one block is taken to be bound in the whole
//! module. That can only find more edges, never fewer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// Where the walk reads files from: the real `src/` or snippets in a test.
pub trait Sources {
    /// The text of `file` (relative to the source root), if it exists.
    fn read(&self, file: &Path) -> Option<String>;
}

/// Sources on disk under `root`.
pub struct Disk(pub PathBuf);

impl Sources for Disk {
    fn read(&self, file: &Path) -> Option<String> {
        std::fs::read_to_string(self.0.join(file)).ok()
    }
}

/// Sources in memory: `(relative path, text)`.
impl Sources for BTreeMap<PathBuf, String> {
    fn read(&self, file: &Path) -> Option<String> {
        self.get(file).cloned()
    }
}

/// What the walk found.
#[derive(Debug, Default)]
pub struct Graph {
    /// `(from, to)` top-level modules, with a file that shows the dependency. The crate root's
    /// own code is `from` = `lib`.
    pub edges: BTreeMap<(String, String), PathBuf>,
    /// Files read as non-test code.
    pub files: BTreeSet<PathBuf>,
    /// Files of test modules, not read.
    pub test_files: BTreeSet<PathBuf>,
}

/// One module to read: its absolute path, the file it lives in, the items, and the directory
/// its file-backed children live in.
struct Pending {
    path: Vec<String>,
    file: PathBuf,
    items: Vec<syn::Item>,
    child_dir: PathBuf,
}

/// Walks the crate rooted at `root` (`lib.rs`) in `sources`.
pub fn walk(sources: &dyn Sources, root: &Path) -> Graph {
    let text = sources.read(root).unwrap_or_else(|| panic!("no crate root {}", root.display()));
    let file = parse(&text, root);
    let dir = root.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut graph = Graph::default();
    graph.files.insert(root.to_path_buf());
    let top_modules: BTreeSet<String> = file
        .items
        .iter()
        .filter_map(|i| match i {
            syn::Item::Mod(m) if !is_test_module(m) => Some(m.ident.to_string()),
            _ => None,
        })
        .collect();
    let mut scopes: BTreeMap<Vec<String>, Scope> = BTreeMap::new();
    let mut todo = vec![Pending { path: Vec::new(), file: root.to_path_buf(), items: file.items, child_dir: dir }];
    while let Some(module) = todo.pop() {
        let parent = module.path.split_last().map(|(_, p)| p.to_vec());
        let inherited = parent.and_then(|p| scopes.get(&p).cloned());
        let path = module.path.clone();
        let mut reader = ModuleReader {
            path: &path,
            top_modules: &top_modules,
            scope: Scope::default(),
            root_scope: scopes.get(&Vec::new()).cloned(),
            found: BTreeSet::new(),
            children: Vec::new(),
            binding: true,
        };
        reader.bind_uses(&module.items, inherited.as_ref());
        for item in &module.items {
            reader.visit_item(item);
        }
        let from = module.path.first().cloned().unwrap_or_else(|| "lib".to_owned());
        for to in reader.found {
            if to != from && top_modules.contains(&to) {
                graph.edges.entry((from.clone(), to)).or_insert_with(|| module.file.clone());
            }
        }
        for child in reader.children {
            todo.extend(open_child(sources, &module, &child, &mut graph));
        }
        scopes.insert(path.clone(), reader.scope);
    }
    graph
}

fn parse(text: &str, file: &Path) -> syn::File {
    syn::parse_file(text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The child module `m` of `parent`: its items (inline or from its file), or `None` for a test
/// module, whose file is only noted.
fn open_child(sources: &dyn Sources, parent: &Pending, m: &syn::ItemMod, graph: &mut Graph) -> Option<Pending> {
    let name = m.ident.to_string();
    let mut path = parent.path.clone();
    path.push(name.clone());
    if let Some((_, items)) = &m.content {
        if is_test_module(m) {
            return None;
        }
        let child_dir = parent.child_dir.join(&name);
        return Some(Pending { path, file: parent.file.clone(), items: items.clone(), child_dir });
    }
    let candidates = match path_attribute(m) {
        Some(p) => vec![parent.file.parent().unwrap_or(Path::new("")).join(p)],
        None => vec![parent.child_dir.join(format!("{name}.rs")), parent.child_dir.join(&name).join("mod.rs")],
    };
    let (file, text) = candidates
        .iter()
        .find_map(|c| sources.read(c).map(|t| (c.clone(), t)))
        .unwrap_or_else(|| panic!("module {} declared in {} has no file", path.join("::"), parent.file.display()));
    if is_test_module(m) {
        graph.test_files.insert(file);
        return None;
    }
    graph.files.insert(file.clone());
    let child_dir = if file.file_name().is_some_and(|f| f == "mod.rs") || path_attribute(m).is_some() {
        file.parent().unwrap_or(Path::new("")).to_path_buf()
    } else {
        parent.child_dir.join(&name)
    };
    Some(Pending { path, items: parse(&text, &file).items, file, child_dir })
}

fn path_attribute(m: &syn::ItemMod) -> Option<String> {
    m.attrs.iter().find(|a| a.path().is_ident("path")).and_then(|a| match &a.meta {
        syn::Meta::NameValue(syn::MetaNameValue { value: syn::Expr::Lit(l), .. }) => match &l.lit {
            syn::Lit::Str(s) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// `#[cfg(test)] mod ...`: the only code left out.
pub fn is_test_module(m: &syn::ItemMod) -> bool {
    m.attrs.iter().any(|a| a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test"))
}

/// Names a module's `use` items bound, to absolute paths (`[]` is the crate root).
#[derive(Debug, Default, Clone)]
struct Scope {
    names: BTreeMap<String, Vec<String>>,
}

/// One `use` leaf: a bound name, or a glob.
enum Leaf {
    Name(String, Vec<String>),
    Glob(Vec<String>),
}

/// Flattens a `use` tree into its leaves, each with its path as written.
fn leaves(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Leaf>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            leaves(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) if n.ident == "self" => {
            if let Some(last) = prefix.last() {
                out.push(Leaf::Name(last.clone(), prefix.clone()));
            }
        }
        syn::UseTree::Name(n) => {
            let mut path = prefix.clone();
            path.push(n.ident.to_string());
            out.push(Leaf::Name(n.ident.to_string(), path));
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            if r.ident != "self" {
                path.push(r.ident.to_string());
            }
            out.push(Leaf::Name(r.rename.to_string(), path));
        }
        syn::UseTree::Glob(_) => out.push(Leaf::Glob(prefix.clone())),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| leaves(t, prefix, out)),
    }
}

/// Reads one module: first its `use` bindings, then every path in it.
struct ModuleReader<'a> {
    path: &'a [String],
    top_modules: &'a BTreeSet<String>,
    scope: Scope,
    /// The crate root's bindings (`crate::Name` where the root re-exports `Name`).
    root_scope: Option<Scope>,
    /// Top-level modules the module's paths resolve into.
    found: BTreeSet<String>,
    /// Child modules met (declared in the module or in one of its blocks).
    children: Vec<syn::ItemMod>,
    /// True during the first pass, which only gathers `use` bindings.
    binding: bool,
}

impl ModuleReader<'_> {
    /// Gathers the module's bindings; a name may be bound through another (`use crate as c;
    /// use c::store;`), so the leaves are resolved until nothing changes.
    fn bind_uses(&mut self, items: &[syn::Item], parent: Option<&Scope>) {
        let mut uses = UseCollector::default();
        for item in items {
            uses.visit_item(item);
        }
        for _ in 0..=uses.leaves.len() {
            let before = self.scope.names.len();
            for leaf in &uses.leaves {
                match leaf {
                    Leaf::Name(name, written) if name != "_" => {
                        if let Some(abs) = self.resolve(written) {
                            self.scope.names.entry(name.clone()).or_insert(abs);
                        }
                    }
                    Leaf::Name(..) => {}
                    Leaf::Glob(written) => self.bind_glob(written, parent),
                }
            }
            if self.scope.names.len() == before {
                break;
            }
        }
        for name in &uses.extern_self {
            self.scope.names.insert(name.clone(), Vec::new());
        }
        self.binding = false;
        for leaf in &uses.leaves {
            let written = match leaf {
                Leaf::Name(_, w) | Leaf::Glob(w) => w,
            };
            self.note(written);
        }
    }

    /// A glob brings the names of the module it reads into scope: the crate root's top-level
    /// modules, or the parent's bindings (`use super::*`).
    fn bind_glob(&mut self, written: &[String], parent: Option<&Scope>) {
        let Some(abs) = self.resolve(written) else { return };
        if abs.is_empty() {
            for m in self.top_modules {
                self.scope.names.entry(m.clone()).or_insert_with(|| vec![m.clone()]);
            }
            if let Some(root) = &self.root_scope {
                for (k, v) in &root.names {
                    self.scope.names.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        } else if abs.as_slice() == self.path.split_last().map_or(&[][..], |(_, p)| p) {
            for (k, v) in parent.map(|s| s.names.iter()).into_iter().flatten() {
                self.scope.names.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }

    /// The absolute path a written path stands for, if it is one of this crate's.
    fn resolve(&self, written: &[String]) -> Option<Vec<String>> {
        let (first, rest) = written.split_first()?;
        let mut abs = match first.as_str() {
            "crate" | "$crate" => Vec::new(),
            "super" => {
                let supers = written.iter().take_while(|s| *s == "super").count();
                let base = self.path.len().checked_sub(supers)?;
                let mut abs = self.path[..base].to_vec();
                abs.extend(written[supers..].iter().cloned());
                return Some(self.through_root(abs));
            }
            "self" => self.path.to_vec(),
            name => match self.scope.names.get(name) {
                Some(bound) => bound.clone(),
                None if self.path.is_empty() && self.top_modules.contains(name) => vec![name.to_owned()],
                None => return None,
            },
        };
        abs.extend(rest.iter().cloned());
        Some(self.through_root(abs))
    }

    /// `crate::Name` where the root binds `Name` (a re-export) stands for what `Name` is bound to.
    fn through_root(&self, abs: Vec<String>) -> Vec<String> {
        let Some((first, rest)) = abs.split_first() else { return abs };
        if self.top_modules.contains(first) {
            return abs;
        }
        match self.root_scope.as_ref().and_then(|r| r.names.get(first)) {
            Some(bound) if !bound.is_empty() && bound[0] != *first => bound.iter().chain(rest).cloned().collect(),
            _ => abs,
        }
    }

    /// Records the top-level module a written path resolves into.
    fn note(&mut self, written: &[String]) {
        if self.binding {
            return;
        }
        if let Some(top) = self.resolve(written).and_then(|abs| abs.first().cloned()) {
            self.found.insert(top);
        }
    }

    /// Paths inside tokens: `a::b::c` runs of identifiers (`$crate` included), and string
    /// literals that are paths when `literals` is set (attributes).
    fn scan_tokens(&mut self, tokens: TokenStream, literals: bool) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => self.scan_tokens(g.stream(), literals),
                TokenTree::Literal(l) if literals => {
                    let text = l.to_string();
                    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
                        && let Ok(p) = syn::parse_str::<syn::Path>(inner)
                    {
                        self.note(&segments(&p));
                    }
                }
                TokenTree::Ident(_) | TokenTree::Punct(_) if !after_colons(&tokens, i) => {
                    let (written, next) = ident_run(&tokens, i);
                    if !written.is_empty() {
                        self.note(&written);
                        i = next;
                        continue;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// Whether the token at `i` follows `::` (it continues a path, not starts one).
fn after_colons(tokens: &[TokenTree], i: usize) -> bool {
    i >= 2
        && matches!((&tokens[i - 2], &tokens[i - 1]), (TokenTree::Punct(a), TokenTree::Punct(b)) if a.as_char() == ':' && b.as_char() == ':')
}

/// The run of `ident (:: ident)*` starting at `i` (`$crate` counts as one identifier), and
/// the index after it; empty when no identifier starts there.
fn ident_run(tokens: &[TokenTree], mut i: usize) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    loop {
        let name = match (tokens.get(i), tokens.get(i + 1)) {
            (Some(TokenTree::Punct(p)), Some(TokenTree::Ident(id))) if p.as_char() == '$' && id == "crate" => {
                i += 1;
                "$crate".to_owned()
            }
            (Some(TokenTree::Ident(id)), _) => id.to_string(),
            _ => break,
        };
        out.push(name);
        i += 1;
        let colons = matches!((tokens.get(i), tokens.get(i + 1)), (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':');
        if !colons {
            break;
        }
        i += 2;
    }
    (out, i)
}

fn segments(p: &syn::Path) -> Vec<String> {
    p.segments.iter().map(|s| s.ident.to_string()).collect()
}

impl<'ast> Visit<'ast> for ModuleReader<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // Its own module: read on its own, with its own scope.
        self.children.push(m.clone());
    }

    fn visit_item_use(&mut self, _: &'ast syn::ItemUse) {
        // Noted with the bindings.
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() {
            self.note(&segments(p));
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.visit_path(&m.path);
        self.scan_tokens(m.tokens.clone(), false);
    }

    fn visit_attribute(&mut self, a: &'ast syn::Attribute) {
        if a.path().is_ident("doc") {
            return;
        }
        match &a.meta {
            syn::Meta::Path(p) => self.visit_path(p),
            syn::Meta::List(l) => {
                self.visit_path(&l.path);
                self.scan_tokens(l.tokens.clone(), true);
            }
            syn::Meta::NameValue(nv) => {
                self.visit_path(&nv.path);
                match &nv.value {
                    syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => {
                        if let Ok(p) = syn::parse_str::<syn::Path>(&s.value()) {
                            self.note(&segments(&p));
                        }
                    }
                    other => self.visit_expr(other),
                }
            }
        }
    }

    fn visit_item_macro(&mut self, m: &'ast syn::ItemMacro) {
        // `macro_rules!` bodies use `$crate::`; other item macros are invocations.
        for a in &m.attrs {
            self.visit_attribute(a);
        }
        self.visit_macro(&m.mac);
    }
}

/// The first pass: every `use` leaf of a module (blocks included, child modules not), and the
/// names `extern crate self as name` gives the root.
#[derive(Default)]
struct UseCollector {
    leaves: Vec<Leaf>,
    extern_self: Vec<String>,
}

impl<'ast> Visit<'ast> for UseCollector {
    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {}

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if u.leading_colon.is_none() {
            leaves(&u.tree, &mut Vec::new(), &mut self.leaves);
        }
    }

    fn visit_item_extern_crate(&mut self, e: &'ast syn::ItemExternCrate) {
        if e.ident == "self"
            && let Some((_, name)) = &e.rename
        {
            self.extern_self.push(name.to_string());
        }
    }
}
