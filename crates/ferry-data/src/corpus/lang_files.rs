//! A list of (language, file) pairs read line by line, each line a record of that language:
//! what a folder per language and a monolingual Moses split both are. A `*.jsonl` file holds
//! a JSON record per line (`{"text": ..., "label": ...}`, what `ferry data shard` writes).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lines::Lines;
use super::{Raw, Source};
use crate::error::Result;
use crate::issues::{Issue, IssueKind};
use crate::record::Record;

/// How a shard file holds its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineKind {
    /// A record per non-blank line (a folder per language of plain text).
    Text,
    /// A JSON object per line with a `text` field and an optional `label` (what
    /// [`crate::stream::write_shards`] writes; files named `*.jsonl` or `*.jsonl.gz`).
    Json,
}

impl LineKind {
    /// The kind of `path`, by its name.
    pub fn of(path: &Path) -> LineKind {
        let name = path.to_string_lossy();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".jsonl") {
            LineKind::Json
        } else {
            LineKind::Text
        }
    }

    /// The record on a line, as (text, label); `None` for a line that holds none (blank, or
    /// not a JSON object with a non-empty string `text`). The index and the readers both
    /// decide with this, so their counts agree.
    pub fn parse(self, line: String) -> Option<(String, Option<String>)> {
        if line.trim().is_empty() {
            return None;
        }
        match self {
            LineKind::Text => Some((line, None)),
            LineKind::Json => {
                let serde_json::Value::Object(mut o) = serde_json::from_str(&line).ok()? else {
                    return None;
                };
                let text = match o.remove("text")? {
                    serde_json::Value::String(s) if !s.trim().is_empty() => s,
                    _ => return None,
                };
                let label = match o.remove("label") {
                    Some(serde_json::Value::String(s)) => Some(s),
                    Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                Some((text, label))
            }
        }
    }
}

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
