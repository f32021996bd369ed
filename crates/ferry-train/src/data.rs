//! From corpus files to labelled examples for training and evaluation.

use std::path::Path;

use ferry_data::batch::Example;
use ferry_data::corpus::{self, CorpusOptions};
use ferry_data::encode::{encode_corpus, EncodeOptions, LabelFrom};
use ferry_data::issues::IssueLog;
use ferry_data::tokenize::Tokenizer;
use ferry_data::Record;

use crate::config::LabelKind;
use crate::{Error, Result};

/// Encoded examples with labels indexing a class list.
#[derive(Debug, Clone)]
pub struct Examples {
    /// The examples (`label` is `None` for a class the model does not know).
    pub examples: Vec<Example>,
    /// The class list labels index.
    pub classes: Vec<String>,
    /// Examples whose class is not in `classes`.
    pub unknown_class: usize,
    /// What reading the corpus dropped or kept with a warning.
    pub issues: IssueLog,
}

/// How examples are made.
#[derive(Debug, Clone)]
pub struct ExampleOptions<'a> {
    /// What the classes are.
    pub label: LabelKind,
    /// Truncate to this many tokens.
    pub max_len: usize,
    /// Add the tokenizer's special tokens.
    pub add_special_tokens: bool,
    /// Map labels onto this class list (evaluation); `None`: take the corpus's classes.
    pub classes: Option<&'a [String]>,
    /// Drop records whose language label is not a language code (see
    /// [`CorpusOptions::strict_languages`]).
    pub strict_languages: bool,
}

/// Reads a corpus file's records (a label column is required when the classes are labels),
/// with the log of what was dropped or kept with a warning.
pub fn read_records(path: &Path, opts: &ExampleOptions<'_>) -> Result<(Vec<Record>, IssueLog)> {
    let copts = CorpusOptions {
        label_required: opts.label == LabelKind::Label,
        strict_languages: opts.strict_languages,
        ..CorpusOptions::default()
    };
    Ok(corpus::open(path, &copts)?.read_all()?)
}

/// Reads and encodes a corpus file in `pool`.
pub fn load(
    path: &Path,
    tok: &Tokenizer,
    pool: &rayon::ThreadPool,
    opts: &ExampleOptions<'_>,
) -> Result<Examples> {
    let (records, issues) = read_records(path, opts)?;
    from_records(records, issues, path, tok, pool, opts)
}

/// Encodes records already read (snippets, filtered sets); `issues` is what reading them
/// dropped or warned about.
pub fn from_records(
    records: Vec<Record>,
    issues: IssueLog,
    source: &Path,
    tok: &Tokenizer,
    pool: &rayon::ThreadPool,
    opts: &ExampleOptions<'_>,
) -> Result<Examples> {
    if records.is_empty() {
        return Err(Error::malformed(
            source,
            "has no records (for the chosen languages)",
        ));
    }
    let eopts = EncodeOptions {
        add_special_tokens: opts.add_special_tokens,
        lang_tags: None,
        label_from: match opts.label {
            LabelKind::Lang => LabelFrom::Lang,
            LabelKind::Label => LabelFrom::Label,
        },
        max_len: Some(opts.max_len),
    };
    let enc = encode_corpus(records.into_iter().map(Ok), tok, pool, &eopts, |_| {})?;
    let mut examples = enc.examples;
    let Some(classes) = opts.classes else {
        if examples.iter().any(|e| e.label.is_none()) {
            return Err(Error::malformed(
                source,
                "some records have no label; every training record needs one",
            ));
        }
        return Ok(Examples {
            examples,
            classes: enc.classes,
            unknown_class: 0,
            issues,
        });
    };
    let mut unknown = 0;
    for e in &mut examples {
        let name = e.label.map(|l| enc.classes[l as usize].as_str());
        e.label = name
            .and_then(|n| classes.iter().position(|c| c == n))
            .map(|i| i as u32);
        unknown += usize::from(e.label.is_none());
    }
    Ok(Examples {
        examples,
        classes: classes.to_vec(),
        unknown_class: unknown,
        issues,
    })
}

/// Cuts each record's text into snippets of `words` words (texts written without spaces —
/// fewer than one space per 12 characters — into pieces of `2 * words` characters).
pub fn snippets(records: &[Record], words: usize) -> Vec<Record> {
    let mut out = Vec::new();
    for r in records {
        let chars = r.text.chars().count();
        let ws: Vec<&str> = r.text.split_whitespace().collect();
        let pieces: Vec<String> = if ws.len() * 12 < chars {
            let cs: Vec<char> = r.text.chars().filter(|c| !c.is_whitespace()).collect();
            cs.chunks(2 * words)
                .filter(|c| c.len() == 2 * words)
                .map(|c| c.iter().collect())
                .collect()
        } else {
            ws.chunks(words)
                .filter(|c| c.len() == words)
                .map(|c| c.join(" "))
                .collect()
        };
        for p in pieces {
            let mut s = r.clone();
            s.text = p;
            out.push(s);
        }
    }
    out
}
