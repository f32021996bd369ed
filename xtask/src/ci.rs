//! `cargo xtask ci`: `.ci/run`, the one list of CI's steps, on a fresh clone of HEAD (what CI
//! runs on) or, with `--here`, in the working tree.
//!
//! The clone lives in `$TMPDIR/ferry-xtask-ci-<pid>/repo` and is removed when the run ends,
//! passed or failed (a guard's `Drop`). A run killed before it could clean up leaves its folder;
//! the next run removes every such folder whose process is gone (a leftover 15 GB clone once
//! filled the disk). `--keep` marks the folder to be kept.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::CiArgs;
use crate::util::{self, Status};

const PREFIX: &str = "ferry-xtask-ci-";
/// In a clone's folder (beside `repo/`): keep it (`--keep`).
const KEEP: &str = "keep";

pub fn run(root: &Path, a: &CiArgs) -> Result<u8, String> {
    if a.here {
        return Ok(ci_run(root, root, a.dry_run)?.code());
    }
    let head = util::output(
        Command::new("git")
            .current_dir(root)
            .args(["rev-parse", "HEAD"]),
    )?;
    let changed = util::output(
        Command::new("git")
            .current_dir(root)
            .args(["status", "--porcelain"]),
    )?;
    if !changed.is_empty() {
        eprintln!(
            "xtask: note: {} changed or untracked file(s) in the working tree are not in the \
             clone, which runs HEAD ({}); commit them or use `cargo xtask ci --here`",
            changed.lines().count(),
            &head[..head.len().min(12)]
        );
    }
    let tmp = std::env::temp_dir();
    if !a.dry_run {
        remove_stale(&tmp);
    }
    let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
    let clone = Clone::new(dir, a.keep, a.dry_run)?;
    let repo = clone.dir.join("repo");
    let mut clone_head = Command::new("git");
    clone_head.args(["clone", "-q"]).arg(root).arg(&repo);
    let mut checkout = Command::new("git");
    checkout
        .arg("-C")
        .arg(&repo)
        .args(["checkout", "-q", "--detach", &head]);
    for mut cmd in [clone_head, checkout] {
        let status = util::run(&mut cmd, root, a.dry_run)?;
        if !status.success() {
            return Err(format!("git failed (exit status {})", status.code()));
        }
    }
    let status = ci_run(root, &repo, a.dry_run)?;
    drop(clone);
    Ok(status.code())
}

/// `CI=true .ci/run` in `repo`, with the variables `cargo run` set for xtask itself removed
/// (CI has none of them).
fn ci_run(root: &Path, repo: &Path, dry_run: bool) -> Result<Status, String> {
    let mut cmd = Command::new(repo.join(".ci/run"));
    cmd.current_dir(repo).env("CI", "true");
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&k.as_ref())
        {
            cmd.env_remove(&key);
        }
    }
    if std::env::var_os("CARGO_TARGET_DIR").is_some() {
        // .ci/run reads target/release/ferry and writes target/...: CI's layout.
        eprintln!("xtask: CARGO_TARGET_DIR is set; .ci/run runs without it (it uses target/)");
        cmd.env_remove("CARGO_TARGET_DIR");
    }
    let status = util::run(&mut cmd, root, dry_run)?;
    if !status.success() {
        eprintln!("xtask: .ci/run failed (exit status {})", status.code());
    }
    Ok(status)
}

/// The clone's folder, removed on drop unless kept.
struct Clone {
    dir: PathBuf,
    keep: bool,
    dry_run: bool,
}

impl Clone {
    fn new(dir: PathBuf, keep: bool, dry_run: bool) -> Result<Clone, String> {
        if !dry_run {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| format!("could not remove {}: {e}", dir.display()))?;
            }
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
            if keep {
                std::fs::write(dir.join(KEEP), "kept by `cargo xtask ci --keep`\n")
                    .map_err(|e| format!("could not write {}: {e}", dir.display()))?;
            }
        }
        Ok(Clone { dir, keep, dry_run })
    }
}

impl Drop for Clone {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("xtask: kept the clone: {}", self.dir.join("repo").display());
        } else if self.dry_run {
            eprintln!("$ rm -rf {}", self.dir.display());
        } else {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => eprintln!("xtask: removed the clone {}", self.dir.display()),
                Err(e) => eprintln!(
                    "xtask: could not remove the clone {}: {e}; remove it by hand",
                    self.dir.display()
                ),
            }
        }
    }
}

/// Removes the clones in `tmp` left by runs whose process is gone (Linux: no `/proc/<pid>`),
/// except those kept with `--keep`.
fn remove_stale(tmp: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = stale_pid(&name.to_string_lossy()) else {
            continue;
        };
        let dir = entry.path();
        if pid == std::process::id()
            || Path::new(&format!("/proc/{pid}")).exists()
            || dir.join(KEEP).exists()
        {
            continue;
        }
        eprintln!(
            "xtask: removing {}, left by an earlier `cargo xtask ci` (process {pid} is gone)",
            dir.display()
        );
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("xtask: could not remove {}: {e}", dir.display());
        }
    }
}

/// The process id in a clone folder's name `ferry-xtask-ci-<pid>`.
fn stale_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_folders_are_named_by_process() {
        assert_eq!(stale_pid("ferry-xtask-ci-1234"), Some(1234));
        assert_eq!(stale_pid("ferry-xtask-ci-"), None);
        assert_eq!(stale_pid("ferry-xtask-ci-12x"), None);
        assert_eq!(stale_pid("ferry-onnx-proto-gen"), None);
    }

    #[test]
    fn a_clone_is_removed_when_dropped_unless_kept() {
        let base = std::env::temp_dir().join(format!("xtask-test-{}", std::process::id()));
        let gone = base.join("a");
        let kept = base.join("b");
        {
            let c = Clone::new(gone.clone(), false, false).unwrap();
            std::fs::create_dir_all(c.dir.join("repo/target")).unwrap();
            let _k = Clone::new(kept.clone(), true, false).unwrap();
        }
        assert!(!gone.exists());
        assert!(kept.join(KEEP).is_file());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn stale_clones_are_removed_and_live_or_kept_ones_left() {
        let tmp = std::env::temp_dir().join(format!("xtask-test-stale-{}", std::process::id()));
        // A process id no process has (above the kernel's pid_max limit of 2^22).
        let dead = tmp.join(format!("{PREFIX}{}", (1u32 << 22) + 7));
        let dead_kept = tmp.join(format!("{PREFIX}{}", (1u32 << 22) + 8));
        let live = tmp.join(format!("{PREFIX}{}", std::process::id()));
        let other = tmp.join("unrelated-4194311");
        for d in [&dead, &dead_kept, &live, &other] {
            std::fs::create_dir_all(d.join("repo")).unwrap();
        }
        std::fs::write(dead_kept.join(KEEP), "").unwrap();
        remove_stale(&tmp);
        if Path::new("/proc/self").exists() {
            assert!(!dead.exists());
        }
        assert!(dead_kept.exists() && live.exists() && other.exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
