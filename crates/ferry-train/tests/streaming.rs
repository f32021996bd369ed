//! Streamed training (`[data] stream`) on the repo's UDHR corpus: a corpus that is not a
//! folder per language is split into one, a killed run resumes bit for bit, a changed shard
//! stops the resume, and a naive Bayes start counts the stream exactly as it counts the
//! corpus held in memory.

use std::path::Path;

use ferry_testkit::repo_root;

mod common;
use common::step_losses;
use ferry_train::config::TrainConfig;
use ferry_train::run::{train, RunOptions};

fn config(out: &Path, data: &str, rest: &str) -> TrainConfig {
    let udhr = repo_root().join("corpora/udhr");
    let text = format!(
        r#"
[data]
train = "{train}"
dev = "{dev}"
languages = ["de", "en", "es", "fr", "nl", "ru", "uk"]
{data}

{rest}

[output]
dir = "{out}"
"#,
        train = udhr.join("train.tsv").display(),
        dev = udhr.join("dev.tsv").display(),
        out = out.display(),
    );
    let cfg: TrainConfig = toml::from_str(&text).unwrap();
    cfg.check().unwrap();
    cfg
}

const BAG_RUN: &str = r#"
[tokenizer]
train = { kind = "bpe", vocab_size = 500 }

[model]
kind = "bag"
dim = 16

[optimizer]
kind = "adamw"
lr = 0.02

[schedule]
kind = "linear"
warmup = 2

[train]
steps = 12
batch_size = 8
grad_accum = 2
seed = 3
alpha = 0.5
eval_every = 4
threads = 2
"#;

const STREAM: &str = "max_len = 64\nstream = { window = 40, block = 16 }";

fn opts(stop: Option<u64>, resume: bool) -> RunOptions {
    RunOptions {
        stop_after: stop,
        resume,
        ..RunOptions::default()
    }
}

#[test]
fn a_streamed_run_splits_its_corpus_and_resumes_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let full = train(
        &config(&a, STREAM, BAG_RUN),
        &opts(None, false),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(full.steps, 12);
    // The TSV was split into a folder per language (every language of the file: the run
    // trains on the ones it names).
    for lang in ["de", "ru", "zh"] {
        assert!(a
            .join("shards")
            .join(lang)
            .join("part-00000.jsonl")
            .is_file());
    }
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("shards.json")).unwrap()).unwrap();
    assert!(index["langs"].as_array().unwrap().len() > 40);

    let cfg_b = config(&b, STREAM, BAG_RUN);
    train(&cfg_b, &opts(Some(6), false), &mut |_| {}).unwrap();
    let ckpt = b.join("checkpoints/step-00000004/trainer-state.json");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ckpt).unwrap()).unwrap();
    assert!(
        state["stream"]["readers"].as_array().unwrap().len() == 7,
        "the checkpoint keeps every reader's position: {state}"
    );
    let resumed = train(&cfg_b, &opts(None, true), &mut |_| {}).unwrap();
    assert_eq!(resumed.losses.len(), 8, "resumed from step 4");
    assert_eq!(step_losses(&a), step_losses(&b), "the loss curves differ");
    for f in ["last/model.safetensors", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }

    // The same data in memory is another draw order, so another curve: the stream is not
    // silently falling back to it.
    let c = tmp.path().join("c");
    train(
        &config(&c, "max_len = 64", BAG_RUN),
        &opts(None, false),
        &mut |_| {},
    )
    .unwrap();
    assert_ne!(step_losses(&a), step_losses(&c));
}

#[test]
fn a_resume_stops_when_a_shard_changed_or_the_mode_did() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("b");
    let cfg = config(&b, STREAM, BAG_RUN);
    train(&cfg, &opts(Some(4), false), &mut |_| {}).unwrap();
    let in_memory = config(&b, "max_len = 64", BAG_RUN);
    let err = train(&in_memory, &opts(None, true), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("streamed run"), "{err}");
    let shard = b.join("shards/de/part-00000.jsonl");
    let mut text = std::fs::read_to_string(&shard).unwrap();
    text.push_str("{\"text\": \"Ein neuer Satz.\"}\n");
    std::fs::write(&shard, text).unwrap();
    let err = train(&cfg, &opts(None, true), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("part-00000.jsonl") && err.contains("changed"),
        "{err}"
    );
}

#[test]
fn a_naive_bayes_start_counts_the_stream_as_it_counts_memory() {
    let nb = r#"
[tokenizer]
char_ngrams = { min_n = 1, max_n = 4, buckets = 4096 }

[model]
kind = "bag"
init = { kind = "naive_bayes", alpha = 0.1 }

[optimizer]
kind = "adamw"
lr = 0.001

[schedule]
kind = "linear"
warmup = 0

[train]
steps = 0
batch_size = 8
seed = 1
threads = 2
"#;
    let tmp = tempfile::tempdir().unwrap();
    let (mem, streamed) = (tmp.path().join("mem"), tmp.path().join("stream"));
    let data = "max_len = 4096\naugment_snippets = 4";
    train(&config(&mem, data, nb), &opts(None, false), &mut |_| {}).unwrap();
    let data = format!("{data}\nstream = {{ window = 64, block = 8 }}");
    train(
        &config(&streamed, &data, nb),
        &opts(None, false),
        &mut |_| {},
    )
    .unwrap();
    // Counts are sums of whole numbers: the order they are added in changes nothing.
    assert_eq!(
        std::fs::read(mem.join("best/model.safetensors")).unwrap(),
        std::fs::read(streamed.join("best/model.safetensors")).unwrap()
    );
}

#[test]
fn records_without_a_label_are_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    for lang in ["de", "fr"] {
        std::fs::create_dir_all(corpus.join(lang)).unwrap();
        let lines: String = (0..20)
            .map(|i| {
                format!(
                    "{{\"text\": \"{lang} satz {i}\", \"label\": \"{}\"}}\n",
                    i % 2
                )
            })
            .collect();
        std::fs::write(corpus.join(lang).join("part-0.jsonl"), lines).unwrap();
    }
    // One record of fr has no label.
    std::fs::write(corpus.join("fr/part-1.jsonl"), "{\"text\": \"ohne\"}\n").unwrap();
    let text = format!(
        r#"
[data]
train = "{}"
label = "label"
stream = {{ window = 16, block = 4 }}
{BAG_RUN}
[output]
dir = "{}"
"#,
        corpus.display(),
        tmp.path().join("run").display()
    );
    let cfg: TrainConfig = toml::from_str(&text).unwrap();
    let err = train(&cfg, &opts(None, false), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("without a label") && err.contains("part-1.jsonl:1"),
        "{err}"
    );
}
