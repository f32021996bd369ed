//! `cargo xtask <task>`: the repository's own tasks, and a release build of ferry.
//!
//! - `cargo xtask ci [--here]`: what CI does (`.ci/run` on a fresh clone of HEAD).
//! - `cargo xtask codegen [--check]`: the ONNX protobuf code (scripts/onnx-proto-gen).
//! - `cargo xtask fixtures [--check]`: the scripts that made the committed fixtures.
//! - `cargo xtask bench [--peer]`: the criterion benches and the Python side-by-side scripts.
//! - Its tests check the module map: no module imports one that imports it back (`layers`).
//!
//! Any other first word is a ferry command: xtask builds the `ferry` binary in release mode
//! (numerical code is far too slow in debug builds) and runs it with the given arguments, so
//! `cargo xtask migrate` runs `ferry migrate` on the built-in demo model, and
//! `cargo xtask inspect model.pth` runs `ferry inspect model.pth`. With `FERRY_BIN=PATH` it runs
//! that binary instead of building one (CI: the debug binary its test step built).

mod bench;
mod ci;
mod cli;
mod codegen;
mod fixtures;
#[cfg(test)]
mod layers;
#[cfg(test)]
mod lengths;
mod util;

use std::process::{Command, ExitCode};

use cli::{Task, Topic};

/// `cargo` arguments that build the ferry binary `cargo xtask <ferry command>` runs.
pub const FERRY_BUILD: [&str; 7] = [
    "build",
    "--release",
    "--quiet",
    "--package",
    "ferry-cli",
    "--bin",
    "ferry",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = match cli::parse(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("xtask: {e}");
            return ExitCode::from(2);
        }
    };
    let root = util::root();
    let result = match task {
        Task::Usage => {
            eprint!("{}", cli::USAGE);
            Ok(2)
        }
        Task::Help(topic) => {
            print!(
                "{}",
                match topic {
                    Topic::Main => cli::USAGE,
                    Topic::Ci => cli::CI_HELP,
                    Topic::Codegen => cli::CODEGEN_HELP,
                    Topic::Fixtures => cli::FIXTURES_HELP,
                    Topic::Bench => cli::BENCH_HELP,
                }
            );
            Ok(0)
        }
        Task::Ci(a) => ci::run(&root, &a),
        Task::Codegen { check } => codegen::run(&root, check),
        Task::Fixtures(a) => fixtures::run(&root, &a),
        Task::Bench(a) => bench::run(&root, &a),
        Task::Ferry(args) => ferry(&root, &args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::from(2)
        }
    }
}

/// `$FERRY_BIN`: a ferry binary to run instead of building one. CI sets it to the binary its
/// test step built, so the README's commands it runs after the tests rebuild nothing (a
/// release build is minutes of CI's budget on 2 cores).
const FERRY_BIN: &str = "FERRY_BIN";

/// Builds ferry in release mode (or takes `$FERRY_BIN`) and runs `ferry <args>`; its exit
/// status.
fn ferry(root: &std::path::Path, args: &[String]) -> Result<u8, String> {
    let exe = match std::env::var_os(FERRY_BIN) {
        Some(given) => given_ferry(given.into())?,
        None => build_ferry(root)?,
    };
    let status = Command::new(&exe)
        .args(args)
        .status()
        .map_err(|e| format!("could not run {}: {e}", exe.display()))?;
    Ok(status.code().unwrap_or(2).clamp(0, 255) as u8)
}

/// The binary `$FERRY_BIN` names, or an error saying how to do without it when it is not a file.
fn given_ferry(exe: std::path::PathBuf) -> Result<std::path::PathBuf, String> {
    if exe.is_file() {
        return Ok(exe);
    }
    Err(format!(
        "{FERRY_BIN}={} is not a file: build ferry first, or unset {FERRY_BIN} to build it in \
         release mode",
        exe.display()
    ))
}

/// Builds the release ferry binary; its path.
fn build_ferry(root: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let cargo = util::cargo();
    let program = cargo.get_program().to_string_lossy().into_owned();
    let status = util::cargo()
        .current_dir(root)
        .args(FERRY_BUILD)
        .status()
        .map_err(|e| format!("could not run {program}: {e}"))?;
    if !status.success() {
        return Err(format!("building ferry failed ({status})"));
    }
    Ok(util::target_dir(root)
        .join("release")
        .join(format!("ferry{}", std::env::consts::EXE_SUFFIX)))
}

#[cfg(test)]
mod tests {
    use super::given_ferry;

    #[test]
    fn ferry_bin_must_name_a_file() {
        let dir = std::env::temp_dir().join(format!("ferry-xtask-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("ferry");
        // A missing path and a folder are refused, naming the variable and the way out.
        for bad in [exe.clone(), dir.clone()] {
            let err = given_ferry(bad.clone()).unwrap_err();
            assert!(err.starts_with(&format!("FERRY_BIN={} is not a file", bad.display())));
            assert!(err.contains("unset FERRY_BIN"), "{err}");
        }
        std::fs::write(&exe, b"").unwrap();
        assert_eq!(given_ferry(exe.clone()).unwrap(), exe);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
