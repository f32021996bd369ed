//! Parquet files, read row group by row group (a file larger than RAM streams).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};

use super::{Column, CorpusOptions, Raw, Source};
use crate::error::{Error, Result};
use crate::issues::{Issue, IssueKind};
use crate::record::{Location, Record};

/// A Parquet file with a text column and optionally language and label columns.
pub struct Parquet {
    file: Arc<Path>,
    rows: parquet::record::reader::RowIter<'static>,
    row: u64,
    text: usize,
    lang: Option<usize>,
    label: Option<usize>,
    default_lang: Option<String>,
}

impl Parquet {
    /// Opens `path` and finds the columns.
    pub fn open(path: &Path, opts: &CorpusOptions) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let reader = SerializedFileReader::new(f)
            .map_err(|e| Error::malformed(path, format!("not a readable Parquet file: {e}")))?;
        let schema = reader.metadata().file_metadata().schema_descr();
        let names: Vec<String> = schema
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        let find = |c: &Column| -> Option<usize> {
            match c {
                Column::Index(i) => (*i < names.len()).then_some(*i),
                Column::Name(n) => names.iter().position(|x| x == n),
            }
        };
        let text = find(&opts.text).ok_or_else(|| {
            Error::malformed(
                path,
                format!(
                    "no text column {:?}; the columns are {names:?} (name one with --text-col)",
                    opts.text
                ),
            )
        })?;
        let lang = opts.lang.as_ref().and_then(&find);
        if lang.is_none() && opts.default_lang.is_none() {
            return Err(Error::malformed(
                path,
                format!(
                    "no language column {:?}; the columns are {names:?} (name one with \
                     --lang-col, or give every record one language with --lang)",
                    opts.lang
                ),
            ));
        }
        let label = opts.label.as_ref().and_then(find);
        if label.is_none() && opts.label_required {
            return Err(Error::malformed(
                path,
                format!(
                    "no label column {:?}; the columns are {names:?}",
                    opts.label
                ),
            ));
        }
        Ok(Parquet {
            file: Arc::from(path),
            rows: reader.into_iter(),
            row: 0,
            text,
            lang,
            label,
            default_lang: opts.default_lang.clone(),
        })
    }
}

/// A scalar field as text; `None` for null and nested values.
fn scalar(f: &Field) -> Option<String> {
    match f {
        Field::Null | Field::Group(_) | Field::ListInternal(_) | Field::MapInternal(_) => None,
        Field::Str(s) => Some(s.clone()),
        Field::Bytes(b) => std::str::from_utf8(b.data()).ok().map(str::to_string),
        other => Some(other.to_string()),
    }
}

fn column(row: &Row, i: usize) -> Option<&Field> {
    row.get_column_iter().nth(i).map(|(_, f)| f)
}

impl Source for Parquet {
    fn next_raw(&mut self) -> Result<Option<Raw>> {
        let Some(row) = self.rows.next() else {
            return Ok(None);
        };
        let row =
            row.map_err(|e| Error::malformed(&*self.file, format!("row {}: {e}", self.row + 1)))?;
        self.row += 1;
        let loc = Location {
            file: self.file.clone(),
            line: self.row,
        };
        let missing = |what: &str| {
            Ok(Some(Raw::Bad(Issue {
                loc: loc.clone(),
                kind: IssueKind::MissingField,
                detail: format!("null or non-text {what}"),
            })))
        };
        let Some(text) = column(&row, self.text).and_then(scalar) else {
            return missing("text");
        };
        let lang = match self.lang {
            Some(i) => match column(&row, i).and_then(scalar) {
                Some(l) => l,
                None => return missing("language"),
            },
            None => self.default_lang.clone().unwrap_or_default(),
        };
        let label = self.label.and_then(|i| column(&row, i)).and_then(scalar);
        Ok(Some(Raw::Record(Record {
            text,
            lang,
            label,
            target: None,
            loc,
        })))
    }
}
