//! One text record of a corpus, with its language and where it came from.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Where a record (or a problem) is: file and 1-based line (row, for Parquet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: Arc<Path>,
    /// 1-based line number (or row number for Parquet).
    pub line: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A text in one language; for parallel corpora also its translation.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The text.
    pub text: String,
    /// Its language code (`en`, `zh-Hans`, ...).
    pub lang: String,
    /// A class label, when the corpus has one.
    pub label: Option<String>,
    /// The aligned translation, for parallel corpora.
    pub target: Option<Target>,
    /// Where the record was read.
    pub loc: Location,
}

/// The target side of a parallel record.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The translated text.
    pub text: String,
    /// Its language code.
    pub lang: String,
}
