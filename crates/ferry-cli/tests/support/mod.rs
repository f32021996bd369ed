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
#[allow(dead_code)] // not every test binary reads JSON through it
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("valid JSON on stdout")
}

/// `ferry train --config cfg --out out` stopped after step `stop_after` (`--stop-after`), then
/// continued with `--resume`: what an interrupted run does. Both must succeed.
#[allow(dead_code)] // used by the training tests only
pub fn train_interrupted_then_resumed(cfg: &Path, out: &Path, stop_after: u64, cwd: &Path) {
    let (cfg, out) = (cfg.to_str().unwrap(), out.to_str().unwrap());
    let stop = stop_after.to_string();
    ok(&ferry(
        &[
            "train",
            "--config",
            cfg,
            "--out",
            out,
            "--stop-after",
            &stop,
            "-q",
        ],
        cwd,
    ));
    ok(&ferry(
        &["train", "--config", cfg, "--out", out, "--resume", "-q"],
        cwd,
    ));
}
