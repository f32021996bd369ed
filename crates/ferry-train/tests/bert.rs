//! The BERT-family encoder against Hugging Face transformers on the real all-MiniLM-L6-v2
//! (fixtures/bert/minilm_reference.safetensors, made by scripts/make_bert_reference.py), and
//! a short fine-tuning run through the config path. Skipped without the model locally;
//! required in CI (FERRY_REQUIRE_PYTHON=1).

use candle_core::{DType, Device};
use ferry_testkit::{fixture, minilm, repo_root};
use ferry_train::config::TrainConfig;
use ferry_train::models::{Classifier, ModelConfig, Pooling};
use ferry_train::params::load_tensors;
use ferry_train::run::{train, RunOptions};

mod common;

#[test]
fn minilm_hidden_states_match_transformers() {
    let Some(dir) = minilm() else { return };
    let dev = Device::Cpu;
    let cfg = ModelConfig::Bert {
        path: dir.clone(),
        pooling: Pooling::Mean,
        freeze_encoder: false,
    };
    let spec = cfg.resolve(30522, vec!["a".into(), "b".into()]).unwrap();
    let model = Classifier::from_pretrained(&spec, &dir, 0, &dev).unwrap();
    let r = load_tensors(&fixture("bert/minilm_reference.safetensors"), &dev).unwrap();
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = r["attention_mask"].to_dtype(DType::U8).unwrap();
    let h = model
        .bert()
        .unwrap()
        .hidden_states(&ids, Some(&mask))
        .unwrap();
    // Compare real tokens only (padding positions are computed but meaningless).
    let m = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let max = common::max_abs_diff(
        &h.broadcast_mul(&m).unwrap(),
        &r["last_hidden_state"].broadcast_mul(&m).unwrap(),
    );
    assert!(
        max < 2e-4,
        "hidden states differ from transformers by {max}"
    );
    let count = m.sum(1).unwrap();
    let pooled = h
        .broadcast_mul(&m)
        .unwrap()
        .sum(1)
        .unwrap()
        .broadcast_div(&count)
        .unwrap();
    let d = common::max_abs_diff(&pooled, &r["mean_pooled"]);
    assert!(d < 1e-4, "mean pooling differs by {d}");
}

#[test]
fn minilm_fine_tunes_on_three_languages() {
    let Some(dir) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let udhr = repo_root().join("corpora/udhr");
    let text = format!(
        r#"
[data]
train = "{}"
dev = "{}"
languages = ["de", "en", "fi"]
max_len = 32
[tokenizer]
[model]
kind = "bert"
path = "{}"
[optimizer]
kind = "adamw"
lr = 2e-4
[train]
steps = 8
batch_size = 8
eval_every = 8
seed = 3
threads = 2
[output]
dir = "{}"
"#,
        udhr.join("train.tsv").display(),
        udhr.join("dev.tsv").display(),
        dir.display(),
        tmp.path().display()
    );
    let cfg: TrainConfig = toml::from_str(&text).unwrap();
    cfg.check().unwrap();
    let s = train(&cfg, &RunOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(s.steps, 8);
    let loaded = ferry_train::model_dir::load_model(&s.model_dir, None, &Device::Cpu).unwrap();
    let ev =
        ferry_train::run::evaluate_file(&loaded, &udhr.join("dev.tsv"), None, 32, 2, &Device::Cpu)
            .unwrap();
    let seen = &ev.zero_shot_split()["seen"];
    assert!(
        seen.accuracy > 0.6,
        "3-way accuracy after 8 steps: {}",
        seen.accuracy
    );
}
