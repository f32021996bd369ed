//! Every corpus reader against the reference values the Python fixture script
//! (`scripts/make_data_fixtures.py`) computed with independent readers.

use std::collections::BTreeMap;
use std::path::Path;

use ferry_data::corpus::{self, Column, CorpusOptions, Format};
use ferry_data::issues::{IssueKind, OnError};
use ferry_data::{Error, Record};
use ferry_testkit::{fixture, hex};
use sha2::{Digest, Sha256};

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("data/REFERENCE.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Checks records against a REFERENCE.json entry: count, languages, bytes, hash, labels.
fn check(records: &[Record], want: &serde_json::Value, what: &str) {
    assert_eq!(
        records.len() as u64,
        want["records"].as_u64().unwrap(),
        "{what}: records"
    );
    let mut langs: BTreeMap<String, u64> = BTreeMap::new();
    for r in records {
        *langs.entry(r.lang.clone()).or_default() += 1;
    }
    let want_langs: BTreeMap<String, u64> = serde_json::from_value(want["langs"].clone()).unwrap();
    assert_eq!(langs, want_langs, "{what}: languages");
    let joined: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
    let joined = joined.join("\n");
    assert_eq!(
        records.iter().map(|r| r.text.len() as u64).sum::<u64>(),
        want["text_bytes"].as_u64().unwrap(),
        "{what}: text bytes"
    );
    assert_eq!(
        hex(&Sha256::digest(joined.as_bytes())),
        want["text_sha256"].as_str().unwrap(),
        "{what}: text hash"
    );
    if let Some(sum) = want["label_sum"].as_u64() {
        let got: u64 = records
            .iter()
            .map(|r| r.label.as_deref().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(got, sum, "{what}: labels");
    }
}

fn read(path: &Path, opts: &CorpusOptions) -> Vec<Record> {
    let (records, issues) = corpus::open(path, opts).unwrap().read_all().unwrap();
    assert_eq!(issues.total(), 0, "{}: {issues}", path.display());
    records
}

#[test]
fn delimited_jsonl_and_parquet_match_the_reference() {
    let refs = reference();
    for (file, format) in [
        ("tsv/corpus.tsv", Format::Tsv),
        ("tsv/corpus.csv", Format::Csv),
        ("jsonl/corpus.jsonl", Format::Jsonl),
        ("jsonl/corpus.jsonl.gz", Format::Jsonl),
        ("parquet/corpus.parquet", Format::Parquet),
    ] {
        let path = fixture(&format!("data/{file}"));
        assert_eq!(corpus::detect(&path).unwrap(), format, "{file}");
        check(
            &read(&path, &CorpusOptions::default()),
            &refs["files"][file],
            file,
        );
    }
    let opts = CorpusOptions {
        text: Column::Index(0),
        lang: Some(Column::Index(1)),
        label: None,
        ..Default::default()
    };
    check(
        &read(&fixture("data/tsv/noheader.tsv"), &opts),
        &refs["files"]["tsv/noheader.tsv"],
        "noheader",
    );
}

#[test]
fn a_named_column_without_a_header_says_how_to_fix_it() {
    let err = corpus::open(fixture("data/tsv/noheader.tsv"), &CorpusOptions::default())
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("noheader.tsv") && err.contains("--text-col"),
        "{err}"
    );
}

#[test]
fn folder_per_language_reads_gz_and_plain_files() {
    let refs = reference();
    let dir = fixture("data/by_lang");
    assert_eq!(corpus::detect(&dir).unwrap(), Format::ByLang);
    let records = read(&dir, &CorpusOptions::default());
    let mut start = 0;
    for file in [
        "ar/part-0.txt",
        "en/part-0.txt",
        "en/part-1.txt.gz",
        "ru/part-0.txt",
        "zh/part-0.txt",
    ] {
        let want = &refs["files"][format!("by_lang/{file}")];
        let n = want["records"].as_u64().unwrap() as usize;
        check(&records[start..start + n], want, file);
        assert!(records[start].loc.file.ends_with(file));
        start += n;
    }
    assert_eq!(start, records.len());
}

#[test]
fn moses_parallel_and_monolingual() {
    let refs = reference();
    let dir = fixture("data/moses");
    assert_eq!(corpus::detect(&dir).unwrap(), Format::Moses);
    for split in ["train", "val", "test"] {
        let opts = CorpusOptions {
            split: split.into(),
            pair: Some(("de".into(), "en".into())),
            ..Default::default()
        };
        let pairs = read(&dir, &opts);
        let de: Vec<Record> = pairs
            .iter()
            .map(|r| Record {
                target: None,
                ..r.clone()
            })
            .collect();
        check(&de, &refs["files"][format!("moses/{split}.de")], split);
        let en: Vec<Record> = pairs
            .iter()
            .map(|r| {
                let t = r.target.clone().unwrap();
                Record {
                    text: t.text,
                    lang: t.lang,
                    target: None,
                    ..r.clone()
                }
            })
            .collect();
        check(&en, &refs["files"][format!("moses/{split}.en")], split);
        let mono = read(
            &dir,
            &CorpusOptions {
                split: split.into(),
                ..Default::default()
            },
        );
        assert_eq!(mono.len(), pairs.len() * 2);
    }
    let opts = CorpusOptions {
        pair: Some(("de".into(), "fr".into())),
        ..Default::default()
    };
    let err = corpus::open(&dir, &opts).err().unwrap().to_string();
    assert!(err.contains("train.fr") && err.contains("\"de\""), "{err}");
}

#[test]
fn misaligned_parallel_files_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.de"), "a\nb\nc\n").unwrap();
    std::fs::write(dir.path().join("train.en"), "a\nb\n").unwrap();
    let opts = CorpusOptions {
        pair: Some(("de".into(), "en".into())),
        ..Default::default()
    };
    let r: Result<Vec<Record>, Error> = corpus::open(dir.path(), &opts).unwrap().collect();
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("train.en") && err.contains("same number of lines"),
        "{err}"
    );
}

#[test]
fn malformed_lines_are_counted_with_their_location() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("data/bad/EXPECTED.json")).unwrap())
            .unwrap();
    let path = fixture("data/bad/corpus.tsv");
    let (records, issues) = corpus::open(&path, &CorpusOptions::default())
        .unwrap()
        .read_all()
        .unwrap();
    check(&records, &reference()["files"]["bad/corpus.tsv"], "bad");
    let mut got: Vec<(u64, &str)> = issues
        .examples()
        .map(|i| (i.loc.line, i.kind.name()))
        .collect();
    got.sort();
    let want: Vec<(u64, &str)> = expected["bad_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["line"].as_u64().unwrap(), b["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(issues.total(), 6);
    assert_eq!(issues.count(IssueKind::WrongColumns), 2);
    let summary = issues.to_string();
    assert!(
        summary.contains("skipped 6") && summary.contains("corpus.tsv:4"),
        "{summary}"
    );

    // --on-error fail stops at the first one, naming file:line and the fix.
    let opts = CorpusOptions {
        on_error: OnError::Fail,
        ..Default::default()
    };
    let r: Result<Vec<Record>, Error> = corpus::open(&path, &opts).unwrap().collect();
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("corpus.tsv:4: wrong_columns: expected 3 columns, found"),
        "{err}"
    );
}

#[test]
fn udhr_corpus_is_readable_and_has_30_plus_languages() {
    let root = ferry_testkit::repo_root();
    let (records, issues) = corpus::open(
        root.join("corpora/udhr/train.tsv"),
        &CorpusOptions::default(),
    )
    .unwrap()
    .read_all()
    .unwrap();
    assert_eq!(issues.total(), 0, "{issues}");
    let langs: std::collections::BTreeSet<&str> = records.iter().map(|r| r.lang.as_str()).collect();
    assert!(langs.len() >= 30, "{langs:?}");
    for close in [
        "es", "ca", "gl", "pt", "da", "nb", "sv", "cs", "sk", "ru", "uk", "be",
    ] {
        assert!(langs.contains(close), "{close}");
    }
}

#[test]
fn garbage_and_truncated_files_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("x.parquet");
    let good = std::fs::read(fixture("data/parquet/corpus.parquet")).unwrap();
    std::fs::write(&pq, &good[..good.len() / 2]).unwrap();
    let err = corpus::open(&pq, &CorpusOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("x.parquet"), "{err}");
    let gz = dir.path().join("x.jsonl.gz");
    let good = std::fs::read(fixture("data/jsonl/corpus.jsonl.gz")).unwrap();
    std::fs::write(&gz, &good[..good.len() / 2]).unwrap();
    // Format detection already reads into the stream, so the error may come from `open`.
    let r: Result<Vec<Record>, Error> =
        corpus::open(&gz, &CorpusOptions::default()).and_then(|c| c.collect());
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("x.jsonl.gz") && err.contains("deflate"),
        "{err}"
    );
    let bin = dir.path().join("x.bin");
    std::fs::write(&bin, [0u8, 1, 2, 3, 255]).unwrap();
    assert!(corpus::open(&bin, &CorpusOptions::default()).is_err());
}
