//! Splitting any corpus into a folder per language (`OUT/<lang>/part-00000.jsonl`, one JSON
//! record per line with its text and label): the layout a stream reads each language from.
//! One pass; memory holds one record and a write buffer per language. The folder is written
//! beside its target and moved into place at the end, so an interrupted split leaves no
//! half-written corpus.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::index::{LangShards, LineKind, ShardFile, ShardIndex, MAX_LABELS};
use crate::error::{Error, Result};
use crate::record::Record;

/// Bytes per part file before the next one starts.
pub const PART_BYTES: u64 = 256 << 20;

/// One language's part files: the open one and those finished, as (file name, records).
struct Parts {
    dir: PathBuf,
    writer: BufWriter<File>,
    number: usize,
    bytes: u64,
    records: u64,
    done: Vec<(String, u64)>,
}

fn part_name(n: usize) -> String {
    format!("part-{n:05}.jsonl")
}

impl Parts {
    /// Starts `dir/part-00000.jsonl`.
    fn create(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let writer = Parts::open(&dir, 0)?;
        Ok(Parts {
            dir,
            writer,
            number: 0,
            bytes: 0,
            records: 0,
            done: Vec::new(),
        })
    }

    fn open(dir: &Path, n: usize) -> Result<BufWriter<File>> {
        let path = dir.join(part_name(n));
        let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(BufWriter::with_capacity(1 << 16, f))
    }

    fn path(&self) -> PathBuf {
        self.dir.join(part_name(self.number))
    }

    /// Appends one line, starting the next part first when this one holds `part_bytes`.
    fn append(&mut self, line: &str, part_bytes: u64) -> Result<()> {
        if self.bytes >= part_bytes {
            self.writer.flush().map_err(|e| Error::io(self.path(), e))?;
            self.done.push((part_name(self.number), self.records));
            self.number += 1;
            self.writer = Parts::open(&self.dir, self.number)?;
            (self.bytes, self.records) = (0, 0);
        }
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(self.path(), e))?;
        self.bytes += line.len() as u64;
        self.records += 1;
        Ok(())
    }

    /// Flushes and syncs the open part; returns every part as (file name, records).
    fn finish(mut self) -> Result<Vec<(String, u64)>> {
        let path = self.path();
        self.writer.flush().map_err(|e| Error::io(&path, e))?;
        self.writer
            .get_ref()
            .sync_all()
            .map_err(|e| Error::io(&path, e))?;
        self.done.push((part_name(self.number), self.records));
        Ok(self.done)
    }
}

/// Whether a language label can name a folder.
fn folder_name_ok(lang: &str) -> bool {
    !lang.is_empty()
        && lang != "."
        && lang != ".."
        && !lang.starts_with('.')
        && !lang.contains(['/', '\\', '\0'])
}

/// A record as a shard line: `{"text": ..., "label": ...}` and a newline.
fn line(r: &Record) -> String {
    let mut line = match &r.label {
        Some(l) => serde_json::json!({"text": r.text, "label": l}),
        None => serde_json::json!({"text": r.text}),
    }
    .to_string();
    line.push('\n');
    line
}

/// Checks what a record needs to be written: a language that can name a folder, a label that
/// does not push the distinct labels past [`MAX_LABELS`].
fn check(r: &Record, labels: &mut BTreeSet<String>) -> Result<()> {
    if !folder_name_ok(&r.lang) {
        return Err(Error::malformed(
            &*r.loc.file,
            format!(
                "line {}: the language label {:?} cannot name a folder",
                r.loc.line, r.lang
            ),
        ));
    }
    if let Some(l) = &r.label {
        if labels.len() >= MAX_LABELS && !labels.contains(l) {
            return Err(Error::malformed(
                &*r.loc.file,
                format!(
                    "has more than {MAX_LABELS} distinct labels: the label column should name a \
                     class"
                ),
            ));
        }
        labels.insert(l.clone());
    }
    Ok(())
}

/// Writes `records` as a folder per language at `out` (which must not exist), parts of at
/// most `part_bytes`; `progress` gets the records written. Returns the index of what was
/// written.
pub fn write_shards(
    records: impl Iterator<Item = Result<Record>>,
    out: &Path,
    part_bytes: u64,
    mut progress: impl FnMut(u64),
) -> Result<ShardIndex> {
    if out.exists() {
        return Err(Error::malformed(
            out,
            "already exists; remove it or choose another --out",
        ));
    }
    let name = out
        .file_name()
        .ok_or_else(|| Error::malformed(out, "is not a folder path"))?
        .to_string_lossy()
        .into_owned();
    let staging = ferry_io::atomic::staging_folder(ferry_io::atomic::parent_dir(out), &name)?;
    let mut parts: BTreeMap<String, Parts> = BTreeMap::new();
    let mut labels = BTreeSet::new();
    let mut by_lang: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unlabeled: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut n = 0u64;
    for r in records {
        let r = r?;
        check(&r, &mut labels)?;
        if !parts.contains_key(&r.lang) {
            let p = Parts::create(staging.path().join(&r.lang))?;
            parts.insert(r.lang.clone(), p);
        }
        let p = parts.get_mut(&r.lang).expect("inserted above");
        p.append(&line(&r), part_bytes)?;
        if let Some(l) = &r.label {
            if !by_lang.get(&r.lang).is_some_and(|s| s.contains(l)) {
                by_lang.entry(r.lang.clone()).or_default().insert(l.clone());
            }
        }
        if r.label.is_none() {
            let u = unlabeled
                .entry(r.lang.clone())
                .or_insert_with(|| (0, r.loc.to_string()));
            u.0 += 1;
        }
        n += 1;
        if n.is_multiple_of(65_536) {
            progress(n);
        }
    }
    progress(n);
    if parts.is_empty() {
        return Err(Error::Invalid(
            "the corpus has no records to split by language".into(),
        ));
    }
    let written = parts
        .into_iter()
        .map(|(lang, p)| Ok((lang, p.finish()?)))
        .collect::<Result<Vec<_>>>()?;
    let staged = staging.keep();
    std::fs::rename(&staged, out).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        Error::io(out, e)
    })?;
    index_of(out, written, labels, by_lang, unlabeled)
}

/// The index of a folder just written: `written` holds each language's parts.
fn index_of(
    out: &Path,
    written: Vec<(String, Vec<(String, u64)>)>,
    labels: BTreeSet<String>,
    mut by_lang: BTreeMap<String, BTreeSet<String>>,
    mut unlabeled: BTreeMap<String, (u64, String)>,
) -> Result<ShardIndex> {
    let mut langs = Vec::new();
    for (lang, parts) in written {
        let mut files = Vec::new();
        for (file, records) in parts {
            let path = out.join(&lang).join(file);
            let (bytes, modified) = ShardFile::stat(&path)?;
            files.push(ShardFile {
                path,
                kind: LineKind::Json,
                bytes,
                modified,
                records,
            });
        }
        let (unlabeled, first_unlabeled) = match unlabeled.remove(&lang) {
            Some((n, at)) => (n, Some(at)),
            None => (0, None),
        };
        let lang_labels = by_lang.remove(&lang).unwrap_or_default();
        langs.push(LangShards {
            lang,
            files,
            skipped: 0,
            unlabeled,
            first_unlabeled,
            labels: lang_labels.into_iter().collect(),
        });
    }
    Ok(ShardIndex {
        root: out.to_path_buf(),
        langs,
        labels: labels.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{self, CorpusOptions};

    #[test]
    fn a_mixed_corpus_splits_by_language_and_indexes_like_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let tsv = dir.path().join("c.tsv");
        let mut text = String::from("lang\ttext\tlabel\n");
        for i in 0..300 {
            let lang = ["de", "en", "fr"][i % 3];
            text += &format!("{lang}\tsatz nummer {i}\t{}\n", i % 2);
        }
        std::fs::write(&tsv, text).unwrap();
        let out = dir.path().join("shards");
        let reader = corpus::open(&tsv, &CorpusOptions::default()).unwrap();
        let index = write_shards(reader, &out, 1000, |_| {}).unwrap();
        assert_eq!(index.languages(), ["de", "en", "fr"]);
        assert_eq!(index.sizes(), [100, 100, 100]);
        assert_eq!(index.labels, ["0", "1"]);
        assert_eq!(index.langs[0].labels, ["0", "1"]);
        assert!(
            index.langs[0].files.len() > 1,
            "parts roll over at the size given"
        );
        let scanned = ShardIndex::scan(&out, |_| {}).unwrap();
        assert_eq!(scanned, index);
        index.check().unwrap();
        let first = std::fs::read_to_string(out.join("de/part-00000.jsonl")).unwrap();
        assert_eq!(
            first.lines().next().unwrap(),
            r#"{"text":"satz nummer 0","label":"0"}"#
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "no staging folder is left");
        let again = corpus::open(&tsv, &CorpusOptions::default()).unwrap();
        let err = write_shards(again, &out, 1000, |_| {}).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    #[test]
    fn keeping_some_languages_keeps_their_labels_only() {
        let dir = tempfile::tempdir().unwrap();
        let tsv = dir.path().join("c.tsv");
        std::fs::write(&tsv, "lang\ttext\tlabel\nde\teins\ta\nfr\tun\tb\n").unwrap();
        let reader = corpus::open(&tsv, &CorpusOptions::default()).unwrap();
        let mut index = write_shards(reader, &dir.path().join("s"), PART_BYTES, |_| {}).unwrap();
        assert_eq!(index.labels, ["a", "b"]);
        index.retain_languages(&["de".to_string()]);
        assert_eq!(index.labels, ["a"]);
        let mut scanned = ShardIndex::scan(&dir.path().join("s"), |_| {}).unwrap();
        scanned.retain_languages(&["fr".to_string()]);
        assert_eq!(scanned.labels, ["b"]);
    }

    #[test]
    fn an_unusable_language_label_is_an_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tsv = dir.path().join("c.tsv");
        std::fs::write(&tsv, "lang\ttext\nde\tein satz\n..\tboom\n").unwrap();
        let out = dir.path().join("shards");
        let reader = corpus::open(&tsv, &CorpusOptions::default()).unwrap();
        let err = write_shards(reader, &out, PART_BYTES, |_| {}).unwrap_err();
        assert!(err.to_string().contains("cannot name a folder"), "{err}");
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
