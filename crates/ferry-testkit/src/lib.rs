//! Test support shared by ferry's crates (dev-dependency only).
//!
//! Cross-tool tests need a Python with the real peers (torch, numpy, gguf-py) and the real
//! all-MiniLM-L6-v2 model. Locally they are skipped with a note when those are absent; CI sets
//! `FERRY_REQUIRE_PYTHON=1`, which turns a missing peer into a failure, so they always run there.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A file under `fixtures/` (committed; see `fixtures/README.md`).
pub fn fixture(rel: &str) -> PathBuf {
    let p = repo_root().join("fixtures").join(rel);
    assert!(
        p.exists(),
        "fixture {} is missing: run scripts/make_fixtures.py",
        p.display()
    );
    p
}

fn required() -> bool {
    std::env::var_os("FERRY_REQUIRE_PYTHON").is_some_and(|v| v == "1")
}

fn skip(what: &str) {
    assert!(!required(), "FERRY_REQUIRE_PYTHON=1 but {what}");
    eprintln!("skipped: {what} (run scripts/setup-python.sh, or set FERRY_PYTHON)");
}

/// A Python that can `import modules` (comma-separated, e.g. `"torch"` or `"gguf, numpy"`):
/// `$FERRY_PYTHON`, else the workspace's `.venv/bin/python`, else `python3`.
pub fn python_with(modules: &str) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("FERRY_PYTHON") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            repo_root().join(".venv/bin/python"),
            PathBuf::from("python3"),
        ],
    };
    let found = candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", &format!("import {modules}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        skip(&format!("no python with `{modules}`"));
    }
    found
}

/// A Python with llama.cpp itself (`llama_cpp`, from `scripts/setup-llama-cpp.sh`) and numpy:
/// `$FERRY_LLAMA_CPP_PYTHON`, else `target/llama-venv/bin/python`.
pub fn llama_cpp_python() -> Option<PathBuf> {
    let py = std::env::var_os("FERRY_LLAMA_CPP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/llama-venv/bin/python"));
    let ok = Command::new(&py)
        .args(["-c", "import llama_cpp, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(&format!(
            "no llama.cpp at {} (run scripts/setup-llama-cpp.sh)",
            py.display()
        ));
    }
    ok.then_some(py)
}

/// The real all-MiniLM-L6-v2 folder (safetensors + config + tokenizer): `$FERRY_MINILM`, else
/// `target/models/all-MiniLM-L6-v2` (where `scripts/fetch_minilm.py` puts it).
pub fn minilm() -> Option<PathBuf> {
    model_folder(
        "FERRY_MINILM",
        "all-MiniLM-L6-v2",
        "scripts/fetch_minilm.py",
    )
}

/// The SmolLM2-135M folder (f32 safetensors + config + tokenizer): `$FERRY_SMOLLM2`, else
/// `target/models/SmolLM2-135M` (where `scripts/make_smollm2.py` puts it).
pub fn smollm2() -> Option<PathBuf> {
    model_folder("FERRY_SMOLLM2", "SmolLM2-135M", "scripts/make_smollm2.py")
}

/// A real model folder: `$env`, else `target/models/{name}`; skipped (or, in CI, failed) with
/// the script that makes it when it has no `model.safetensors`.
fn model_folder(env: &str, name: &str, script: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/models").join(name));
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        skip(&format!(
            "{name} is not at {} (run {script})",
            dir.display()
        ));
        None
    }
}

/// Runs `py -c script args...`; panics with Python's stderr unless it succeeds; returns stdout.
pub fn run_python(py: &Path, script: &str, args: &[&Path]) -> String {
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", py.display()));
    assert!(
        out.status.success(),
        "python failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python printed UTF-8")
}

/// Lower-case hex of `bytes`, as Python's `bytes.hex()` writes it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
