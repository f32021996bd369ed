//! Probe texts: the embedded multilingual set (the UDHR corpus's test articles, every
//! language) or any corpus ferry-data reads.

use std::collections::BTreeMap;
use std::path::Path;

use ferry_data::corpus::{self, CorpusOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The embedded probe set: `corpora/udhr/test.tsv` (articles 27-30 of the Universal
/// Declaration of Human Rights in 47 languages; see `corpora/udhr/README.md`).
const EMBEDDED: &str = include_str!("../../../corpora/udhr/test.tsv");

/// The name the embedded set is recorded under.
pub const EMBEDDED_NAME: &str = "embedded:udhr-test";

/// One probe text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Its language.
    pub lang: String,
    /// The text.
    pub text: String,
}

/// Which probes to take.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// Only these languages (all when empty).
    pub languages: Vec<String>,
    /// At most this many texts per language (all when `None`).
    pub limit: Option<usize>,
}

/// How many probe texts per language a verification takes unless told: one for decoders and
/// encoders (64 tokens of each language is what the statistics need, and a forward pass of an
/// LLM is the cost), every text for classifiers (one prediction per text, and cheap).
pub fn default_limit(arch: &ferry_runtime::ArchConfig) -> Option<usize> {
    match arch {
        ferry_runtime::ArchConfig::Classifier(_) => None,
        _ => Some(1),
    }
}

/// The embedded probes.
pub fn embedded(opts: &ProbeOptions) -> Result<Vec<Probe>> {
    select(udhr_tsv(EMBEDDED), opts, Path::new(EMBEDDED_NAME))
}

/// The texts of a UDHR split as the repository keeps it (`corpora/udhr/*.tsv`: a header,
/// then `lang`, `article`, `text` per line).
pub(crate) fn udhr_tsv(tsv: &str) -> Vec<Probe> {
    tsv.lines()
        .skip(1)
        .filter_map(|l| {
            let mut cols = l.splitn(3, '\t');
            let (lang, _article, text) = (cols.next()?, cols.next()?, cols.next()?);
            Some(Probe {
                lang: lang.to_string(),
                text: text.to_string(),
            })
        })
        .collect()
}

/// The probes of `corpus` (any layout ferry-data reads), else the embedded set, with the name
/// of where they came from (for reports).
pub fn load(corpus: Option<&Path>, opts: &ProbeOptions) -> Result<(String, Vec<Probe>)> {
    Ok(match corpus {
        Some(p) => (p.display().to_string(), from_corpus(p, opts)?),
        None => (EMBEDDED_NAME.to_string(), embedded(opts)?),
    })
}

/// Probes from a corpus file or folder in any layout ferry-data reads (a `lang` and a `text`
/// column, per-language folders, Moses files...).
pub fn from_corpus(path: &Path, opts: &ProbeOptions) -> Result<Vec<Probe>> {
    let reader = corpus::open(path, &CorpusOptions::default())
        .map_err(|e| Error::Probes(format!("{}: {e}", path.display())))?;
    let mut all = Vec::new();
    for r in reader {
        let r = r.map_err(|e| Error::Probes(format!("{}: {e}", path.display())))?;
        all.push(Probe {
            lang: r.lang,
            text: r.text,
        });
    }
    select(all, opts, path)
}

fn select(all: Vec<Probe>, opts: &ProbeOptions, source: &Path) -> Result<Vec<Probe>> {
    let mut per_lang: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for p in all {
        if !opts.languages.is_empty() && !opts.languages.contains(&p.lang) {
            continue;
        }
        let n = per_lang.entry(p.lang.clone()).or_default();
        if opts.limit.is_some_and(|l| *n >= l) || p.text.trim().is_empty() {
            continue;
        }
        *n += 1;
        out.push(p);
    }
    if let Some(missing) = opts.languages.iter().find(|l| !per_lang.contains_key(*l)) {
        let have: Vec<&str> = per_lang.keys().map(String::as_str).collect();
        return Err(Error::Probes(format!(
            "{}: no probe text in language `{missing}` (languages found: {})",
            source.display(),
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            }
        )));
    }
    if out.is_empty() {
        return Err(Error::Probes(format!(
            "{}: no probe texts",
            source.display()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_set_has_every_udhr_language() {
        let all = embedded(&ProbeOptions {
            languages: vec![],
            limit: Some(1),
        })
        .unwrap();
        assert_eq!(all.len(), 47);
        assert!(all.iter().any(|p| p.lang == "zh") && all.iter().any(|p| p.lang == "ar"));
        let two = ProbeOptions {
            languages: vec!["de".into(), "ja".into()],
            limit: Some(2),
        };
        let sel = embedded(&two).unwrap();
        assert_eq!(sel.len(), 4);
        let bad = ProbeOptions {
            languages: vec!["xx".into()],
            limit: None,
        };
        let err = embedded(&bad).unwrap_err().to_string();
        assert!(err.contains("`xx`") && err.contains("de"), "{err}");
    }
}
