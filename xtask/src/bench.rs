//! `cargo xtask bench [--peer | --peer-only] [NAME]`: the criterion benches of `benches/` and
//! the Python side-by-side scripts (`scripts/bench_*peer.py`), each against the release binary
//! it times.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::BenchArgs;
use crate::util;

/// The criterion benches (`benches/benches/<name>.rs`).
pub const CRITERION: &[&str] = &["convert", "train", "graph"];

/// A release binary a side-by-side script times.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Bin {
    /// `ferry` (ferry-cli).
    Ferry,
    /// A binary of ferry-benches.
    Bench(&'static str),
}

/// One side-by-side script.
pub struct Peer {
    pub name: &'static str,
    pub script: &'static str,
    /// The script's options that name a binary, and the binary.
    pub bins: &'static [(&'static str, Bin)],
}

pub const PEERS: &[Peer] = &[
    Peer {
        name: "convert",
        script: "bench_peer.py",
        bins: &[("--ferry", Bin::Ferry)],
    },
    Peer {
        name: "data",
        script: "bench_data_peer.py",
        bins: &[("--ferry", Bin::Ferry)],
    },
    Peer {
        name: "graph",
        script: "bench_graph_peer.py",
        bins: &[("--ferry", Bin::Bench("graph_bench"))],
    },
    Peer {
        name: "train",
        script: "bench_train_peer.py",
        bins: &[("--ferry", Bin::Bench("train_throughput"))],
    },
    Peer {
        name: "runtime",
        script: "bench_runtime_peer.py",
        bins: &[
            ("--ferry", Bin::Ferry),
            ("--bench", Bin::Bench("runtime_bench")),
        ],
    },
];

pub fn peer(name: &str) -> Option<&'static Peer> {
    PEERS.iter().find(|p| p.name == name)
}

pub fn peer_names() -> Vec<&'static str> {
    PEERS.iter().map(|p| p.name).collect()
}

pub fn run(root: &Path, a: &BenchArgs) -> Result<u8, String> {
    let name = a.name.as_deref();
    if !a.peer_only && name.is_none_or(|n| CRITERION.contains(&n)) {
        let status = util::run(&mut criterion(root, name, &a.extra), root, a.dry_run)?;
        if !status.success() {
            return Ok(status.code());
        }
    }
    if !(a.peer || a.peer_only) {
        return Ok(0);
    }
    let peers: Vec<&Peer> = PEERS
        .iter()
        .filter(|p| name.is_none_or(|n| n == p.name))
        .collect();
    let python = if a.dry_run {
        root.join(".venv/bin/python")
    } else {
        util::venv_python(root)?
    };
    let release = util::target_dir(root).join("release");
    for mut cmd in builds(root, &peers) {
        let status = util::run(&mut cmd, root, a.dry_run)?;
        if !status.success() {
            return Ok(status.code());
        }
    }
    let mut failed = 0;
    for p in peers {
        let mut cmd = peer_command(root, &python, &release, p, &a.extra);
        let status = util::run(&mut cmd, root, a.dry_run)?;
        if !status.success() {
            eprintln!(
                "xtask: scripts/{} failed (exit status {})",
                p.script,
                status.code()
            );
            failed = status.code();
        }
    }
    Ok(failed)
}

/// `cargo bench -p ferry-benches --bench NAME...` (the bench targets only: the library's and the
/// binaries' test harnesses would reject criterion's options).
fn criterion(root: &Path, name: Option<&str>, extra: &[String]) -> Command {
    let mut cmd = util::cargo();
    cmd.current_dir(root).args(["bench", "-p", "ferry-benches"]);
    for b in CRITERION.iter().filter(|b| name.is_none_or(|n| n == **b)) {
        cmd.args(["--bench", b]);
    }
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    cmd
}

/// The release builds of the binaries `peers` time: ferry as `cargo xtask <ferry command>`
/// builds it (the same features, so nothing is rebuilt), ferry-benches' binaries in one go.
fn builds(root: &Path, peers: &[&Peer]) -> Vec<Command> {
    let bins: Vec<Bin> = peers
        .iter()
        .flat_map(|p| p.bins.iter().map(|(_, b)| *b))
        .collect();
    let mut cmds = Vec::new();
    if bins.contains(&Bin::Ferry) {
        let mut cmd = util::cargo();
        cmd.current_dir(root).args(crate::FERRY_BUILD);
        cmds.push(cmd);
    }
    let mut bench_bins: Vec<&str> = Vec::new();
    for b in &bins {
        if let Bin::Bench(n) = b {
            if !bench_bins.contains(n) {
                bench_bins.push(n);
            }
        }
    }
    if !bench_bins.is_empty() {
        let mut cmd = util::cargo();
        cmd.current_dir(root)
            .args(["build", "--release", "--package", "ferry-benches"]);
        for b in bench_bins {
            cmd.args(["--bin", b]);
        }
        cmds.push(cmd);
    }
    cmds
}

fn peer_command(root: &Path, python: &Path, release: &Path, p: &Peer, extra: &[String]) -> Command {
    let mut cmd = Command::new(python);
    cmd.current_dir(root).arg(format!("scripts/{}", p.script));
    for (opt, bin) in p.bins {
        let exe: PathBuf = release.join(match bin {
            Bin::Ferry => "ferry",
            Bin::Bench(n) => n,
        });
        cmd.arg(opt).arg(util::rel(root, &exe));
    }
    cmd.args(extra);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(cmd: &Command) -> String {
        util::show(cmd, Path::new("/repo"))
    }

    #[test]
    fn criterion_runs_the_bench_targets_only() {
        let root = Path::new("/repo");
        let c = criterion(root, None, &[]);
        assert!(line(&c)
            .ends_with("bench -p ferry-benches --bench convert --bench train --bench graph"));
        let c = criterion(root, Some("graph"), &["--quick".into()]);
        assert!(line(&c).ends_with("bench -p ferry-benches --bench graph -- --quick"));
    }

    #[test]
    fn peers_get_the_binaries_they_time() {
        let root = Path::new("/repo");
        let release = root.join("target/release");
        let py = root.join(".venv/bin/python");
        let c = peer_command(
            root,
            &py,
            &release,
            peer("runtime").unwrap(),
            &["--repeat".into(), "1".into()],
        );
        assert_eq!(
            line(&c),
            ".venv/bin/python scripts/bench_runtime_peer.py --ferry target/release/ferry \
             --bench target/release/runtime_bench --repeat 1"
        );
        let all: Vec<&Peer> = PEERS.iter().collect();
        let b: Vec<String> = builds(root, &all).iter().map(line).collect();
        assert_eq!(b.len(), 2);
        assert!(
            b[0].ends_with("build --release --quiet --package ferry-cli --bin ferry"),
            "{}",
            b[0]
        );
        assert!(
            b[1].ends_with(
                "build --release --package ferry-benches --bin graph_bench \
                 --bin train_throughput --bin runtime_bench"
            ),
            "{}",
            b[1]
        );
        assert_eq!(builds(root, &[peer("graph").unwrap()]).len(), 1);
    }

    #[test]
    fn every_peer_script_and_bench_exists() {
        let root = util::root();
        for p in PEERS {
            assert!(
                root.join("scripts").join(p.script).is_file(),
                "{}",
                p.script
            );
        }
        for b in CRITERION {
            assert!(
                root.join(format!("benches/benches/{b}.rs")).is_file(),
                "{b}"
            );
        }
        let manifest = std::fs::read_to_string(root.join("benches/Cargo.toml")).unwrap();
        for p in PEERS {
            for (_, bin) in p.bins {
                if let Bin::Bench(n) = bin {
                    assert!(manifest.contains(&format!("name = \"{n}\"")), "{n}");
                }
            }
        }
    }
}
