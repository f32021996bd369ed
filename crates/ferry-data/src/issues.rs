//! Malformed records: what was wrong, where, and how many — nothing disappears silently.

use std::collections::BTreeMap;
use std::fmt;

use crate::record::Location;

/// What to do with a malformed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Count it in the [`IssueLog`] and go on (the default).
    #[default]
    Skip,
    /// Stop reading with an error naming file:line.
    Fail,
}

impl std::str::FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(OnError::Skip),
            "fail" => Ok(OnError::Fail),
            _ => Err(format!("unknown --on-error {s:?}: use skip or fail")),
        }
    }
}

/// The kinds of malformed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// A delimited line with the wrong number of columns.
    WrongColumns,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// A record whose text is empty (or only whitespace).
    EmptyText,
    /// A language label that is not a BCP-47 / ISO 639 code: a warning (the label is kept as a
    /// class), or a dropped record in strict mode ([`crate::corpus::CorpusOptions::strict_languages`]).
    UnknownLang,
    /// A language label that cannot name a class: empty, with control characters, or longer
    /// than [`crate::lang::MAX_LABEL_BYTES`].
    InvalidLang,
    /// A JSONL line that is not a JSON object.
    InvalidJson,
    /// A record without a required field (text or language).
    MissingField,
}

impl IssueKind {
    /// The snake_case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            IssueKind::WrongColumns => "wrong_columns",
            IssueKind::InvalidUtf8 => "invalid_utf8",
            IssueKind::EmptyText => "empty_text",
            IssueKind::UnknownLang => "unknown_lang",
            IssueKind::InvalidLang => "invalid_lang",
            IssueKind::InvalidJson => "invalid_json",
            IssueKind::MissingField => "missing_field",
        }
    }
}

/// One malformed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Where it is.
    pub loc: Location,
    /// What kind of problem.
    pub kind: IssueKind,
    /// Details (the expected and found column counts, the bad code, ...).
    pub detail: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.loc, self.kind.name(), self.detail)?;
        write!(
            f,
            " (fix the line, or pass --on-error skip to count and skip such records)"
        )
    }
}

/// How many examples of each kind an [`IssueLog`] keeps with their location.
const EXAMPLES_PER_KIND: usize = 5;

/// Counts by kind, with the first few examples of each.
#[derive(Debug, Clone, Default)]
struct Tally {
    counts: BTreeMap<IssueKind, u64>,
    examples: BTreeMap<IssueKind, Vec<Issue>>,
}

impl Tally {
    /// Counts `issue` and keeps it as an example while its kind has fewer than
    /// [`EXAMPLES_PER_KIND`]; with `distinct`, only when no kept example has the same detail
    /// (so a label repeated on every line is shown once, beside the other labels).
    fn push(&mut self, issue: Issue, distinct: bool) {
        *self.counts.entry(issue.kind).or_default() += 1;
        let ex = self.examples.entry(issue.kind).or_default();
        if ex.len() < EXAMPLES_PER_KIND
            && !(distinct && ex.iter().any(|e| e.detail == issue.detail))
        {
            ex.push(issue);
        }
    }

    fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    fn count(&self, kind: IssueKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// `2 wrong_columns, 1 empty_text`.
    fn by_kind_line(&self) -> String {
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{n} {}", k.name()))
            .collect();
        parts.join(", ")
    }

    /// `{kind: {"count", "first": ["file:line: detail", ...]}}`.
    fn to_json(&self) -> serde_json::Value {
        let by_kind: serde_json::Map<String, serde_json::Value> = self
            .counts
            .iter()
            .map(|(k, n)| {
                let first: Vec<String> = self.examples[k]
                    .iter()
                    .map(|i| format!("{}: {}", i.loc, i.detail))
                    .collect();
                (
                    k.name().to_string(),
                    serde_json::json!({"count": n, "first": first}),
                )
            })
            .collect();
        by_kind.into()
    }
}

/// What reading a corpus left out or questioned: dropped records (counts by kind, with the
/// first few locations of each) and records kept with a warning (a language label that is not
/// a language code; the distinct labels are shown).
#[derive(Debug, Clone, Default)]
pub struct IssueLog {
    dropped: Tally,
    warned: Tally,
}

impl IssueLog {
    /// Records one dropped record.
    pub fn push(&mut self, issue: Issue) {
        self.dropped.push(issue, false);
    }

    /// Records one record that was kept with a warning.
    pub fn warn(&mut self, issue: Issue) {
        self.warned.push(issue, true);
    }

    /// Total dropped records.
    pub fn total(&self) -> u64 {
        self.dropped.total()
    }

    /// Dropped records of one kind.
    pub fn count(&self, kind: IssueKind) -> u64 {
        self.dropped.count(kind)
    }

    /// Total records kept with a warning.
    pub fn warnings(&self) -> u64 {
        self.warned.total()
    }

    /// Records of one kind kept with a warning.
    pub fn warning_count(&self, kind: IssueKind) -> u64 {
        self.warned.count(kind)
    }

    /// Whether nothing was dropped or warned about.
    pub fn is_empty(&self) -> bool {
        self.total() == 0 && self.warnings() == 0
    }

    /// The kept examples of dropped records (at most a few per kind), in kind order.
    pub fn examples(&self) -> impl Iterator<Item = &Issue> {
        self.dropped.examples.values().flatten()
    }

    /// The kept examples of warnings (the first few distinct details per kind), in kind order.
    pub fn warning_examples(&self) -> impl Iterator<Item = &Issue> {
        self.warned.examples.values().flatten()
    }

    /// One line on what was dropped and why, `None` when nothing was:
    /// `dropped 3 records: 2 wrong_columns, 1 empty_text`.
    pub fn summary(&self) -> Option<String> {
        (self.total() > 0).then(|| {
            format!(
                "dropped {} records: {}",
                self.total(),
                self.dropped.by_kind_line()
            )
        })
    }

    /// One line on the records kept with a warning, `None` when there are none:
    /// `kept 42 records with warnings: 42 unknown_lang`.
    pub fn warning_summary(&self) -> Option<String> {
        (self.warnings() > 0).then(|| {
            format!(
                "kept {} records with warnings: {}",
                self.warnings(),
                self.warned.by_kind_line()
            )
        })
    }

    /// A JSON summary: `{"dropped": N, "by_kind": {kind: {"count", "first": ["file:line:
    /// ..."]}}, "warnings": M, "warnings_by_kind": {...}}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "dropped": self.total(),
            "by_kind": self.dropped.to_json(),
            "warnings": self.warnings(),
            "warnings_by_kind": self.warned.to_json(),
        })
    }
}

impl serde::Serialize for IssueLog {
    /// As [`IssueLog::to_json`].
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl fmt::Display for IssueLog {
    /// The summary line, then one line per kind with its first location
    /// (`  2 wrong_columns (first at a.tsv:3: expected 3 columns, found 2)`); then the warning
    /// summary and one line per distinct warning (`  unknown_lang at a.tsv:2: ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "no records dropped");
        }
        if let Some(line) = self.summary() {
            writeln!(f, "{line}")?;
            for (k, n) in &self.dropped.counts {
                let first = &self.dropped.examples[k][0];
                writeln!(
                    f,
                    "  {n} {} (first at {}: {})",
                    k.name(),
                    first.loc,
                    first.detail
                )?;
            }
        }
        if let Some(line) = self.warning_summary() {
            writeln!(f, "{line}")?;
            for w in self.warning_examples() {
                writeln!(f, "  {} at {}: {}", w.kind.name(), w.loc, w.detail)?;
            }
        }
        Ok(())
    }
}
