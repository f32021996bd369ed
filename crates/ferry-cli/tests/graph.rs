//! `ferry optimize`, `ferry run` and `ferry migrate` on ONNX graphs exported by torch
//! (fixtures/graph), as a user runs them.

mod support;

use std::path::Path;

use support::{ferry, json, ok};

fn fixture(name: &str) -> String {
    ferry_testkit::fixture(&format!("graph/{name}"))
        .display()
        .to_string()
}

#[test]
fn optimize_folds_batch_norm_and_reports_every_pass() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cnn.opt.onnx");
    let v = json(&ferry(
        &[
            "optimize",
            &fixture("cnn.onnx"),
            out.to_str().unwrap(),
            "--verify",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(v["ops_before"]["BatchNormalization"], 3);
    assert!(v["ops_after"].get("BatchNormalization").is_none(), "{v:#}");
    assert!(v["failed"].is_null());
    let passes = v["passes"].as_array().unwrap();
    assert!(passes.iter().all(|p| p["verified"]["ok"] == true), "{v:#}");
    assert!(out.is_file());

    // The human form: an op table, and why candidates were left alone.
    let text = ok(&ferry(
        &[
            "optimize",
            &fixture("encoder.onnx"),
            "--dry-run",
            "--passes",
            "const-fold,matmul-add,gelu",
        ],
        dir.path(),
    ));
    assert!(
        text.contains("LayerNormalization") || text.contains("ReduceMean"),
        "{text}"
    );
    assert!(
        text.contains("input is 3-D") && text.contains("plain tanh"),
        "{text}"
    );
    assert!(text.contains("dry run: nothing written"), "{text}");

    let bad = ferry(
        &[
            "optimize",
            &fixture("cnn.onnx"),
            "x.onnx",
            "--passes",
            "speedup",
        ],
        dir.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown pass `speedup`"));
}

#[test]
fn run_reproduces_torch_outputs_from_npz_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let io = format!("{}.io.npz", fixture("encoder.onnx"));
    let out = dir.path().join("y.npz");
    let model = fixture("encoder.onnx");
    for extra in [&[][..], &["--optimize"][..]] {
        let mut args = vec![
            "run",
            &model,
            "--input",
            &io,
            "--output",
            out.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let v = json(&ferry(&args, dir.path()));
        assert_eq!(
            v["outputs"][0]["shape"],
            serde_json::json!([2, 7, 64]),
            "{v:#}"
        );
        let got = ferry_graph::feeds::read_arrays(&out, &candle_core::Device::Cpu).unwrap();
        let want =
            ferry_graph::feeds::read_arrays(Path::new(&io), &candle_core::Device::Cpu).unwrap();
        let (g, w) = (&got["last_hidden_state"], &want["output.last_hidden_state"]);
        let diff = (g - w)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "{extra:?}: max abs {diff}");
    }
    let missing = ferry(&["run", &fixture("encoder.onnx")], dir.path());
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("input `input_ids`"));
}

#[test]
fn run_on_text_with_minilm_tokenizer() {
    let Some(minilm) = ferry_testkit::minilm() else {
        return;
    };
    let model = minilm.join("model.onnx");
    if !model.is_file() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tok = minilm.join("tokenizer.json");
    let v = json(&ferry(
        &[
            "run",
            model.to_str().unwrap(),
            "--tokenizer",
            tok.to_str().unwrap(),
            "--text",
            "Hello world",
            "--text",
            "Guten Morgen, wie geht es dir?",
            "--json",
        ],
        dir.path(),
    ));
    let shape = v["outputs"][0]["shape"].as_array().unwrap();
    assert_eq!(shape[0], 2);
    assert_eq!(shape[2], 384);
}

#[test]
fn migrate_optimizes_and_verifies_a_graph() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("enc");
    let v = json(&ferry(
        &[
            "migrate",
            &fixture("encoder.onnx"),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["input_format"], "onnx");
    let g = &v["graph"];
    assert_eq!(g["pipeline"]["ops_after"]["com.ferry.PackedAttention"], 2);
    assert!(g["end_to_end"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["ok"] == true));
    assert!(out.join("model.onnx").is_file() && out.join("report.md").is_file());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## Passes") && md.contains("left alone"),
        "{md}"
    );
}
