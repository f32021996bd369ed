//! Running the `ferry` binary from tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `ferry args...` in `cwd`.
pub fn ferry(args: &[&str], cwd: &Path) -> Output {
    ferry_env(args, cwd, &[])
}

/// Runs `ferry args...` in `cwd` with extra environment variables.
#[allow(dead_code)] // each test binary includes this module; not every one sets variables
pub fn ferry_env(args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ferry")
}

/// Asserts success and returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "ferry failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts success and parses stdout as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("valid JSON on stdout")
}
