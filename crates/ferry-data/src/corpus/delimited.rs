//! TSV (tab-separated, no quoting) and CSV (RFC 4180 quoting) with configurable columns.

use std::path::Path;
use std::sync::Arc;

use super::lines::{open_text, Lines};
use super::{Column, CorpusOptions, Raw, Source};
use crate::error::{Error, Result};
use crate::issues::{Issue, IssueKind};
use crate::record::{Location, Record};

/// Resolved column positions.
#[derive(Debug, Clone)]
struct Columns {
    text: usize,
    lang: Option<usize>,
    label: Option<usize>,
    /// How many fields a line must have (the header's width, or one past the last column used).
    width: usize,
}

/// Works out the columns from the options and the first row. Returns them and whether the
/// first row is a header.
fn resolve(path: &Path, first: &[String], opts: &CorpusOptions) -> Result<(Columns, bool)> {
    let header = opts.header.unwrap_or_else(|| {
        [Some(&opts.text), opts.lang.as_ref(), opts.label.as_ref()]
            .into_iter()
            .flatten()
            .any(|c| matches!(c, Column::Name(n) if first.iter().any(|f| f == n)))
    });
    let find = |c: &Column, what: &str| -> Result<Option<usize>> {
        match c {
            Column::Index(i) => Ok(Some(*i)),
            Column::Name(n) if header => Ok(first.iter().position(|f| f == n)),
            Column::Name(n) => Err(Error::malformed(
                path,
                format!(
                    "the {what} column is named {n:?} but the file has no header row; \
                     give its position instead (--{what}-col 0 for the first column)"
                ),
            )),
        }
    };
    let text = find(&opts.text, "text")?.ok_or_else(|| {
        Error::malformed(
            path,
            format!(
                "no text column {:?} in the header {first:?}; name it with --text-col",
                opts.text
            ),
        )
    })?;
    let lang = match &opts.lang {
        None => None,
        Some(c) => {
            let found = find(c, "lang")?;
            if found.is_none() && opts.default_lang.is_none() {
                return Err(Error::malformed(
                    path,
                    format!(
                        "no language column {c:?} in the header {first:?}; name it with \
                         --lang-col, or give every record one language with --lang"
                    ),
                ));
            }
            found
        }
    };
    let label = match &opts.label {
        None => None,
        Some(c) => {
            let found = find(c, "label")?;
            if found.is_none() && opts.label_required {
                return Err(Error::malformed(
                    path,
                    format!("no label column {c:?} in the header {first:?}"),
                ));
            }
            found
        }
    };
    let used = [Some(text), lang, label]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
        + 1;
    let width = if header { first.len() } else { used };
    Ok((
        Columns {
            text,
            lang,
            label,
            width,
        },
        header,
    ))
}

/// Builds a record (or an issue) from the fields of one row.
fn row(fields: &[String], cols: &Columns, loc: Location, opts: &CorpusOptions) -> Raw {
    if fields.len() != cols.width {
        return Raw::Bad(Issue {
            loc,
            kind: IssueKind::WrongColumns,
            detail: format!("expected {} columns, found {}", cols.width, fields.len()),
        });
    }
    let lang = match cols.lang {
        Some(i) => fields[i].clone(),
        None => opts.default_lang.clone().unwrap_or_default(),
    };
    Raw::Record(Record {
        text: fields[cols.text].clone(),
        lang,
        label: cols.label.map(|i| fields[i].clone()),
        target: None,
        loc,
    })
}

/// A TSV file: one record per line, fields split on tabs, no quoting.
pub struct Tsv {
    lines: Lines,
    cols: Option<Columns>,
    opts: CorpusOptions,
}

impl Tsv {
    /// Opens `path`.
    pub fn open(path: &Path, opts: &CorpusOptions) -> Result<Self> {
        Ok(Tsv {
            lines: Lines::open(path)?,
            cols: None,
            opts: opts.clone(),
        })
    }
}

impl Source for Tsv {
    fn next_raw(&mut self) -> Result<Option<Raw>> {
        loop {
            let Some(line) = self.lines.next_nonblank()? else {
                return Ok(None);
            };
            let (n, text) = match line {
                Ok(l) => l,
                Err(issue) => return Ok(Some(Raw::Bad(issue))),
            };
            let fields: Vec<String> = text.split('\t').map(str::to_string).collect();
            let cols = match &self.cols {
                Some(c) => c,
                None => {
                    let (c, header) = resolve(self.lines.file(), &fields, &self.opts)?;
                    let c = self.cols.insert(c);
                    if header {
                        continue;
                    }
                    c
                }
            };
            return Ok(Some(row(&fields, cols, self.lines.loc(n), &self.opts)));
        }
    }
}

/// A CSV file with RFC 4180 quoting (fields may hold commas, quotes and newlines).
pub struct Csv {
    file: Arc<Path>,
    reader: csv::Reader<Box<dyn std::io::BufRead + Send>>,
    record: csv::ByteRecord,
    cols: Option<Columns>,
    opts: CorpusOptions,
}

impl Csv {
    /// Opens `path`.
    pub fn open(path: &Path, opts: &CorpusOptions) -> Result<Self> {
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(open_text(path)?);
        Ok(Csv {
            file: Arc::from(path),
            reader,
            record: csv::ByteRecord::new(),
            cols: None,
            opts: opts.clone(),
        })
    }
}

impl Source for Csv {
    fn next_raw(&mut self) -> Result<Option<Raw>> {
        loop {
            let more = self
                .reader
                .read_byte_record(&mut self.record)
                .map_err(|e| Error::malformed(&*self.file, format!("CSV: {e}")))?;
            if !more {
                return Ok(None);
            }
            let loc = Location {
                file: self.file.clone(),
                line: self.record.position().map_or(0, |p| p.line()),
            };
            let mut fields = Vec::with_capacity(self.record.len());
            for f in self.record.iter() {
                match std::str::from_utf8(f) {
                    Ok(s) => fields.push(s.to_string()),
                    Err(e) => {
                        return Ok(Some(Raw::Bad(Issue {
                            loc,
                            kind: IssueKind::InvalidUtf8,
                            detail: format!("invalid UTF-8 at byte {} of a field", e.valid_up_to()),
                        })))
                    }
                }
            }
            if fields.iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            let cols = match &self.cols {
                Some(c) => c,
                None => {
                    let (c, header) = resolve(&self.file, &fields, &self.opts)?;
                    let c = self.cols.insert(c);
                    if header {
                        continue;
                    }
                    c
                }
            };
            return Ok(Some(row(&fields, cols, loc, &self.opts)));
        }
    }
}
