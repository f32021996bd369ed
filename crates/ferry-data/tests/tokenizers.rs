//! Tokenizers: loading a real one, training all three kinds on the UDHR corpus, and checking
//! both against Python `tokenizers` (the reference implementation) on the same texts.

use std::path::Path;

use ferry_data::corpus::{self, CorpusOptions};
use ferry_data::lang::LangTagStyle;
use ferry_data::sampling::{ByLanguage, LanguageSampler, SamplerConfig};
use ferry_data::tokenize::train::{self, Kind, TrainSpec};
use ferry_data::tokenize::{thread_pool, Tokenizer};
use ferry_data::Record;
use ferry_testkit::{minilm, python_with, repo_root, run_python};

fn udhr(split: &str) -> Vec<Record> {
    let path = repo_root().join(format!("corpora/udhr/{split}.tsv"));
    corpus::open(path, &CorpusOptions::default())
        .unwrap()
        .read_all()
        .unwrap()
        .0
}

/// Encodes the texts in `texts_file` (one per line) with Python `tokenizers` and returns the
/// ids, one line of space-separated ids per text.
fn python_ids(tokenizer: &Path, texts_file: &Path) -> Option<Vec<Vec<u32>>> {
    let py = python_with("tokenizers")?;
    let out = run_python(
        &py,
        "import sys, tokenizers\n\
         t = tokenizers.Tokenizer.from_file(sys.argv[1])\n\
         t.no_padding()\n\
         texts = open(sys.argv[2], encoding='utf-8').read().split('\\n')\n\
         for e in t.encode_batch(texts):\n    print(' '.join(map(str, e.ids)))\n",
        &[tokenizer, texts_file],
    );
    Some(
        out.lines()
            .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
            .collect(),
    )
}

fn texts_file(dir: &Path, records: &[Record]) -> std::path::PathBuf {
    let p = dir.join("texts.txt");
    let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
    std::fs::write(&p, texts.join("\n")).unwrap();
    p
}

#[test]
fn minilm_tokenizer_matches_python_on_47_languages_whatever_the_threads() {
    let Some(dir) = minilm() else { return };
    let tok = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    assert_eq!(tok.pad_id(), 0);
    let records = udhr("dev");
    let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
    let one = tok
        .encode_all(&texts, true, &thread_pool(1).unwrap())
        .unwrap();
    let two = tok
        .encode_all(&texts, true, &thread_pool(2).unwrap())
        .unwrap();
    assert_eq!(one, two);
    // The file pads to 128; ferry leaves padding to the batcher, so lengths vary.
    assert!(one.iter().any(|ids| ids.len() < 128));
    let tmp = tempfile::tempdir().unwrap();
    if let Some(want) = python_ids(
        &dir.join("tokenizer.json"),
        &texts_file(tmp.path(), &records),
    ) {
        assert_eq!(one, want);
    }
}

fn balanced_texts(records: &[Record], n: u64) -> Vec<String> {
    let by_lang = ByLanguage::new(records.iter().cloned());
    let cfg = SamplerConfig {
        alpha: 0.3,
        epoch_size: Some(n),
        seed: 1,
        ..Default::default()
    };
    LanguageSampler::new(by_lang.sizes(), cfg)
        .unwrap()
        .map(|d| by_lang.get(d).text.clone())
        .collect()
}

#[test]
fn trained_tokenizers_load_in_python_and_encode_identically() {
    let train_records = udhr("train");
    let texts = balanced_texts(&train_records, 3000);
    let test = udhr("test");
    let tmp = tempfile::tempdir().unwrap();
    let test_file = texts_file(tmp.path(), &test);
    for (kind, vocab) in [
        (Kind::Bpe, 3000),
        (Kind::Unigram, 3000),
        (Kind::WordPiece, 3000),
    ] {
        let spec = TrainSpec {
            kind,
            vocab_size: vocab,
            min_frequency: 2,
            nfkc: true,
            byte_fallback: true,
            lang_tags: Some((LangTagStyle::Fairseq, vec!["en".into(), "de".into()])),
        };
        let tok = train::train(&spec, texts.iter()).unwrap();
        assert!(
            tok.vocab_size() <= vocab + 300,
            "{kind:?}: {}",
            tok.vocab_size()
        );
        tok.token_id("__en__").unwrap();
        let path = tmp.path().join(format!("{kind:?}.json"));
        train::save(&tok, &path).unwrap();
        let loaded = Tokenizer::from_file(&path).unwrap();
        let ours: Vec<Vec<u32>> = test
            .iter()
            .map(|r| loaded.encode(&r.text, true).unwrap())
            .collect();
        // Held-out articles in every script tokenize without unknown tokens (byte fallback)
        // except for WordPiece, which has none and may use [UNK] rarely.
        let unk = loaded
            .token_id(if kind == Kind::WordPiece {
                "[UNK]"
            } else {
                "<unk>"
            })
            .unwrap();
        let unks = ours.iter().flatten().filter(|&&i| i == unk).count();
        if kind != Kind::WordPiece {
            assert_eq!(unks, 0, "{kind:?}");
            let emoji = loaded.tokens("🦀", false).unwrap();
            assert!(emoji.iter().any(|t| t == "<0xF0>"), "{kind:?}: {emoji:?}");
        }
        let mean = ours.iter().map(Vec::len).sum::<usize>() as f64 / ours.len() as f64;
        assert!(mean > 10.0 && mean < 400.0, "{kind:?}: mean length {mean}");
        if let Some(want) = python_ids(&path, &test_file) {
            assert_eq!(ours, want, "{kind:?}");
        }
        // Deterministic: training again gives the same file for BPE; the same pieces for
        // Unigram and WordPiece (whose ids vary, see `train::train`).
        let again = train::train(&spec, texts.iter()).unwrap();
        if kind != Kind::Bpe {
            let mut a: Vec<String> = again.hf().unwrap().get_vocab(true).into_keys().collect();
            let mut b: Vec<String> = tok.hf().unwrap().get_vocab(true).into_keys().collect();
            a.sort();
            b.sort();
            assert!(a == b, "{kind:?}: a second training learned other pieces");
        } else {
            let same = again.hf().unwrap().to_string(false).unwrap()
                == tok.hf().unwrap().to_string(false).unwrap();
            assert!(
                same,
                "{kind:?}: a second training gave a different tokenizer"
            );
        }
    }
}

#[test]
fn bad_tokenizer_files_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("tokenizer.json");
    std::fs::write(&p, "{\"model\": 3").unwrap();
    let err = Tokenizer::from_file(&p).err().unwrap().to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("cannot load"),
        "{err}"
    );
    let spec = TrainSpec {
        kind: Kind::Bpe,
        vocab_size: 100,
        min_frequency: 1,
        nfkc: true,
        byte_fallback: true,
        lang_tags: None,
    };
    let err = train::train(&spec, ["a"].iter()).err().unwrap().to_string();
    assert!(err.contains("256 byte tokens"), "{err}");
}
