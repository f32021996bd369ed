//! A list of (language, file) pairs read line by line, each line a record of that language:
//! what a folder per language and a monolingual Moses split both are. A `*.jsonl` file holds
//! a JSON record per line (`{"text": ..., "label": ...}`, what `ferry data shard` writes).

use std::path::PathBuf;

use super::lines::Lines;
use super::{Raw, Source};
use crate::error::Result;
use crate::issues::{Issue, IssueKind};
use crate::record::Record;
use crate::stream::index::LineKind;

/// Files of known language, read in order.
pub struct LangFiles {
    files: std::vec::IntoIter<(String, PathBuf)>,
    current: Option<(String, LineKind, Lines)>,
    skip_blank: bool,
}

impl LangFiles {
    /// Reads `files` in order. With `skip_blank`, blank lines are not records (plain text
    /// files separate paragraphs with them); without, they are empty records the reader
    /// counts (in line-aligned Moses files every line is a record).
    pub fn new(files: Vec<(String, PathBuf)>, skip_blank: bool) -> Self {
        LangFiles {
            files: files.into_iter(),
            current: None,
            skip_blank,
        }
    }
}

impl Source for LangFiles {
    fn next_raw(&mut self) -> Result<Option<Raw>> {
        loop {
            if self.current.is_none() {
                match self.files.next() {
                    Some((lang, path)) => {
                        self.current = Some((lang, LineKind::of(&path), Lines::open(&path)?))
                    }
                    None => return Ok(None),
                }
            }
            let (lang, kind, lines) = self.current.as_mut().expect("set above");
            let line = if self.skip_blank {
                lines.next_nonblank()?
            } else {
                lines.next_line()?
            };
            match line {
                None => self.current = None,
                Some(Err(issue)) => return Ok(Some(Raw::Bad(issue))),
                Some(Ok((n, line))) => {
                    let (text, label) = match kind {
                        LineKind::Text => (line, None),
                        LineKind::Json => match LineKind::Json.parse(line) {
                            Some(r) => r,
                            None => {
                                return Ok(Some(Raw::Bad(Issue {
                                    loc: lines.loc(n),
                                    kind: IssueKind::InvalidJson,
                                    detail: "not a JSON object with a non-empty string \"text\""
                                        .into(),
                                })))
                            }
                        },
                    };
                    return Ok(Some(Raw::Record(Record {
                        text,
                        lang: lang.clone(),
                        label,
                        target: None,
                        loc: lines.loc(n),
                    })));
                }
            }
        }
    }
}
