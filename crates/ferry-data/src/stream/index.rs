//! The index of a sharded corpus (`DIR/<lang>/<files>`): each language's files and how many
//! records each holds, counted in one pass that holds one line at a time. The sampler needs
//! the counts (its probabilities); a resumed run checks the files against it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::corpus::by_lang;
use crate::corpus::lines::Lines;
pub use crate::corpus::LineKind;
use crate::error::{Error, Result};

/// Distinct labels an index keeps before it decides the label field is not a class.
pub(crate) const MAX_LABELS: usize = 100_000;

/// One shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardFile {
    /// The file.
    pub path: PathBuf,
    /// How its lines hold records.
    pub kind: LineKind,
    /// Its size on disk, when indexed.
    pub bytes: u64,
    /// Its modification time (nanoseconds since the epoch), when indexed.
    pub modified: u128,
    /// Records in it.
    pub records: u64,
}

impl ShardFile {
    pub(crate) fn stat(path: &Path) -> Result<(u64, u128)> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok((meta.len(), modified))
    }
}

/// One language's shards, in reading order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LangShards {
    /// The language (the folder's name).
    pub lang: String,
    /// Its files, sorted by name.
    pub files: Vec<ShardFile>,
    /// Lines that held no record (blank, not UTF-8, not a JSON record).
    pub skipped: u64,
    /// Records without a label (every record of a text file; JSON records without `label`).
    #[serde(default)]
    pub unlabeled: u64,
    /// Where the first record without a label is (`file:line`).
    #[serde(default)]
    pub first_unlabeled: Option<String>,
    /// The labels its records carry, sorted.
    #[serde(default)]
    pub labels: Vec<String>,
}

impl LangShards {
    /// Records over all files.
    pub fn records(&self) -> u64 {
        self.files.iter().map(|f| f.records).sum()
    }
}

/// A sharded corpus: a folder per language (sorted by name), each holding its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardIndex {
    /// The folder.
    pub root: PathBuf,
    /// The languages with at least one record, sorted.
    pub langs: Vec<LangShards>,
    /// The labels the JSON shards carry, sorted (empty when none do).
    pub labels: Vec<String>,
}

/// Whether `dir` is laid out as a folder per language (a sub-folder that is not hidden).
pub fn is_sharded(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.path().is_dir() && !by_lang::is_hidden(&e.path()))
    })
}

impl ShardIndex {
    /// Counts the records of every file under `dir/<lang>/` (hidden entries skipped), reading
    /// one line at a time; `progress` gets the bytes read so far.
    pub fn scan(dir: &Path, mut progress: impl FnMut(u64)) -> Result<ShardIndex> {
        let mut langs = Vec::new();
        let mut labels = BTreeSet::new();
        let mut read = 0u64;
        for (lang, paths) in by_lang::languages(dir)? {
            let mut shards = LangShards {
                lang,
                files: Vec::new(),
                skipped: 0,
                unlabeled: 0,
                first_unlabeled: None,
                labels: Vec::new(),
            };
            let mut lang_labels = BTreeSet::new();
            for path in paths {
                let kind = LineKind::of(&path);
                let (bytes, modified) = ShardFile::stat(&path)?;
                let mut lines = Lines::open(&path)?;
                let mut records = 0u64;
                while let Some(line) = lines.next_line()? {
                    match line.ok().and_then(|(_, l)| kind.parse(l)) {
                        Some((_, label)) => {
                            records += 1;
                            if label.is_none() {
                                shards.unlabeled += 1;
                                shards.first_unlabeled.get_or_insert_with(|| {
                                    format!("{}:{}", path.display(), lines.line())
                                });
                            }
                            if let Some(l) = label {
                                lang_labels.insert(l.clone());
                                labels.insert(l);
                                if labels.len() > MAX_LABELS {
                                    return Err(Error::malformed(
                                        &path,
                                        format!(
                                            "holds more than {MAX_LABELS} distinct labels: the \
                                             `label` field should name a class"
                                        ),
                                    ));
                                }
                            }
                        }
                        None => shards.skipped += 1,
                    }
                    if lines.line().is_multiple_of(65_536) {
                        progress(read + lines.offset());
                    }
                }
                read += lines.offset();
                progress(read);
                shards.files.push(ShardFile {
                    path,
                    kind,
                    bytes,
                    modified,
                    records,
                });
            }
            shards.labels = lang_labels.into_iter().collect();
            if shards.records() > 0 {
                langs.push(shards);
            }
        }
        if langs.is_empty() {
            return Err(Error::malformed(
                dir,
                "holds no records in <lang>/<file> shards (a folder per language, e.g. \
                 en/part-0.txt; `ferry data shard CORPUS --out DIR` makes one from any corpus)",
            ));
        }
        Ok(ShardIndex {
            root: dir.to_path_buf(),
            langs,
            labels: labels.into_iter().collect(),
        })
    }

    /// Checks that every indexed file still has the size and modification time it had: a
    /// resumed run must read the records it counted.
    pub fn check(&self) -> Result<()> {
        for f in self.langs.iter().flat_map(|l| &l.files) {
            let (bytes, modified) = ShardFile::stat(&f.path)?;
            if bytes != f.bytes || modified != f.modified {
                return Err(Error::malformed(
                    &f.path,
                    "changed since the run indexed it (size or modification time); a resumed \
                     run must read the same records: restore the file or start a new run",
                ));
            }
        }
        Ok(())
    }

    /// Keeps only the languages in `keep`.
    pub fn retain_languages(&mut self, keep: &[String]) {
        self.langs.retain(|l| keep.contains(&l.lang));
        // The classes are the labels of the languages kept.
        let labels: BTreeSet<&String> = self.langs.iter().flat_map(|l| &l.labels).collect();
        self.labels = labels.into_iter().cloned().collect();
    }

    /// The languages, sorted: language index `l` of a draw indexes this.
    pub fn languages(&self) -> Vec<String> {
        self.langs.iter().map(|l| l.lang.clone()).collect()
    }

    /// Records per language, in [`ShardIndex::languages`] order: the sampler's sizes.
    pub fn sizes(&self) -> Vec<u64> {
        self.langs.iter().map(LangShards::records).collect()
    }

    /// All records.
    pub fn records(&self) -> u64 {
        self.sizes().iter().sum()
    }

    /// All bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.langs
            .iter()
            .flat_map(|l| &l.files)
            .map(|f| f.bytes)
            .sum()
    }
}
