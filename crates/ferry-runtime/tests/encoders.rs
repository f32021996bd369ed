//! BERT-family encoders against transformers: the tiny BERT, XLM-RoBERTa and DistilBERT in
//! `fixtures/encoders/` (made by `scripts/make_tiny_encoders.py`), their last hidden state and
//! every layer's hidden state, at real-token positions of a right-padded batch.

mod support;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ferry_runtime::{Kernels, Model};
use support::{all_real, copy_tensors, inputs, load, max_err, reference};

const TOL: f32 = 1e-4;

/// The fixture folder `fixtures/encoders/<name>`.
fn dir(name: &str) -> PathBuf {
    ferry_testkit::fixture(&format!("encoders/{name}"))
}

/// Loads `dir` and checks its last hidden state and every tap against the reference in
/// `fixture`; returns the largest error seen.
fn check(dir: &Path, fixture: &Path, arch: &str) -> f32 {
    let r = reference(fixture);
    let model = load(dir);
    assert_eq!(model.config.name(), arch);
    assert!(!model.is_decoder());
    let (ids, mask) = inputs(&r);
    let out = model.forward(&ids, Some(&mask), true).unwrap();
    let layers = r.keys().filter(|k| k.starts_with("hidden_states_")).count();
    assert_eq!(out.taps.len(), layers, "one tap per hidden state");
    let mut worst = max_err(&out.values, &r["last_hidden_state"], &mask);
    assert!(worst <= TOL, "{arch}: last hidden state off by {worst:e}");
    for (i, tap) in out.taps.iter().enumerate() {
        let e = max_err(tap, &r[&format!("hidden_states_{i}")], &mask);
        assert!(e <= TOL, "{arch}: hidden state {i} off by {e:e}");
        worst = worst.max(e);
    }
    // Without taps: the same last hidden state, no taps.
    let plain = model.forward(&ids, Some(&mask), false).unwrap();
    assert!(plain.taps.is_empty());
    assert_eq!(max_err(&plain.values, &out.values, &mask), 0.0);
    // The fixture is sensitive: ignoring the mask changes the padded row's real tokens.
    let unmasked = model.forward(&ids, None, false).unwrap();
    let e = max_err(&unmasked.values, &r["last_hidden_state"], &mask);
    assert!(e > 1e-2, "{arch}: the mask made no difference ({e:e})");
    worst
}

fn family(name: &str, arch: &str) {
    let dir = dir(name);
    let worst = check(&dir, &dir, arch);
    eprintln!("{name}: max abs error {worst:e} over the last hidden state and every tap");
}

#[test]
fn bert_matches_transformers_layer_by_layer() {
    family("bert", "bert encoder");
}

#[test]
fn xlm_roberta_matches_transformers_layer_by_layer() {
    family("xlm-roberta", "roberta encoder");
}

#[test]
fn distilbert_matches_transformers_layer_by_layer() {
    family("distilbert", "distilbert encoder");
}

/// A copy of the fixture folder `name` in `out`, its tensors renamed by `rename` (dropped when
/// it returns `None`).
fn rewrite(name: &str, out: &Path, rename: impl Fn(&str) -> Option<String>) {
    let dir = dir(name);
    std::fs::copy(dir.join("config.json"), out.join("config.json")).unwrap();
    copy_tensors(&dir, out, rename);
}

/// A task model's checkpoint stores the encoder under `bert.` / `roberta.` / `distilbert.`:
/// it loads and computes the same.
#[test]
fn prefixed_checkpoints_compute_the_same() {
    for (name, prefix, arch) in [
        ("bert", "bert.", "bert encoder"),
        ("xlm-roberta", "roberta.", "roberta encoder"),
        ("distilbert", "distilbert.", "distilbert encoder"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        rewrite(name, tmp.path(), |k| Some(format!("{prefix}{k}")));
        check(tmp.path(), &dir(name), arch);
    }
}

/// DistilBERT's tensors are served under BERT's names, but a missing one is named as the
/// user's file names it.
#[test]
fn a_missing_distilbert_tensor_is_named_as_distilbert_names_it() {
    for (prefix, missing) in [
        ("", "transformer.layer.1.ffn.lin2.weight"),
        ("distilbert.", "transformer.layer.0.sa_layer_norm.weight"),
        ("", "embeddings.position_embeddings.weight"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        rewrite("distilbert", tmp.path(), |k| {
            (k != missing).then(|| format!("{prefix}{k}"))
        });
        let err = match Model::load(tmp.path(), &Device::Cpu, Kernels::F32) {
            Ok(_) => panic!("loaded without {missing}"),
            Err(e) => e.to_string(),
        };
        let want = format!("`{prefix}{missing}`");
        assert!(
            err.contains(&want) && err.contains("missing"),
            "{want} not named: {err}"
        );
        assert!(!err.contains("encoder.layer"), "BERT's name leaked: {err}");
    }
}

/// RoBERTa positions count real tokens only: a left-padded row gives its real tokens the same
/// hidden states as the unpadded row (BERT's `0..seq` positions would shift them).
#[test]
fn roberta_positions_skip_padding() {
    let dir = dir("xlm-roberta");
    let r = reference(&dir);
    let model = load(&dir);
    let (ids, _) = inputs(&r);
    let row: Vec<u32> = ids.get(0).unwrap().to_vec1().unwrap();
    let n = row.len();
    let pad = 1u32;
    let mut left = vec![pad; 3];
    left.extend(&row);
    let (a, b) = (
        Tensor::new(&row[..], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
        Tensor::new(&left[..], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
    );
    let mut m = vec![0u32; 3];
    m.extend(vec![1u32; n]);
    let m = Tensor::new(&m[..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let x = model.forward(&a, None, false).unwrap().values;
    let y = model.forward(&b, Some(&m), false).unwrap().values;
    let y = y.narrow(1, 3, n).unwrap();
    let e = max_err(&x, &y, &all_real(n));
    assert!(e <= TOL, "left padding moved the real tokens by {e:e}");
}
