//! Atomic output: every file is written to a temporary file beside its target, synced, then
//! renamed into place, so an interrupted run never leaves a half-written model.
//!
//! Temporary files and staging folders carry the writing process's id in their names
//! (`.model.safetensors.4242-Xa9f3Q.ferry-tmp`, `.model.4242-Xa9f3Q.ferry-staging/`). An error
//! or a panic removes them at once; a kill cannot, so every write first removes the ones in
//! its folder whose process is gone ([`clean_stale`]) and records them for the caller to
//! report ([`take_removed_stale`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Suffix of a temporary file being written.
const TMP_SUFFIX: &str = ".ferry-tmp";
/// Suffix of a staging folder (sharded output being written).
const STAGING_SUFFIX: &str = ".ferry-staging";

/// Stale temporaries removed by this process, with their sizes, until the caller takes them.
static REMOVED: Mutex<Vec<(PathBuf, u64)>> = Mutex::new(Vec::new());

/// The stale temporary files and staging folders (left by killed ferry processes) removed
/// since the last call, with the bytes each held; for commands to report.
pub fn take_removed_stale() -> Vec<(PathBuf, u64)> {
    REMOVED
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

/// The prefix every temporary of this process gets after the target's name: `.NAME.PID-`.
pub(crate) fn owned_prefix(name: &str) -> String {
    format!(".{name}.{}-", std::process::id())
}

/// The process id recorded in a temporary's or staging folder's name, if it is one of ours.
fn owner(file_name: &str) -> Option<u32> {
    let stem = file_name
        .strip_suffix(TMP_SUFFIX)
        .or_else(|| file_name.strip_suffix(STAGING_SUFFIX))?;
    if !stem.starts_with('.') {
        return None;
    }
    // `.NAME.PID-RANDOM`: the pid sits between the last '.' and the '-' after it.
    let tail = &stem[stem.rfind('.')? + 1..];
    tail.split_once('-')?.0.parse().ok()
}

/// Whether a process with this id is running (or exists but is not ours to signal).
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists; nothing is delivered.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

fn size_of(p: &Path) -> u64 {
    if p.is_dir() {
        std::fs::read_dir(p)
            .map(|d| d.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0)
    } else {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }
}

/// Removes the temporary files and staging folders in `dir` whose writing process is gone
/// (killed mid-write), recording each for [`take_removed_stale`]. Errors are ignored: a
/// temporary that cannot be removed is left as it was.
pub fn clean_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = owner(&name.to_string_lossy()) else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        let p = e.path();
        let bytes = size_of(&p);
        let removed = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if removed.is_ok() {
            if let Ok(mut v) = REMOVED.lock() {
                v.push((p, bytes));
            }
        }
    }
}

/// The folder `path` is written in: its parent, or `.` for a bare file name.
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A staging folder in `dir` for output named `name` that is several files (a sharded
/// checkpoint, a sharded corpus): written in full, then moved into place. It is removed on
/// drop (an error, a panic); one left by a kill is removed by the next write in `dir`.
pub fn staging_folder(dir: &Path, name: &str) -> Result<tempfile::TempDir> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    clean_stale(dir);
    tempfile::Builder::new()
        .prefix(&owned_prefix(name))
        .suffix(STAGING_SUFFIX)
        .tempdir_in(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Writes `path` atomically: `fill` writes the content into a buffered temporary file in the
/// same folder; on success the file is flushed, synced and renamed over `path`. On any error
/// (or a panic, or a kill) the temporary file is removed and `path` is left as it was.
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{}: not a file path", path.display())))?
        .to_string_lossy();
    clean_stale(dir);
    let prefix = owned_prefix(&file_name);
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(TMP_SUFFIX);
    // A new output gets the mode any new file gets (0666 less the umask), not tempfile's 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    // A replaced file keeps its mode.
    if let Ok(old) = std::fs::metadata(path) {
        std::fs::set_permissions(tmp.path(), old.permissions())
            .map_err(|e| Error::io(tmp.path(), e))?;
    }
    let file = tmp.reopen().map_err(|e| Error::io(tmp.path(), e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    fill(&mut w)?;
    w.flush().map_err(|e| Error::io(tmp.path(), e))?;
    let file = w
        .into_inner()
        .map_err(|e| Error::io(tmp.path(), e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    drop(file);
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outputs honour the umask, and a replaced file keeps its mode (both were 0600).
    #[cfg(unix)]
    #[test]
    fn outputs_honour_the_umask_and_keep_a_replaced_files_mode() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        // What a plain new file gets under this process's umask.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let fresh = dir.path().join("new.safetensors");
        write_atomic(&fresh, |w| w.write_all(b"x").map_err(|e| Error::io("x", e))).unwrap();
        assert_eq!(mode(&fresh), mode(&plain));
        let old = dir.path().join("old.gguf");
        std::fs::write(&old, b"old").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&old, |w| w.write_all(b"new").map_err(|e| Error::io("x", e))).unwrap();
        assert_eq!(mode(&old), 0o640);
    }

    /// A temporary whose process is gone (a killed run) is removed by the next write into the
    /// folder and reported; one of a live process, and files that only look similar, stay.
    #[test]
    fn stale_temporaries_of_dead_processes_are_removed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that cannot be running: above the kernel's maximum.
        let dead = dir
            .path()
            .join(".model.safetensors.999999999-abc123.ferry-tmp");
        std::fs::write(&dead, vec![0u8; 1000]).unwrap();
        let staging = dir.path().join(".model.999999999-xyz.ferry-staging");
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("model-00001-of-00002.safetensors"), b"part").unwrap();
        let live = dir
            .path()
            .join(format!(".other.bin.{}-q.ferry-tmp", std::process::id()));
        std::fs::write(&live, b"x").unwrap();
        let unrelated = dir.path().join(".notes.999999999-a.txt");
        std::fs::write(&unrelated, b"x").unwrap();
        let _ = take_removed_stale();
        write_atomic(&dir.path().join("new.gguf"), |w| {
            w.write_all(b"ok").map_err(|e| Error::io("x", e))
        })
        .unwrap();
        assert!(!dead.exists() && !staging.exists());
        assert!(live.exists() && unrelated.exists());
        let mut removed = take_removed_stale();
        removed.sort();
        assert_eq!(removed, vec![(staging, 4), (dead, 1000)]);
        assert_eq!(owner(".m.safetensors.12-ab.ferry-tmp"), Some(12));
        assert_eq!(owner(".m.safetensors.abc.ferry-tmp"), None);
    }

    #[test]
    fn failure_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model.safetensors");
        std::fs::write(&target, b"old").unwrap();
        let r = write_atomic(&target, |w| {
            w.write_all(b"partial").unwrap();
            Err(Error::Invalid("boom".into()))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary file left behind");
        write_atomic(&target, |w| {
            w.write_all(b"new").map_err(|e| Error::io("x", e))
        })
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }
}
