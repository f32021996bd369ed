//! Every corpus reader against the reference values the Python fixture script
//! (`scripts/make_data_fixtures.py`) computed with independent readers.

use std::collections::BTreeMap;
use std::path::Path;

use ferry_data::corpus::{self, Column, CorpusFormat, CorpusOptions};
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
        ("tsv/corpus.tsv", CorpusFormat::Tsv),
        ("tsv/corpus.csv", CorpusFormat::Csv),
        ("jsonl/corpus.jsonl", CorpusFormat::Jsonl),
        ("jsonl/corpus.jsonl.gz", CorpusFormat::Jsonl),
        ("parquet/corpus.parquet", CorpusFormat::Parquet),
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
    assert_eq!(corpus::detect(&dir).unwrap(), CorpusFormat::ByLang);
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
    assert_eq!(corpus::detect(&dir).unwrap(), CorpusFormat::Moses);
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
    // Strict language checking drops the `xx-notalang` line too: exactly the bad lines the
    // fixture script lists.
    let strict = CorpusOptions {
        strict_languages: true,
        ..Default::default()
    };
    let (records, issues) = corpus::open(&path, &strict).unwrap().read_all().unwrap();
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
    assert_eq!(issues.warnings(), 0);
    let summary = issues.to_string();
    assert!(
        summary.starts_with(
            "dropped 6 records: 2 wrong_columns, 1 invalid_utf8, 2 empty_text, 1 unknown_lang\n"
        ) && summary.contains("corpus.tsv:4"),
        "{summary}"
    );

    // By default the `xx-notalang` record is kept, with a warning naming its line.
    let (records, issues) = corpus::open(&path, &CorpusOptions::default())
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(records.len(), 11);
    assert!(records.iter().any(|r| r.lang == "xx-notalang"));
    assert_eq!(issues.total(), 5);
    assert_eq!(issues.count(IssueKind::UnknownLang), 0);
    assert_eq!(issues.warning_count(IssueKind::UnknownLang), 1);
    let w: Vec<&ferry_data::issues::Issue> = issues.warning_examples().collect();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].loc.line, 12);
    assert_eq!(
        issues.warning_summary().unwrap(),
        "kept 1 records with warnings: 1 unknown_lang"
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

/// A UDHR-style TSV: the UDHR's own language codes, `ell_monotonic` among ISO 639-3 ones.
fn udhr_style_tsv(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("udhr-style.tsv");
    std::fs::write(
        &path,
        "lang\ttext\n\
         eng\tAll human beings are born free and equal in dignity and rights.\n\
         ell_monotonic\tΌλοι οι άνθρωποι γεννιούνται ελεύθεροι και ίσοι στην αξιοπρέπεια.\n\
         fra\tTous les êtres humains naissent libres et égaux en dignité et en droits.\n\
         ell_monotonic\tΚαθένας έχει δικαίωμα στη ζωή, την ελευθερία και την ασφάλεια.\n\
         eng\tEveryone has the right to life, liberty and security of person.\n",
    )
    .unwrap();
    path
}

#[test]
fn any_language_label_is_a_class_and_strict_mode_drops_non_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = udhr_style_tsv(dir.path());
    let (records, issues) = corpus::open(&path, &CorpusOptions::default())
        .unwrap()
        .read_all()
        .unwrap();
    let langs: std::collections::BTreeSet<&str> = records.iter().map(|r| r.lang.as_str()).collect();
    assert_eq!(
        langs.into_iter().collect::<Vec<_>>(),
        ["ell_monotonic", "eng", "fra"]
    );
    assert_eq!(issues.total(), 0, "{issues}");
    assert_eq!(issues.warning_count(IssueKind::UnknownLang), 2);
    // A label repeated on many lines is listed once, at its first line.
    let w: Vec<&ferry_data::issues::Issue> = issues.warning_examples().collect();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].loc.line, 3);
    assert!(w[0].detail.contains("\"ell_monotonic\""), "{}", w[0].detail);
    assert_eq!(issues.to_json()["warnings"], 2);
    assert_eq!(issues.to_json()["dropped"], 0);

    let strict = CorpusOptions {
        strict_languages: true,
        ..Default::default()
    };
    let (records, issues) = corpus::open(&path, &strict).unwrap().read_all().unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.lang != "ell_monotonic"));
    assert_eq!(issues.count(IssueKind::UnknownLang), 2);
    assert_eq!(
        issues.summary().unwrap(),
        "dropped 2 records: 2 unknown_lang"
    );
    // Strict and --on-error fail: the first one stops the read, naming file:line.
    let fail = CorpusOptions {
        on_error: OnError::Fail,
        ..strict
    };
    let r: Result<Vec<Record>, Error> = corpus::open(&path, &fail).unwrap().collect();
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("udhr-style.tsv:3: unknown_lang: \"ell_monotonic\""),
        "{err}"
    );
}

#[test]
fn unusable_language_labels_are_dropped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.tsv");
    let long = "x".repeat(65);
    std::fs::write(
        &path,
        format!("lang\ttext\n \tno label\nen\x07\ta bell\n{long}\ttoo long\n eng \ttrimmed\n"),
    )
    .unwrap();
    let (records, issues) = corpus::open(&path, &CorpusOptions::default())
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].lang, "eng", "labels are trimmed");
    assert_eq!(issues.count(IssueKind::InvalidLang), 3);
    let details: Vec<String> = issues.examples().map(|i| i.to_string()).collect();
    assert!(details[0].contains("labels.tsv:2") && details[0].contains("empty"));
    assert!(details[1].contains("labels.tsv:3") && details[1].contains("control character"));
    assert!(details[2].contains("labels.tsv:4") && details[2].contains("65 bytes"));
    assert_eq!(
        issues.summary().unwrap(),
        "dropped 3 records: 3 invalid_lang"
    );
}

#[test]
fn moses_files_and_language_folders_with_any_label_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let moses = dir.path().join("moses");
    std::fs::create_dir(&moses).unwrap();
    std::fs::write(moses.join("train.eng"), "one\ntwo\n").unwrap();
    std::fs::write(moses.join("train.ell_monotonic"), "ένα\nδύο\n").unwrap();
    std::fs::write(moses.join("train.eng.bak"), "old\n").unwrap();
    assert_eq!(corpus::detect(&moses).unwrap(), CorpusFormat::Moses);
    let (records, issues) = corpus::open(&moses, &CorpusOptions::default())
        .unwrap()
        .read_all()
        .unwrap();
    let langs: Vec<&str> = records.iter().map(|r| r.lang.as_str()).collect();
    assert_eq!(langs, ["ell_monotonic", "ell_monotonic", "eng", "eng"]);
    assert_eq!(issues.warnings(), 2);
    let opts = CorpusOptions {
        pair: Some(("ell_monotonic".into(), "eng".into())),
        ..Default::default()
    };
    let (pairs, _) = corpus::open(&moses, &opts).unwrap().read_all().unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].target.as_ref().unwrap().lang, "eng");

    let by_lang = dir.path().join("by_lang");
    for (sub, text) in [
        ("ell_monotonic", "ένα\n"),
        ("eng", "one\n"),
        (".git", "x\n"),
    ] {
        std::fs::create_dir_all(by_lang.join(sub)).unwrap();
        std::fs::write(by_lang.join(sub).join("part-0.txt"), text).unwrap();
    }
    let opts = CorpusOptions {
        strict_languages: true,
        ..Default::default()
    };
    let (records, issues) = corpus::open(&by_lang, &opts).unwrap().read_all().unwrap();
    let langs: Vec<&str> = records.iter().map(|r| r.lang.as_str()).collect();
    assert_eq!(langs, ["eng"], "hidden folders are not languages");
    assert_eq!(issues.count(IssueKind::UnknownLang), 1);
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
    // CorpusFormat detection already reads into the stream, so the error may come from `open`.
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
