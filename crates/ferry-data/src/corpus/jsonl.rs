//! JSON Lines: one object per line with a text field and a language field.

use std::path::Path;

use super::lines::Lines;
use super::{Column, CorpusOptions, Raw, Source};
use crate::error::{Error, Result};
use crate::issues::{Issue, IssueKind};
use crate::record::Record;

/// A JSONL file.
pub struct Jsonl {
    lines: Lines,
    text: String,
    lang: Option<String>,
    label: Option<String>,
    default_lang: Option<String>,
}

fn field_name(path: &Path, c: &Column, what: &str) -> Result<String> {
    match c {
        Column::Name(n) => Ok(n.clone()),
        Column::Index(i) => Err(Error::malformed(
            path,
            format!("JSONL fields have names, not positions: give --{what}-col a name, not {i}"),
        )),
    }
}

impl Jsonl {
    /// Opens `path`.
    pub fn open(path: &Path, opts: &CorpusOptions) -> Result<Self> {
        Ok(Jsonl {
            lines: Lines::open(path)?,
            text: field_name(path, &opts.text, "text")?,
            lang: opts
                .lang
                .as_ref()
                .map(|c| field_name(path, c, "lang"))
                .transpose()?,
            label: opts
                .label
                .as_ref()
                .map(|c| field_name(path, c, "label"))
                .transpose()?,
            default_lang: opts.default_lang.clone(),
        })
    }
}

/// A JSON scalar as text (strings unquoted); `None` for null, arrays and objects.
fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Source for Jsonl {
    fn next_raw(&mut self) -> Result<Option<Raw>> {
        let Some(line) = self.lines.next_nonblank()? else {
            return Ok(None);
        };
        let (n, text) = match line {
            Ok(l) => l,
            Err(issue) => return Ok(Some(Raw::Bad(issue))),
        };
        let loc = self.lines.loc(n);
        let bad = |kind, detail: String| {
            Ok(Some(Raw::Bad(Issue {
                loc: loc.clone(),
                kind,
                detail,
            })))
        };
        let obj = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => return bad(IssueKind::InvalidJson, "not a JSON object".into()),
            Err(e) => return bad(IssueKind::InvalidJson, e.to_string()),
        };
        let Some(body) = obj.get(&self.text).and_then(scalar) else {
            return bad(
                IssueKind::MissingField,
                format!("no string field {:?}", self.text),
            );
        };
        let lang = match (&self.lang, &self.default_lang) {
            (Some(f), default) => match obj.get(f).and_then(scalar).or(default.clone()) {
                Some(l) => l,
                None => return bad(IssueKind::MissingField, format!("no string field {f:?}")),
            },
            (None, Some(d)) => d.clone(),
            (None, None) => String::new(),
        };
        let label = self
            .label
            .as_ref()
            .and_then(|f| obj.get(f))
            .and_then(scalar);
        Ok(Some(Raw::Record(Record {
            text: body,
            lang,
            label,
            target: None,
            loc,
        })))
    }
}
