//! The workspace's functions, measured: one longer than a screen (100 lines, signature to
//! closing brace) is split, or its name is in `docs/architecture.md`'s "Long functions, and
//! why" with the reason. Test code (`tests.rs`, `#[cfg(test)] mod tests`) and the generated
//! ONNX protobuf code are not measured.

use std::collections::BTreeSet;
use std::path::Path;

use crate::layers::{is_test_file, non_test_code, rust_files};

/// A screen of code, in lines.
pub const SCREEN: usize = 100;

/// A function of the workspace: where it starts, its name and its length in lines.
#[derive(Debug, PartialEq)]
pub struct Function {
    /// `path:line` of its signature.
    pub at: String,
    /// Its name.
    pub name: String,
    /// Lines from the signature to the closing brace, both included.
    pub lines: usize,
}

/// Every function with a body in `text` (a file's code before its test module). A function
/// ends at the first line that is its indentation followed by `}`, as rustfmt writes it.
pub fn functions(file: &str, text: &str) -> Vec<Function> {
    let lines: Vec<&str> = non_test_code(text).lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((indent, name)) = signature(line) else {
            continue;
        };
        // A declaration without a body (a trait's) ends in `;` before any `{`.
        let body = lines[i..]
            .iter()
            .find_map(|l| {
                let l = l.split("//").next().unwrap_or_default().trim_end();
                (l.ends_with('{') || l.ends_with(';')).then(|| l.ends_with('{'))
            })
            .unwrap_or(false);
        if !body {
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = lines[i + 1..].iter().position(|l| l.trim_end() == close) {
            found.push(Function {
                at: format!("{file}:{}", i + 1),
                name,
                lines: end + 2,
            });
        }
    }
    found
}

/// The indentation and name of a line that starts a function.
fn signature(line: &str) -> Option<(&str, String)> {
    let rest = line.trim_start();
    let indent = &line[..line.len() - rest.len()];
    let mut words = rest.split_whitespace();
    let mut word = words.next()?;
    loop {
        match word {
            "fn" => break,
            "const" | "async" | "unsafe" | "extern" | "\"C\"" | "default" => {}
            w if w.starts_with("pub") => {}
            _ => return None,
        }
        word = words.next()?;
    }
    let name: String = words
        .next()?
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some((indent, name))
}

/// The names given a reason in the "Long functions, and why" section of `doc`: every
/// backticked identifier there, and the last segment of each backticked path.
pub fn recorded(doc: &str) -> BTreeSet<String> {
    let section = doc
        .split("\n## Long functions, and why\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap_or_default();
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|quoted| quoted.rsplit("::").next())
        .map(|name| name.trim_end_matches("()").to_string())
        .collect()
}

/// The functions under the workspace's `crates/` longer than [`SCREEN`].
pub fn long_functions(crates: &Path) -> Vec<Function> {
    let mut files = Vec::new();
    rust_files(crates, &mut files);
    let generated = Path::new(crate::codegen::GENERATED)
        .strip_prefix("crates")
        .ok();
    let mut long = Vec::new();
    for f in files {
        let rel = f.strip_prefix(crates).unwrap_or(&f);
        let skip = rel
            .components()
            .any(|c| c.as_os_str() == "tests" || c.as_os_str() == "target")
            || is_test_file(&f)
            || Some(rel) == generated;
        if skip {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let shown = rel.display().to_string();
        long.extend(
            functions(&shown, &text)
                .into_iter()
                .filter(|func| func.lines > SCREEN),
        );
    }
    long
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_over_a_screen_has_a_recorded_reason() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
        let reasons = recorded(&doc);
        assert!(reasons.contains("qx_quants"), "{reasons:?}");
        let unexplained: Vec<String> = long_functions(&root.join("crates"))
            .into_iter()
            .filter(|f| !reasons.contains(&f.name))
            .map(|f| format!("{} `{}`: {} lines", f.at, f.name, f.lines))
            .collect();
        assert!(
            unexplained.is_empty(),
            "functions longer than a screen ({SCREEN} lines): split them, or give the reason in \
             docs/architecture.md's \"Long functions, and why\":\n{}",
            unexplained.join("\n")
        );
    }

    #[test]
    fn functions_are_measured_from_signature_to_closing_brace() {
        let text = "pub fn a() {\n    1;\n}\n\nimpl X {\n    pub(crate) async fn b(\n        x: u8,\n    ) -> u8 {\n        x\n    }\n    fn decl(&self);\n}\n#[cfg(test)]\nmod tests {\n    fn c() {\n    }\n}\n";
        let found = functions("f.rs", text);
        let got: Vec<(&str, usize)> = found.iter().map(|f| (f.name.as_str(), f.lines)).collect();
        assert_eq!(got, vec![("a", 3), ("b", 5)]);
        assert_eq!(found[1].at, "f.rs:6");
    }

    #[test]
    fn reasons_are_read_from_their_section_only() {
        let doc = "# t\n\n## Long functions, and why\n\n- `exec::resize` and `to_markdown()`: why.\n\n## Next\n\n`other`\n";
        let r = recorded(doc);
        assert!(r.contains("resize") && r.contains("to_markdown"), "{r:?}");
        assert!(!r.contains("other"));
    }
}
