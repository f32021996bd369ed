//! Corpus readers. [`open`] detects the layout from the content (gzip magic, Parquet magic,
//! JSON objects, tabs) and the folder structure, and returns a streaming [`CorpusReader`]
//! whose records all carry their language. Malformed records are counted in an
//! [`IssueLog`] (`OnError::Skip`) or stop the read with an error naming file:line
//! (`OnError::Fail`).
//!
//! Any short, printable language label is a class (`en`, `zh-Hans`, the UDHR's
//! `ell_monotonic`); one that is not a language code is kept with a warning in the log, or
//! dropped like a malformed record with [`CorpusOptions::strict_languages`].

pub(crate) mod by_lang;
mod delimited;
mod jsonl;
mod lang_files;
pub mod lines;
mod moses;
mod parquet;

use std::fmt;
use std::path::Path;

pub use lang_files::LineKind;
pub use moses::languages as moses_files;

use crate::error::{Error, Result};
use crate::issues::{Issue, IssueKind, IssueLog, OnError};
use crate::lang::{check_label, is_valid_code};
use crate::record::Record;

/// The corpus layouts ferry reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorpusFormat {
    /// Tab-separated values, no quoting.
    Tsv,
    /// Comma-separated values with RFC 4180 quoting.
    Csv,
    /// JSON Lines.
    Jsonl,
    /// Moses-style `{split}.{lang}` files in a folder.
    Moses,
    /// A folder per language.
    ByLang,
    /// Apache Parquet.
    Parquet,
}

impl fmt::Display for CorpusFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CorpusFormat::Tsv => "tsv",
            CorpusFormat::Csv => "csv",
            CorpusFormat::Jsonl => "jsonl",
            CorpusFormat::Moses => "moses",
            CorpusFormat::ByLang => "by-lang",
            CorpusFormat::Parquet => "parquet",
        })
    }
}

impl std::str::FromStr for CorpusFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "tsv" => CorpusFormat::Tsv,
            "csv" => CorpusFormat::Csv,
            "jsonl" | "json" => CorpusFormat::Jsonl,
            "moses" => CorpusFormat::Moses,
            "by-lang" | "by_lang" => CorpusFormat::ByLang,
            "parquet" => CorpusFormat::Parquet,
            _ => {
                return Err(format!(
                    "unknown corpus format {s:?}: use tsv, csv, jsonl, moses, by-lang or parquet"
                ))
            }
        })
    }
}

/// A column by header name or by 0-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// The column with this header name (or JSON/Parquet field name).
    Name(String),
    /// The column at this 0-based position.
    Index(usize),
}

impl std::str::FromStr for Column {
    type Err = std::convert::Infallible;
    /// A number is a position, anything else a name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(s.parse()
            .map(Column::Index)
            .unwrap_or_else(|_| Column::Name(s.to_string())))
    }
}

/// How to read a corpus. The defaults read columns/fields named `text`, `lang` and (when
/// present) `label`, detect the format, and skip malformed records while counting them.
#[derive(Debug, Clone)]
pub struct CorpusOptions {
    /// The layout; detected when `None`.
    pub format: Option<CorpusFormat>,
    /// The text column.
    pub text: Column,
    /// The language column (`None`: every record has `default_lang`).
    pub lang: Option<Column>,
    /// The label column, read when present.
    pub label: Option<Column>,
    /// Whether a missing label column is an error (it is when the user named one).
    pub label_required: bool,
    /// Whether delimited files have a header row; detected when `None` (a header is a first
    /// row holding one of the column names).
    pub header: Option<bool>,
    /// The language of records whose source gives none.
    pub default_lang: Option<String>,
    /// The split of a Moses corpus (`train`, `val`, `test`, ...).
    pub split: String,
    /// The (source, target) languages of a parallel Moses corpus; `None` reads every
    /// `{split}.{lang}` file as monolingual text.
    pub pair: Option<(String, String)>,
    /// What to do with malformed records.
    pub on_error: OnError,
    /// Drop records whose language label is not a language code (ISO 639 / BCP-47) as
    /// malformed ([`IssueKind::UnknownLang`]), instead of keeping them with a warning.
    pub strict_languages: bool,
}

impl Default for CorpusOptions {
    fn default() -> Self {
        CorpusOptions {
            format: None,
            text: Column::Name("text".into()),
            lang: Some(Column::Name("lang".into())),
            label: Some(Column::Name("label".into())),
            label_required: false,
            header: None,
            default_lang: None,
            split: "train".into(),
            pair: None,
            on_error: OnError::Skip,
            strict_languages: false,
        }
    }
}

/// What a source yields: a record, or a malformed line.
pub(crate) enum Raw {
    Record(Record),
    Bad(Issue),
}

/// A format reader.
pub(crate) trait Source: Send {
    /// The next record or malformed line; `None` at the end.
    fn next_raw(&mut self) -> Result<Option<Raw>>;
}

/// Detects the layout of `path`.
pub fn detect(path: &Path) -> Result<CorpusFormat> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        let has_subdirs = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .flatten()
            .any(|e| e.path().is_dir());
        return if moses::looks_like(path) {
            Ok(CorpusFormat::Moses)
        } else if has_subdirs {
            Ok(CorpusFormat::ByLang)
        } else {
            Err(Error::malformed(
                path,
                "a folder that is neither Moses-style ({split}.{lang} files) nor a folder per \
                 language (<lang>/<files>); pass --format",
            ))
        };
    }
    let head = lines::sniff(path, 64 * 1024)?;
    if head.starts_with(b"PAR1") {
        return Ok(CorpusFormat::Parquet);
    }
    let first = head
        .split(|&b| b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .unwrap_or(&[]);
    let trimmed: Vec<u8> = first
        .iter()
        .copied()
        .skip_while(u8::is_ascii_whitespace)
        .collect();
    if trimmed.first() == Some(&b'{') {
        return Ok(CorpusFormat::Jsonl);
    }
    if first.contains(&b'\t') {
        return Ok(CorpusFormat::Tsv);
    }
    let name = path.to_string_lossy();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".tsv") || name.ends_with(".txt") {
        Ok(CorpusFormat::Tsv)
    } else if first.contains(&b',') || name.ends_with(".csv") {
        Ok(CorpusFormat::Csv)
    } else {
        Err(Error::malformed(
            path,
            "cannot tell the corpus format from the content (no tabs, commas, JSON or Parquet \
             magic); pass --format",
        ))
    }
}

/// Opens a corpus for streaming.
pub fn open(path: impl AsRef<Path>, opts: &CorpusOptions) -> Result<CorpusReader> {
    let path = path.as_ref();
    let format = match opts.format {
        Some(f) => f,
        None => detect(path)?,
    };
    let source: Box<dyn Source> = match format {
        CorpusFormat::Tsv => Box::new(delimited::Tsv::open(path, opts)?),
        CorpusFormat::Csv => Box::new(delimited::Csv::open(path, opts)?),
        CorpusFormat::Jsonl => Box::new(jsonl::Jsonl::open(path, opts)?),
        CorpusFormat::Parquet => Box::new(parquet::Parquet::open(path, opts)?),
        CorpusFormat::ByLang => Box::new(by_lang::open(path)?),
        CorpusFormat::Moses => match &opts.pair {
            Some((s, t)) => Box::new(moses::Parallel::open(path, &opts.split, s, t)?),
            None => Box::new(moses::monolingual(path, &opts.split)?),
        },
    };
    Ok(CorpusReader {
        format,
        source,
        on_error: opts.on_error,
        strict_languages: opts.strict_languages,
        issues: IssueLog::default(),
        failed: false,
    })
}

/// A streaming corpus: an iterator of valid records. Malformed ones are counted in
/// [`CorpusReader::issues`] or, with [`OnError::Fail`], end the iteration with an error.
pub struct CorpusReader {
    format: CorpusFormat,
    source: Box<dyn Source>,
    on_error: OnError,
    strict_languages: bool,
    issues: IssueLog,
    failed: bool,
}

impl CorpusReader {
    /// The layout being read.
    pub fn format(&self) -> CorpusFormat {
        self.format
    }

    /// The records dropped, and kept with a warning, so far.
    pub fn issues(&self) -> &IssueLog {
        &self.issues
    }

    /// Reads everything, returning the records and the issue log.
    pub fn read_all(mut self) -> Result<(Vec<Record>, IssueLog)> {
        let mut v = Vec::new();
        for r in self.by_ref() {
            v.push(r?);
        }
        Ok((v, self.issues))
    }
}

/// A record from a source, checked.
enum Checked {
    /// A valid record.
    Valid(Record),
    /// A record kept with a warning (its language label is not a language code).
    Warned(Record, Issue),
    /// A record that is dropped (or, with [`OnError::Fail`], ends the read).
    Dropped(Issue),
}

/// Trims a language label and checks it: `Err` when it cannot name a class, `Ok(false)` when
/// it can but is not a language code.
fn check_lang(lang: &mut String) -> std::result::Result<bool, crate::lang::LabelError> {
    let trimmed = lang.trim();
    if trimmed.len() != lang.len() {
        *lang = trimmed.to_string();
    }
    check_label(lang)?;
    Ok(is_valid_code(lang))
}

/// Checks a record from a source: non-empty text and usable language labels (the record's
/// and its target's). A label that is not a language code is a warning, or with `strict` a
/// dropped record.
fn validate(mut r: Record, strict: bool) -> Checked {
    let issue = |kind, detail: String, r: &Record| Issue {
        loc: r.loc.clone(),
        kind,
        detail,
    };
    if r.text.trim().is_empty() {
        return Checked::Dropped(issue(IssueKind::EmptyText, "the text is empty".into(), &r));
    }
    let mut not_a_code = None;
    match check_lang(&mut r.lang) {
        Err(e) => return Checked::Dropped(issue(IssueKind::InvalidLang, e.to_string(), &r)),
        Ok(false) => not_a_code = Some(r.lang.clone()),
        Ok(true) => {}
    }
    if let Some(t) = r.target.as_mut() {
        match check_lang(&mut t.lang) {
            Err(e) => {
                let detail = format!("target: {e}");
                return Checked::Dropped(issue(IssueKind::InvalidLang, detail, &r));
            }
            Ok(false) => not_a_code = not_a_code.or_else(|| Some(t.lang.clone())),
            Ok(true) => {}
        }
    }
    let Some(label) = not_a_code else {
        return Checked::Valid(r);
    };
    if strict {
        let detail = format!(
            "{label:?} is not a language code (ISO 639-1/639-3, e.g. en, de, zh-Hans); \
             strict language checking drops it"
        );
        Checked::Dropped(issue(IssueKind::UnknownLang, detail, &r))
    } else {
        let detail = format!(
            "{label:?} is not a language code (ISO 639 / BCP-47), kept as a class \
             (--strict-languages or strict_language_codes = true drops such records)"
        );
        let w = issue(IssueKind::UnknownLang, detail, &r);
        Checked::Warned(r, w)
    }
}

impl Iterator for CorpusReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let raw = match self.source.next_raw() {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            let checked = match raw {
                Raw::Record(r) => validate(r, self.strict_languages),
                Raw::Bad(issue) => Checked::Dropped(issue),
            };
            match checked {
                Checked::Valid(r) => return Some(Ok(r)),
                Checked::Warned(r, warning) => {
                    self.issues.warn(warning);
                    return Some(Ok(r));
                }
                Checked::Dropped(issue) if self.on_error == OnError::Fail => {
                    self.failed = true;
                    return Some(Err(Error::BadRecord(issue)));
                }
                Checked::Dropped(issue) => self.issues.push(issue),
            }
        }
    }
}
