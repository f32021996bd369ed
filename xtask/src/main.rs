//! `cargo xtask <command> [args...]`: builds the `ferry` binary in release mode (numerical
//! code is far too slow in debug builds) and runs it with the given arguments.
//!
//! `cargo xtask migrate` therefore runs `ferry migrate` on the built-in demo model. Every other
//! ferry subcommand works the same way: `cargo xtask inspect model.pth`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args[0] == "--help" || args[0] == "-h" {
        eprintln!("usage: cargo xtask <ferry command> [args...]\n\nBuilds ferry in release mode, then runs it. Try `cargo xtask migrate` or `cargo xtask --help`.\nferry's own help: `cargo xtask help`.");
        return if args.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--quiet",
            "--package",
            "ferry-cli",
            "--bin",
            "ferry",
        ])
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("xtask: building ferry failed ({s})");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("xtask: could not run {cargo}: {e}");
            return ExitCode::from(2);
        }
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let exe = target_dir
        .join("release")
        .join(format!("ferry{}", std::env::consts::EXE_SUFFIX));
    match Command::new(&exe).args(&args).status() {
        Ok(s) => ExitCode::from(s.code().unwrap_or(2).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("xtask: could not run {}: {e}", exe.display());
            ExitCode::from(2)
        }
    }
}
