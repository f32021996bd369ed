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
    /// A language code that is not a valid BCP-47 / ISO 639 code.
    UnknownLang,
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

/// Counts of skipped records by kind, with the first few locations of each.
#[derive(Debug, Clone, Default)]
pub struct IssueLog {
    counts: BTreeMap<IssueKind, u64>,
    examples: BTreeMap<IssueKind, Vec<Issue>>,
}

impl IssueLog {
    /// Records one skipped record.
    pub fn push(&mut self, issue: Issue) {
        *self.counts.entry(issue.kind).or_default() += 1;
        let ex = self.examples.entry(issue.kind).or_default();
        if ex.len() < EXAMPLES_PER_KIND {
            ex.push(issue);
        }
    }

    /// Total skipped records.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Skipped records of one kind.
    pub fn count(&self, kind: IssueKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// The kept examples (at most a few per kind), in kind order.
    pub fn examples(&self) -> impl Iterator<Item = &Issue> {
        self.examples.values().flatten()
    }

    /// A JSON summary: `{"skipped": N, "by_kind": {kind: {"count", "first": ["file:line: ..."]}}}`.
    pub fn to_json(&self) -> serde_json::Value {
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
        serde_json::json!({"skipped": self.total(), "by_kind": by_kind})
    }
}

impl fmt::Display for IssueLog {
    /// One line per kind: `skipped 2 wrong_columns (first: a.tsv:3: expected 3 columns, found 2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.total() == 0 {
            return write!(f, "no malformed records");
        }
        writeln!(f, "skipped {} malformed records:", self.total())?;
        for (k, n) in &self.counts {
            let first = &self.examples[k][0];
            writeln!(
                f,
                "  {n} {} (first at {}: {})",
                k.name(),
                first.loc,
                first.detail
            )?;
        }
        Ok(())
    }
}
