//! The kernel's modules import each other without cycles: subsystems
//! depend on the core (and on subsystems below them), never the other way
//! round. Read from the source text: every `use crate::…`, `use super::…`
//! and inline `crate::…` / `super::…` path of a file outside its tests,
//! resolved to the file that defines the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `src/`-relative file → its source.
fn sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(&root).expect("under src");
                let rel = rel.to_string_lossy().replace('\\', "/");
                out.insert(rel, std::fs::read_to_string(&path).expect("read"));
            }
        }
    }
    out
}

/// The file's code without its comments and its `#[cfg(test)]` module.
fn code(source: &str) -> String {
    let source = match source.find("#[cfg(test)]\nmod tests") {
        Some(i) => &source[..i],
        None => source,
    };
    source
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path (`["item", "write"]`) of a file (`item/write.rs`).
fn module_of(file: &str) -> Vec<String> {
    let trimmed = file.trim_end_matches(".rs");
    let mut parts: Vec<String> = trimmed.split('/').map(str::to_owned).collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// The file defining the longest prefix of `path` that is a module.
fn resolve(files: &BTreeMap<String, String>, path: &[String]) -> Option<String> {
    (1..=path.len()).rev().find_map(|n| {
        let base = path[..n].join("/");
        [format!("{base}.rs"), format!("{base}/mod.rs")]
            .into_iter()
            .find(|f| files.contains_key(f))
    })
}

/// Every path a `use` tree names: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, ...
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let base = join(prefix, head);
        let mut depth = 0usize;
        let mut start = 0usize;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    expand(&base, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&base, &inner[start..], out);
    } else if !tree.is_empty() {
        let name = tree.split(" as ").next().unwrap_or(tree).trim();
        out.push(if name == "self" {
            prefix.to_owned()
        } else {
            join(prefix, name)
        });
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}::{b}"),
    }
}

/// Module paths (from the crate root) that `file` imports.
fn imports(file: &str, code: &str) -> Vec<Vec<String>> {
    let module = module_of(file);
    let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
    let mut paths = Vec::new();
    let absolute = |root: &str, rest: &str| -> Vec<String> {
        let mut p: Vec<String> = match root {
            "super" => parent.clone(),
            _ => Vec::new(),
        };
        p.extend(
            rest.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        p
    };
    for root in ["crate", "super"] {
        // `use root::tree;`
        let marker = format!("use {root}::");
        let mut rest = code;
        while let Some(i) = rest.find(&marker) {
            let after = &rest[i + marker.len()..];
            let end = after.find(';').unwrap_or(after.len());
            let mut expanded = Vec::new();
            expand("", &after[..end], &mut expanded);
            paths.extend(expanded.iter().map(|p| absolute(root, p)));
            rest = &after[end..];
        }
        // Inline `root::a::b` paths.
        let marker = format!("{root}::");
        let mut at = 0usize;
        while let Some(i) = code[at..].find(&marker) {
            let start = at + i;
            let before = code[..start].chars().next_back();
            let after = &code[start + marker.len()..];
            let len = after
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(after.len());
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                paths.push(absolute(root, after[..len].trim_end_matches(':')));
            }
            at = start + marker.len() + len;
        }
    }
    paths
}

/// A cycle of the import graph, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(c) = visit(next, graph, marks, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node) {
            let mut stack = Vec::new();
            if let Some(c) = visit(node, graph, &mut marks, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = sources();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, source) in &files {
        let targets = graph.entry(file.clone()).or_default();
        for path in imports(file, &code(source)) {
            if let Some(target) = resolve(&files, &path)
                && target != *file
            {
                targets.insert(target);
            }
        }
    }
    graph
}

#[test]
fn the_kernel_modules_import_each_other_without_cycles() {
    let graph = import_graph();
    // The reader sees the imports it must: a subsystem's files name the
    // state, and the state names the subsystems' handles.
    assert!(graph["item/write.rs"].contains("state.rs"));
    assert!(graph["state.rs"].contains("search/mod.rs"));
    assert!(graph["state.rs"].contains("queue/info.rs"));
    assert_eq!(find_cycle(&graph), None, "an import cycle");
}

#[test]
fn the_cycle_finder_names_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph
        .entry("a.rs".into())
        .or_default()
        .insert("b.rs".into());
    graph
        .entry("b.rs".into())
        .or_default()
        .insert("c.rs".into());
    graph
        .entry("c.rs".into())
        .or_default()
        .insert("a.rs".into());
    let cycle = find_cycle(&graph).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
}

#[test]
fn use_trees_and_inline_paths_are_read() {
    let found = imports(
        "item/write.rs",
        "use crate::a::{b, c::{d, e as f}};\nuse super::g;\nfn x() { crate::h::i(); }",
    );
    let names: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    for want in ["a::b", "a::c::d", "a::c::e", "item::g", "h::i"] {
        assert!(names.contains(&want.to_owned()), "{want} in {names:?}");
    }
}
