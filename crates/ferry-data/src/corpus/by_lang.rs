//! A folder per language: `DIR/<lang>/*` text files (`.gz` too), one record per line.

use std::path::{Path, PathBuf};

use super::lines::Lines;
use super::{Raw, Source};
use crate::error::{Error, Result};
use crate::record::Record;

/// The files of a by-language folder, grouped and sorted.
pub struct ByLang {
    files: std::vec::IntoIter<(String, PathBuf)>,
    current: Option<(String, Lines)>,
}

impl ByLang {
    /// Opens `dir`, whose subfolders are named by language code.
    pub fn open(dir: &Path) -> Result<Self> {
        let mut files = Vec::new();
        for sub in sorted_entries(dir)? {
            if !sub.is_dir() {
                continue;
            }
            let lang = sub
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            for f in sorted_entries(&sub)? {
                let hidden = f
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if f.is_file() && !hidden {
                    files.push((lang.clone(), f));
                }
            }
        }
        if files.is_empty() {
            return Err(Error::format(
                dir,
                "no <lang>/<file> text files (a folder per language, e.g. en/part-0.txt)",
            ));
        }
        Ok(ByLang {
            files: files.into_iter(),
            current: None,
        })
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<Vec<_>>>()?;
    v.sort();
    Ok(v)
}

impl Source for ByLang {
    fn next_raw(&mut self) -> Result<Option<Raw>> {
        loop {
            if self.current.is_none() {
                match self.files.next() {
                    Some((lang, path)) => self.current = Some((lang, Lines::open(&path)?)),
                    None => return Ok(None),
                }
            }
            let (lang, lines) = self.current.as_mut().expect("set above");
            match lines.next_line()? {
                None => self.current = None,
                Some(Err(issue)) => return Ok(Some(Raw::Bad(issue))),
                Some(Ok((_, text))) if text.trim().is_empty() => continue,
                Some(Ok((n, text))) => {
                    return Ok(Some(Raw::Record(Record {
                        text,
                        lang: lang.clone(),
                        label: None,
                        target: None,
                        loc: lines.loc(n),
                    })))
                }
            }
        }
    }
}
