//! A folder per language: `DIR/<lang>/*` text files (`.gz` too), one record per line.

use std::path::{Path, PathBuf};

use super::lang_files::LangFiles;
use crate::error::{Error, Result};

/// Opens `dir`, whose subfolders are named by language (any label: `en`, `ell_monotonic`):
/// every line of every file under `<lang>/` (sorted; blank lines skipped) is a record of that
/// language. Hidden folders and files (`.git`, `.DS_Store`) are not read.
pub fn open(dir: &Path) -> Result<LangFiles> {
    let files: Vec<(String, PathBuf)> = languages(dir)?
        .into_iter()
        .flat_map(|(lang, files)| files.into_iter().map(move |f| (lang.clone(), f)))
        .collect();
    if files.is_empty() {
        return Err(Error::malformed(
            dir,
            "no <lang>/<file> text files (a folder per language, e.g. en/part-0.txt)",
        ));
    }
    Ok(LangFiles::new(files, true))
}

/// The language folders of `dir` (sorted, hidden ones left out), each with its files (sorted,
/// hidden ones left out).
pub(crate) fn languages(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    for sub in sorted_entries(dir)? {
        if !sub.is_dir() || is_hidden(&sub) {
            continue;
        }
        let lang = sub
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let files = sorted_entries(&sub)?
            .into_iter()
            .filter(|f| f.is_file() && !is_hidden(f))
            .collect();
        out.push((lang, files));
    }
    Ok(out)
}

/// Whether `path` is hidden (`.git`, `.DS_Store`): not read as corpus.
pub(crate) fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// The entries of `dir`, sorted by path.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<Vec<_>>>()?;
    v.sort();
    Ok(v)
}
