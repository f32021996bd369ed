//! Atomic output: every file is written to a temporary file beside its target, synced, then
//! renamed into place, so an interrupted run never leaves a half-written model.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `path` atomically: `fill` writes the content into a buffered temporary file in the
/// same folder; on success the file is flushed, synced and renamed over `path`. On any error
/// (or a panic, or a kill) the temporary file is removed and `path` is left as it was.
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{}: not a file path", path.display())))?
        .to_string_lossy();
    let prefix = format!(".{file_name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".ferry-tmp");
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
