//! `ferry data` end to end, as a user runs it from the README.

mod support;

use ferry_testkit::{fixture, repo_root};
use support::{ferry, json, ok};

#[test]
fn stats_counts_languages_scripts_and_skipped_lines() {
    let root = repo_root();
    let out = ferry(
        &["data", "stats", "corpora/udhr/train.tsv", "--json"],
        &root,
    );
    let j = json(&out);
    assert_eq!(j["records"], 1998);
    assert!(j["languages"].as_u64().unwrap() >= 30);
    assert_eq!(j["per_language"]["ru"]["main_script"], "Cyrillic");
    assert_eq!(j["per_language"]["zh"]["main_script"], "Han");
    assert_eq!(j["per_language"]["el"]["main_script"], "Greek");
    assert_eq!(j["issues"]["dropped"], 0);
    assert_eq!(j["issues"]["warnings"], 0);

    let bad = fixture("data/bad/corpus.tsv");
    let out = ferry(&["data", "stats", bad.to_str().unwrap(), "--json"], &root);
    let j = json(&out);
    // The `xx-notalang` line is kept as a class, with a warning.
    assert_eq!(j["records"], 11);
    assert_eq!(j["issues"]["dropped"], 5);
    assert_eq!(j["issues"]["warnings_by_kind"]["unknown_lang"]["count"], 1);
    assert_eq!(j["issues"]["by_kind"]["wrong_columns"]["count"], 2);
    assert!(j["issues"]["by_kind"]["invalid_utf8"]["first"][0]
        .as_str()
        .unwrap()
        .contains("corpus.tsv:7"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "corpus.tsv: dropped 5 records: 2 wrong_columns, 1 invalid_utf8, 2 empty_text\n"
        ),
        "{err}"
    );
    let j = json(&ferry(
        &[
            "data",
            "stats",
            bad.to_str().unwrap(),
            "--strict-languages",
            "--json",
        ],
        &root,
    ));
    assert_eq!(j["records"], 10);
    assert_eq!(j["issues"]["dropped"], 6);
    assert_eq!(j["issues"]["by_kind"]["unknown_lang"]["count"], 1);
    let out = ferry(
        &["data", "stats", bad.to_str().unwrap(), "--on-error", "fail"],
        &root,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corpus.tsv:4: wrong_columns"), "{err}");
}

#[test]
fn sample_balances_languages_and_writes_atomically() {
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    let out_tsv = dir.path().join("balanced.tsv");
    let args = [
        "data",
        "sample",
        "corpora/udhr/train.tsv",
        "--alpha",
        "0",
        "--size",
        "4700",
        "--seed",
        "1",
        "--out",
        out_tsv.to_str().unwrap(),
        "--json",
    ];
    let j = json(&ferry(&args, &root));
    assert_eq!(j["draws"], 4700);
    for l in j["languages"].as_array().unwrap() {
        let share = l["drawn_share"].as_f64().unwrap();
        assert!((share - 1.0 / 47.0).abs() < 0.01, "{l}");
    }
    let written = std::fs::read_to_string(&out_tsv).unwrap();
    assert_eq!(written.lines().count(), 4701);
    // The written sample is itself a corpus ferry reads.
    let j = json(&ferry(
        &["data", "stats", out_tsv.to_str().unwrap(), "--json"],
        &root,
    ));
    assert_eq!(j["records"], 4700);
    // Same seed, same sample.
    let again = dir.path().join("again.tsv");
    let mut args2 = args;
    args2[10] = again.to_str().unwrap();
    ok(&ferry(&args2, &root));
    assert_eq!(std::fs::read(&again).unwrap(), written.as_bytes());
    // --dry-run writes nothing.
    let dry = dir.path().join("dry.tsv");
    ok(&ferry(
        &[
            "data",
            "sample",
            "corpora/udhr/train.tsv",
            "--out",
            dry.to_str().unwrap(),
            "--dry-run",
        ],
        &root,
    ));
    assert!(!dry.exists());
}

#[test]
fn train_a_tokenizer_then_batch_a_parallel_corpus_with_language_tags() {
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok.json");
    let j = json(&ferry(
        &[
            "data",
            "tokenizer",
            "train",
            "corpora/udhr/train.tsv",
            "--kind",
            "bpe",
            "--vocab-size",
            "2000",
            "--lang-tags",
            "fairseq",
            "--out",
            tok.to_str().unwrap(),
            "--json",
        ],
        &root,
    ));
    assert!(j["vocab_size"].as_u64().unwrap() <= 2100);
    assert!(
        j["per_language"]["zh"]["tokens_per_record"]
            .as_f64()
            .unwrap()
            > 1.0
    );
    let enc = json(&ferry(
        &[
            "data",
            "tokenizer",
            "encode",
            tok.to_str().unwrap(),
            "__de__ Alle Menschen",
            "--json",
        ],
        &root,
    ));
    assert_eq!(enc["tokens"][1], "__de__");

    let batch = |threads: &str| {
        json(&ferry(
            &[
                "data",
                "batch",
                "corpora/udhr/parallel",
                "--pair",
                "de-en",
                "--tokenizer",
                tok.to_str().unwrap(),
                "--batch-size",
                "4",
                "--lang-tags",
                "fairseq",
                "--threads",
                threads,
                "--json",
            ],
            &root,
        ))
    };
    let j = batch("1");
    assert_eq!(j["records"], 22);
    assert_eq!(j["batches"], 6);
    let tokens = j["tokens"].as_u64().unwrap();
    assert!(j["padded_tokens"].as_u64().unwrap() >= tokens);
    // Output does not depend on the thread count.
    let j2 = batch("2");
    assert_eq!(
        (j2["tokens"].clone(), j2["padded_tokens"].clone()),
        (j["tokens"].clone(), j["padded_tokens"].clone())
    );
    // A tag the tokenizer lacks is a clear error.
    let out = ferry(
        &[
            "data",
            "batch",
            "corpora/udhr/parallel",
            "--pair",
            "de-en",
            "--tokenizer",
            tok.to_str().unwrap(),
            "--lang-tags",
            "mbart",
        ],
        &root,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("de_XX"));
}

#[test]
fn vocab_matches_torchtext_rules() {
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    let v = dir.path().join("vocab.json");
    let j = json(&ferry(
        &[
            "data",
            "vocab",
            "corpora/udhr/parallel",
            "--split",
            "train",
            "--only",
            "en",
            "--min-freq",
            "2",
            "--out",
            v.to_str().unwrap(),
            "--json",
        ],
        &root,
    ));
    assert_eq!(j["first"][0], "<unk>");
    assert_eq!(j["first"][4], "the");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&v).unwrap()).unwrap();
    assert_eq!(
        saved["itos"].as_array().unwrap().len() as u64,
        j["size"].as_u64().unwrap()
    );
}

/// A UDHR-style corpus: the UDHR's own language codes (`ell_monotonic` is not a language
/// code, `eng` and `fra` are ISO 639-3), and one record with an empty text.
fn udhr_style_tsv(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("udhr-style.tsv");
    std::fs::write(
        &path,
        "lang\ttext\n\
         eng\tAll human beings are born free and equal in dignity and rights.\n\
         ell_monotonic\tΌλοι οι άνθρωποι γεννιούνται ελεύθεροι και ίσοι στην αξιοπρέπεια.\n\
         fra\tTous les êtres humains naissent libres et égaux en dignité et en droits.\n\
         ell_monotonic\tΚαθένας έχει δικαίωμα στη ζωή, την ελευθερία και την ασφάλεια.\n\
         eng\t \n",
    )
    .unwrap();
    path
}

#[test]
fn any_language_label_is_a_class_and_every_command_says_what_it_dropped() {
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    let tsv = udhr_style_tsv(dir.path());
    let tsv = tsv.to_str().unwrap();
    let out = ferry(&["data", "stats", tsv, "--json"], &root);
    let j = json(&out);
    assert_eq!(j["languages"], 3);
    assert_eq!(j["per_language"]["ell_monotonic"]["records"], 2);
    assert_eq!(j["per_language"]["ell_monotonic"]["main_script"], "Greek");
    assert_eq!(j["issues"]["dropped"], 1);
    assert_eq!(j["issues"]["warnings"], 2);

    // Every data command that reads the corpus prints the summary: what was dropped and why,
    // then what was kept with a warning.
    let summary = format!("{tsv}: dropped 1 records: 1 empty_text\n");
    for args in [
        vec!["data", "stats", tsv],
        vec!["data", "sample", tsv, "--dry-run"],
        vec!["data", "vocab", tsv],
    ] {
        let out = ferry(&args, &root);
        ok(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(&summary), "{args:?}: {err}");
        assert!(
            err.contains("kept 2 records with warnings: 2 unknown_lang\n")
                && err.contains("udhr-style.tsv:3: \"ell_monotonic\" is not a language code"),
            "{args:?}: {err}"
        );
        let quiet = ferry(&[args.as_slice(), &["--quiet"]].concat(), &root);
        ok(&quiet);
        assert!(quiet.stderr.is_empty(), "{args:?} --quiet");
    }

    // Strict mode drops the label that is not a language code, and says so.
    let out = ferry(
        &["data", "stats", tsv, "--strict-languages", "--json"],
        &root,
    );
    let j = json(&out);
    assert_eq!(j["languages"], 2);
    assert!(j["per_language"].get("ell_monotonic").is_none());
    assert_eq!(j["issues"]["dropped"], 3);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "{tsv}: dropped 3 records: 1 empty_text, 2 unknown_lang\n"
        )),
        "{err}"
    );
    // With --on-error fail too, it stops at the first, naming file:line.
    let out = ferry(
        &[
            "data",
            "stats",
            tsv,
            "--strict-languages",
            "--on-error",
            "fail",
        ],
        &root,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("udhr-style.tsv:3: unknown_lang: \"ell_monotonic\""),
        "{err}"
    );
}
