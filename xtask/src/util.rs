//! Paths and processes shared by the tasks.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// The repository root (xtask's parent folder).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Cargo's target folder: `$CARGO_TARGET_DIR`, else `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The cargo that runs xtask (`$CARGO`), else `cargo` from PATH.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `.venv/bin/python`, or an error that says how to make it.
pub fn venv_python(root: &Path) -> Result<PathBuf, String> {
    let py = root.join(".venv/bin/python");
    if py.is_file() {
        Ok(py)
    } else {
        Err(format!(
            "{} is missing: run `bash scripts/setup-python.sh` first (creates .venv with the \
             pinned Python packages, about 3 GB of downloads)",
            py.display()
        ))
    }
}

/// `path` relative to `root` where it lies inside it (what the printed commands show).
pub fn rel<'a>(root: &Path, path: &'a Path) -> &'a Path {
    path.strip_prefix(root).unwrap_or(path)
}

/// A shell-like line for `cmd`: the variables it sets, the program, the arguments (quoted
/// where a shell would need it), and the folder it runs in when that is not `root`.
pub fn show(cmd: &Command, root: &Path) -> String {
    let mut words: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v))))
        .collect();
    let program = cmd.get_program();
    if std::env::var_os("CARGO").as_deref() == Some(program) {
        words.push("cargo".into()); // the cargo running xtask, by its full path
    } else {
        words.push(quote(rel(root, Path::new(program)).as_os_str()));
    }
    words.extend(cmd.get_args().map(quote));
    let mut line = words.join(" ");
    if let Some(dir) = cmd.get_current_dir() {
        if dir != root {
            line = format!("(cd {} && {line})", quote(dir.as_os_str()));
        }
    }
    line
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Prints `cmd` (`$ ...` on stderr) and runs it with the terminal's stdin/stdout/stderr;
/// with `dry_run`, only prints it and reports success.
pub fn run(cmd: &mut Command, root: &Path, dry_run: bool) -> Result<Status, String> {
    eprintln!("$ {}", show(cmd, root));
    if dry_run {
        return Ok(Status::DryRun);
    }
    cmd.status()
        .map(Status::Ran)
        .map_err(|e| format!("could not run {}: {e}", cmd.get_program().to_string_lossy()))
}

/// What [`run`] did.
#[derive(Debug, Clone, Copy)]
pub enum Status {
    Ran(ExitStatus),
    DryRun,
}

impl Status {
    pub fn success(self) -> bool {
        match self {
            Status::Ran(s) => s.success(),
            Status::DryRun => true,
        }
    }

    /// The process's exit status as this process's (128 + N for a signal, as shells do).
    pub fn code(self) -> u8 {
        match self {
            Status::Ran(s) => exit_code(s),
            Status::DryRun => 0,
        }
    }
}

pub fn exit_code(s: ExitStatus) -> u8 {
    if let Some(c) = s.code() {
        return c.clamp(0, 255) as u8;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = s.signal() {
            return (128 + sig).clamp(0, 255) as u8;
        }
    }
    1
}

/// Runs `cmd` with its output captured; its stdout, trimmed, or an error with its stderr.
pub fn output(cmd: &mut Command) -> Result<String, String> {
    let what = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .map_err(|e| format!("could not run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether `program` is an executable file on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_print_as_a_shell_would_take_them() {
        let root = Path::new("/repo");
        let mut c = Command::new("/repo/.venv/bin/python");
        c.args([
            "scripts/bench_graph_peer.py",
            "--ferry-args",
            "--runs 2",
            "it's",
        ]);
        c.current_dir(root);
        assert_eq!(
            show(&c, root),
            r".venv/bin/python scripts/bench_graph_peer.py --ferry-args '--runs 2' 'it'\''s'"
        );
        let mut c = Command::new("/tmp/x/repo/.ci/run");
        c.env("CI", "true").current_dir("/tmp/x/repo");
        assert_eq!(
            show(&c, root),
            "(cd /tmp/x/repo && CI=true /tmp/x/repo/.ci/run)"
        );
    }
}
