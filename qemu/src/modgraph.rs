//! The import graph between a crate's modules, and its cycles.
//!
//! A module is one source file (`lib.rs`/`main.rs` is the crate root, `a/mod.rs` and `a.rs`
//! are `a`, `a/b.rs` is `a::b`). Module `m` depends on module `t` when code of `m` outside
//! its `#[cfg(test)]` module names a path `crate::…`, `super::…` or `self::…` whose longest
//! prefix that is a module is `t`, `use` trees (`crate::{a, b::{c, d}}`) included.
//!
//! Paths into one's own ancestors are not counted: a parent module is its children's
//! interface (the traits they implement, the types they share), and it names its children
//! to re-export or drive them, which is the other direction. So a cycle here is a real
//! knot between modules that could be apart: `a::x` needs `b::y` and `b::y` needs `a::x`.
//!
//! `cargo xtask lint` fails when the hypervisor's or crx-guest's modules have a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The crates whose module graphs must stay free of cycles.
pub const CHECKED: &[&str] = &["hypervisor", "crx-guest"];

/// A module path, `[]` for the crate root.
pub type ModPath = Vec<String>;

/// The modules of a crate and what each depends on.
#[derive(Debug, Default)]
pub struct Graph {
    /// Module to the modules it names.
    pub edges: BTreeMap<ModPath, BTreeSet<ModPath>>,
}

/// Reads every `.rs` file under `src` (a crate's source directory).
pub fn read(src: &Path) -> std::io::Result<Graph> {
    let mut files = Vec::new();
    walk(src, &mut files)?;
    let mut sources = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap_or(&f);
        sources.insert(module_of(rel), fs::read_to_string(&f)?);
    }
    Ok(graph(&sources))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// The module a file (relative to `src`) defines.
pub fn module_of(rel: &Path) -> ModPath {
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.pop() {
        let stem = last.strip_suffix(".rs").unwrap_or(&last).to_string();
        let root = parts.is_empty() && (stem == "lib" || stem == "main");
        if stem != "mod" && !root {
            parts.push(stem);
        }
    }
    parts
}

/// The graph of `sources` (module path to its file's text).
pub fn graph(sources: &BTreeMap<ModPath, String>) -> Graph {
    let known: BTreeSet<&ModPath> = sources.keys().collect();
    let mut g = Graph::default();
    for (m, text) in sources {
        let deps = g.edges.entry(m.clone()).or_default();
        for path in paths(&without_comments(outside_tests(text))) {
            let Some(target) = resolve(m, &path, &known) else {
                continue;
            };
            if target.len() < m.len() && m.starts_with(&target) || target == *m {
                continue; // an ancestor, or itself
            }
            deps.insert(target);
        }
    }
    g
}

/// The text before the file's `#[cfg(test)] mod …` block.
fn outside_tests(text: &str) -> &str {
    let mut from = 0;
    while let Some(i) = text[from..].find("#[cfg(test)]") {
        let at = from + i;
        let rest = text[at + "#[cfg(test)]".len()..].trim_start();
        let rest = rest.strip_prefix("pub ").unwrap_or(rest).trim_start();
        if rest.starts_with("mod ") {
            return &text[..at];
        }
        from = at + 1;
    }
    text
}

/// `text` with `//` and `/* */` comments blanked out (string literals are kept as they
/// are; a `//` inside one ends the line early, which can only drop paths, never add one).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
            out.push(' ');
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts with `crate`, `super` or `self`, use trees expanded.
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // `$crate` in a macro names the crate of wherever the macro is expanded: not counted.
        let at_word = i == 0 || !(is_ident_char(char::from(b[i - 1])) || b[i - 1] == b'$');
        let starts = ["crate::", "super::", "self::"].iter().any(|k| text[i..].starts_with(k));
        if at_word && starts {
            let mut p = Parser { s: text, i };
            p.tree(Vec::new(), &mut out);
            i = p.i.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.s[self.i..].starts_with(char::is_whitespace) {
            self.i += self.s[self.i..].chars().next().map_or(1, char::len_utf8);
        }
    }

    fn ident(&mut self) -> Option<String> {
        self.skip_ws();
        let start = self.i;
        while self.s[self.i..].starts_with(is_ident_char) {
            self.i += 1;
        }
        (self.i > start).then(|| self.s[start..self.i].to_string())
    }

    /// One use tree after `prefix`: `a::b`, `a::{…}`, `a as b`, `*`.
    fn tree(&mut self, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        loop {
            self.skip_ws();
            if self.s[self.i..].starts_with('{') {
                self.i += 1;
                loop {
                    self.tree(path.clone(), out);
                    self.skip_ws();
                    if self.s[self.i..].starts_with(',') {
                        self.i += 1;
                        continue;
                    }
                    if self.s[self.i..].starts_with('}') {
                        self.i += 1;
                    }
                    return;
                }
            }
            if self.s[self.i..].starts_with('*') {
                self.i += 1;
                out.push(path);
                return;
            }
            match self.ident() {
                Some(id) => path.push(id),
                None => {
                    out.push(path);
                    return;
                }
            }
            self.skip_ws();
            if self.s[self.i..].starts_with("::") {
                self.i += 2;
                continue;
            }
            out.push(path);
            return;
        }
    }
}

/// The module `path`, written in module `m`, names.
fn resolve(m: &ModPath, path: &[String], known: &BTreeSet<&ModPath>) -> Option<ModPath> {
    let mut base: ModPath = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("self") => m.clone(),
        Some("super") => m.get(..m.len().checked_sub(1)?)?.to_vec(),
        _ => return None,
    };
    let mut rest = &path[1..];
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    let mut best = known.contains(&base).then(|| base.clone());
    for seg in rest {
        base.push(seg.clone());
        if known.contains(&base) {
            best = Some(base.clone());
        } else {
            break;
        }
    }
    best
}

impl Graph {
    /// The cycles: every strongly connected set of more than one module, each sorted.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let nodes: Vec<&ModPath> = self.edges.keys().collect();
        let index_of: BTreeMap<&ModPath, usize> = nodes.iter().enumerate().map(|(i, m)| (*m, i)).collect();
        let adj: Vec<Vec<usize>> = nodes
            .iter()
            .map(|m| self.edges[*m].iter().filter_map(|t| index_of.get(t).copied()).collect())
            .collect();
        let mut found = Vec::new();
        for comp in strongly_connected(&adj) {
            if comp.len() > 1 {
                let mut names: Vec<String> = comp.iter().map(|&i| name(nodes[i])).collect();
                names.sort();
                found.push(names);
            }
        }
        found.sort();
        found
    }
}

/// `a::b`, or `crate` for the root.
pub fn name(m: &ModPath) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Tarjan's algorithm, iterative.
fn strongly_connected(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = adj.len();
    let (mut index, mut low, mut on_stack) = (vec![UNSEEN; n], vec![0; n], vec![false; n]);
    let (mut stack, mut comps, mut next) = (Vec::new(), Vec::new(), 0);
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some(&mut (v, ref mut k)) = work.last_mut() {
            if *k == 0 && index[v] == UNSEEN {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = adj[v].get(*k) {
                *k += 1;
                if index[w] == UNSEEN {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                comps.push(comp);
            }
        }
    }
    comps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(files: &[(&str, &str)]) -> Graph {
        let sources = files.iter().map(|(p, t)| (module_of(Path::new(p)), t.to_string())).collect();
        graph(&sources)
    }

    fn deps(g: &Graph, m: &str) -> Vec<String> {
        let key: ModPath = if m == "crate" { vec![] } else { m.split("::").map(String::from).collect() };
        g.edges[&key].iter().map(name).collect()
    }

    #[test]
    fn files_name_modules() {
        assert_eq!(module_of(Path::new("lib.rs")), Vec::<String>::new());
        assert_eq!(module_of(Path::new("vm/mod.rs")), ["vm"]);
        assert_eq!(module_of(Path::new("vm/pod.rs")), ["vm", "pod"]);
        assert_eq!(module_of(Path::new("kernel/sys/fs.rs")), ["kernel", "sys", "fs"]);
    }

    #[test]
    fn paths_and_use_trees_become_edges() {
        let g = g(&[
            ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
            ("a/mod.rs", "pub mod x; pub mod y; use crate::{b::{self, Thing}, c as see};"),
            ("a/x.rs", "use super::y::Y; use super::Parent; fn f() { crate::c::go(); self::z(); }"),
            ("a/y.rs", "// use crate::b;\n/* crate::c */ const S: &str = \"\"; use super::super::b::*;"),
            ("b.rs", "fn f() -> crate::a::x::X { X::new() }\n#[cfg(test)]\nmod tests { use crate::c; }"),
            ("c.rs", "macro_rules! m { () => { $crate::b::f() } } fn g() { notcrate::a::x(); }"),
        ]);
        assert_eq!(deps(&g, "a"), ["b", "c"]);
        assert_eq!(deps(&g, "a::x"), ["a::y", "c"], "the parent is not counted, a sibling is");
        assert_eq!(deps(&g, "a::y"), ["b"], "comments do not count, super::super does");
        assert_eq!(deps(&g, "b"), ["a::x"], "the test module does not count");
        assert!(deps(&g, "c").is_empty(), "{:?}", deps(&g, "c"));
        assert_eq!(g.cycles(), [vec!["a::x", "a::y", "b"]], "b -> a::x -> a::y -> b");
    }

    #[test]
    fn cycles_are_found_through_several_modules() {
        let g = g(&[
            ("lib.rs", ""),
            ("hub.rs", "use crate::one::X; use crate::two::{Y};"),
            ("one.rs", "use crate::hub::Test;"),
            ("two/mod.rs", "pub mod deep;"),
            ("two/deep.rs", "use crate::three::Z;"),
            ("three.rs", "use crate::two::deep::W;"),
            ("leaf.rs", "use crate::hub;"),
        ]);
        assert_eq!(g.cycles(), [vec!["hub", "one"], vec!["three", "two::deep"]]);
    }

    /// The kernels' own sources have no cycles (the same check `cargo xtask lint` makes).
    #[test]
    fn the_hypervisor_and_crx_guest_have_no_import_cycles() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for krate in CHECKED {
            let g = read(&root.join(krate).join("src")).expect("the crate's sources");
            assert!(g.edges.len() > 20, "{krate}: only {} modules read", g.edges.len());
            assert_eq!(g.cycles(), Vec::<Vec<String>>::new(), "{krate} has import cycles");
        }
    }
}
