//! The gateway's modules import one another one way only (ARCHITECTURE.md, "Dependency direction"): this
//! reads `src/` and fails on any circle of `crate::<module>` imports, so a new one is caught when it is
//! made rather than found in a review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Circles known and left, each with the reason (the first module imports the second, which imports it
/// back). None is left; one added here needs its reason and a line in ARCHITECTURE.md.
const ACCEPTED: &[(&str, &str, &str)] = &[];

/// For each top-level module of `src/`, the other modules its code (not its comments) names as `crate::x`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap();
            let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
            let module = first.trim_end_matches(".rs").to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let uses = graph.entry(module.clone()).or_default();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String =
                        line[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    if !name.is_empty() && name != module {
                        uses.insert(name);
                    }
                }
            }
        }
    }
    graph
}

/// Every module reachable from `from`.
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&str> = graph.get(from).into_iter().flatten().map(String::as_str).collect();
    while let Some(m) = todo.pop() {
        if seen.insert(m.to_string()) {
            todo.extend(graph.get(m).into_iter().flatten().map(String::as_str));
        }
    }
    seen
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = imports();
    assert!(graph.contains_key("gateway") && graph.contains_key("http"), "read src/: {graph:?}");
    let mut circles = Vec::new();
    for (module, uses) in &graph {
        for other in uses {
            let accepted = ACCEPTED.iter().any(|(a, b, _)| (*a, *b) == (module.as_str(), other.as_str()));
            if module < other && reachable(&graph, other).contains(module) && !accepted {
                circles.push(format!("{module} -> {other} -> ... -> {module}"));
            }
        }
    }
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}
