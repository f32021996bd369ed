//! Corpus statistics: per-language records, characters, tokens, a length histogram and the
//! scripts in use.

use std::collections::BTreeMap;

use crate::corpus::CorpusReader;
use crate::error::Result;
use crate::issues::IssueLog;
use crate::script::{self, Script};
use crate::tokenize::Tokenizer;

/// Upper bounds (exclusive) of the token-length histogram bins; the last bin is open.
pub const LENGTH_BINS: [u64; 10] = [2, 4, 8, 16, 32, 64, 128, 256, 512, u64::MAX];

/// Statistics of one language.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LangStats {
    /// Records.
    pub records: u64,
    /// Unicode characters.
    pub chars: u64,
    /// Tokens (tokenizer tokens, or whitespace-separated words without a tokenizer).
    pub tokens: u64,
    /// The longest record, in tokens.
    pub max_tokens: u64,
    /// Records per token-length bin (see [`LENGTH_BINS`]).
    pub length_hist: [u64; LENGTH_BINS.len()],
    /// Letters per script.
    pub scripts: BTreeMap<Script, u64>,
}

impl LangStats {
    /// The script most of its letters are written in.
    pub fn main_script(&self) -> Option<Script> {
        self.scripts
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(s, _)| *s)
    }

    fn add(&mut self, text: &str, tokens: u64) {
        self.records += 1;
        self.chars += text.chars().count() as u64;
        self.tokens += tokens;
        self.max_tokens = self.max_tokens.max(tokens);
        let bin = LENGTH_BINS
            .iter()
            .position(|&b| tokens < b)
            .unwrap_or(LENGTH_BINS.len() - 1);
        self.length_hist[bin] += 1;
        for (s, n) in script::count(text) {
            *self.scripts.entry(s).or_default() += n as u64;
        }
    }
}

/// Statistics of a corpus.
#[derive(Debug, Clone, Default)]
pub struct CorpusStats {
    /// Per language, sorted by code.
    pub langs: BTreeMap<String, LangStats>,
    /// Records with a target side (parallel corpora).
    pub parallel: u64,
    /// What was skipped.
    pub issues: IssueLog,
    /// Whether token counts come from a tokenizer (else whitespace words).
    pub tokenizer: bool,
}

impl CorpusStats {
    /// Total records.
    pub fn records(&self) -> u64 {
        self.langs.values().map(|l| l.records).sum()
    }

    /// The JSON form (`ferry data stats --json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "records": self.records(),
            "languages": self.langs.len(),
            "parallel_records": self.parallel,
            "token_unit": if self.tokenizer { "tokenizer" } else { "whitespace" },
            "length_bins_upper_exclusive": LENGTH_BINS.iter().map(|&b| if b == u64::MAX { None } else { Some(b) }).collect::<Vec<_>>(),
            "per_language": self.langs.iter().map(|(k, v)| {
                let mut j = serde_json::to_value(v).unwrap_or_default();
                j["main_script"] = serde_json::to_value(v.main_script()).unwrap_or_default();
                (k.clone(), j)
            }).collect::<serde_json::Map<_, _>>(),
            "issues": self.issues.to_json(),
        })
    }
}

/// Reads the whole corpus and gathers its statistics. With a tokenizer, token counts are
/// its tokens (special tokens excluded); otherwise whitespace-separated words.
pub fn collect(
    mut reader: CorpusReader,
    tokenizer: Option<&Tokenizer>,
    mut progress: impl FnMut(u64),
) -> Result<CorpusStats> {
    let mut stats = CorpusStats {
        tokenizer: tokenizer.is_some(),
        ..Default::default()
    };
    let mut n = 0u64;
    for r in reader.by_ref() {
        let r = r?;
        n += 1;
        let tokens = match tokenizer {
            Some(t) => t.encode(&r.text, false)?.len() as u64,
            None => r.text.split_whitespace().count() as u64,
        };
        stats.parallel += u64::from(r.target.is_some());
        stats
            .langs
            .entry(r.lang.clone())
            .or_default()
            .add(&r.text, tokens);
        if n.is_multiple_of(4096) {
            progress(n);
        }
    }
    stats.issues = reader.issues().clone();
    Ok(stats)
}
