//! Moses-style corpora: one file per split and language (`train.de`, `train.en`, the Multi30k
//! layout), line i of each file aligned with line i of the others.

use std::path::{Path, PathBuf};

use super::lang_files::LangFiles;
use super::lines::Lines;
use super::{Raw, Source};
use crate::error::{Error, Result};
use crate::issues::{Issue, IssueKind};
use crate::lang::{check_label, is_valid_code};
use crate::record::{Record, Target};

/// The languages that have a `{split}.{lang}` (or `.gz`) file in `dir`, sorted. Any label
/// without a dot is a language here (`train.ell_monotonic`); whether it is a language code is
/// the reader's question (a warning, or a dropped record in strict mode).
pub fn languages(dir: &Path, split: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let name_nogz = name.strip_suffix(".gz").unwrap_or(&name);
        if let Some(lang) = name_nogz.strip_prefix(&format!("{split}.")) {
            if !lang.contains('.') && check_label(lang).is_ok() && entry.path().is_file() {
                out.push((lang.to_string(), entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `dir` looks like a Moses corpus: files named `{split}.{lang}`, at least one with a
/// language code for `lang` (so that a folder of `notes.txt`-like files is not taken for one).
pub fn looks_like(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let name = name.strip_suffix(".gz").unwrap_or(&name).to_string();
            e.path().is_file()
                && name
                    .rsplit_once('.')
                    .is_some_and(|(stem, lang)| !stem.is_empty() && is_valid_code(lang))
        })
}

/// Every line of every `{split}.{lang}` file of `dir` as a monolingual record of that
/// language (blank lines are empty records, counted by the reader).
pub fn monolingual(dir: &Path, split: &str) -> Result<LangFiles> {
    let files = languages(dir, split)?;
    if files.is_empty() {
        return Err(Error::malformed(
            dir,
            format!("no {split}.<lang> files (Moses layout, e.g. {split}.en, {split}.de)"),
        ));
    }
    Ok(LangFiles::new(files, false))
}

/// Aligned line pairs of `{split}.{src}` and `{split}.{tgt}`.
pub struct Parallel {
    src_lang: String,
    tgt_lang: String,
    src: Lines,
    tgt: Lines,
}

impl Parallel {
    /// Opens the `src`-`tgt` pair of split `split` in `dir`.
    pub fn open(dir: &Path, split: &str, src: &str, tgt: &str) -> Result<Self> {
        let langs = languages(dir, split)?;
        let find = |l: &str| {
            langs
                .iter()
                .find(|(lang, _)| lang == l)
                .map(|(_, p)| p.clone())
                .ok_or_else(|| {
                    let have: Vec<&str> = langs.iter().map(|(l, _)| l.as_str()).collect();
                    Error::malformed(
                        dir,
                        format!("no {split}.{l} file; this split has languages {have:?}"),
                    )
                })
        };
        Ok(Parallel {
            src_lang: src.to_string(),
            tgt_lang: tgt.to_string(),
            src: Lines::open(&find(src)?)?,
            tgt: Lines::open(&find(tgt)?)?,
        })
    }
}

impl Source for Parallel {
    fn next_raw(&mut self) -> Result<Option<Raw>> {
        let (a, b) = (self.src.next_line()?, self.tgt.next_line()?);
        let (a, b) = match (a, b) {
            (None, None) => return Ok(None),
            (Some(a), Some(b)) => (a, b),
            (a, _) => {
                let (short, long) = if a.is_none() {
                    (&self.src, &self.tgt)
                } else {
                    (&self.tgt, &self.src)
                };
                return Err(Error::malformed(
                    &**short.file(),
                    format!(
                        "ends before {}: the two sides of a parallel corpus must have the same \
                         number of lines",
                        long.file().display()
                    ),
                ));
            }
        };
        Ok(Some(match (a, b) {
            (Err(issue), _) | (_, Err(issue)) => Raw::Bad(issue),
            (Ok((n, src)), Ok((_, tgt))) => {
                if tgt.trim().is_empty() {
                    Raw::Bad(Issue {
                        loc: self.tgt.loc(n),
                        kind: IssueKind::EmptyText,
                        detail: "empty target line (its source line is skipped too)".into(),
                    })
                } else {
                    Raw::Record(Record {
                        text: src,
                        lang: self.src_lang.clone(),
                        label: None,
                        target: Some(Target {
                            text: tgt,
                            lang: self.tgt_lang.clone(),
                        }),
                        loc: self.src.loc(n),
                    })
                }
            }
        }))
    }
}
