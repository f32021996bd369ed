//! The workspace's module map, checked: within each crate, no top-level module imports one
//! that imports it back (docs/architecture.md). Cargo already forbids cycles between crates;
//! this is the same rule one level down. A module's imports are the `crate::<module>` paths in
//! its files (comments and `#[cfg(test)] mod tests` bodies left out; a crate's `lib.rs` and
//! `main.rs` compose the modules and are not counted).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which top-level modules each top-level module of the crate at `src` imports, with one
/// file and line per import as evidence.
pub fn imports(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let top = |f: &Path| -> Option<String> {
        let rel = f.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_string_lossy();
        let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
        (!matches!(name.as_str(), "lib" | "main")).then_some(name)
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top(f)).collect();
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in &files {
        let Some(from) = top(f) else { continue };
        if is_test_file(f) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for (n, line) in non_test_code(&text).lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let to: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if to != from && modules.contains(&to) {
                    let at = format!("{}:{}", f.display(), n + 1);
                    edges
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert(at);
                }
            }
        }
    }
    edges
}

/// The module cycles of `edges` (each as the modules in order, starting from its smallest).
pub fn cycles(edges: &BTreeMap<String, BTreeMap<String, String>>) -> BTreeSet<Vec<String>> {
    fn walk(
        edges: &BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<String>,
        found: &mut BTreeSet<Vec<String>>,
    ) {
        let last = path.last().expect("a path has a start").clone();
        for next in edges.get(&last).into_iter().flat_map(|m| m.keys()) {
            if *next == path[0] {
                let min = (0..path.len()).min_by_key(|&i| &path[i]).unwrap_or(0);
                let mut c = path[min..].to_vec();
                c.extend_from_slice(&path[..min]);
                found.insert(c);
            } else if !path.contains(next) && *next > path[0] {
                path.push(next.clone());
                walk(edges, path, found);
                path.pop();
            }
        }
    }
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        walk(edges, &mut vec![start.clone()], &mut found);
    }
    found
}

/// A file of tests only: a module's `tests.rs`.
pub fn is_test_file(f: &Path) -> bool {
    f.file_name().is_some_and(|n| n == "tests.rs")
}

/// A file's code before its `#[cfg(test)] mod tests`.
pub fn non_test_code(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default()
}

/// Every `.rs` file under `dir`.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_module_imports_one_that_imports_it_back() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
        let mut problems = Vec::new();
        let mut crates = 0;
        for e in std::fs::read_dir(&root).unwrap().flatten() {
            let src = e.path().join("src");
            if !src.is_dir() {
                continue;
            }
            crates += 1;
            let edges = imports(&src);
            for c in cycles(&edges) {
                let hops: Vec<String> = c
                    .iter()
                    .zip(c.iter().cycle().skip(1))
                    .map(|(a, b)| format!("{a} -> {b} ({})", edges[a][b]))
                    .collect();
                problems.push(hops.join("; "));
            }
        }
        assert!(
            crates >= 10,
            "found {crates} crates under {}",
            root.display()
        );
        assert!(
            problems.is_empty(),
            "module cycles:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn a_cycle_is_found_and_named() {
        let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (a, b) in [("b", "c"), ("c", "a"), ("a", "b"), ("a", "d")] {
            edges
                .entry(a.into())
                .or_default()
                .insert(b.into(), format!("{a}.rs:1"));
        }
        let found: Vec<Vec<String>> = cycles(&edges).into_iter().collect();
        assert_eq!(found, vec![vec!["a", "b", "c"]]);
    }
}
