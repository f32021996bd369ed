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
    let Some((minilm, model)) = minilm_onnx() else {
        return;
    };
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

#[test]
fn verify_runs_an_onnx_export_against_its_original_per_language() {
    let Some((minilm, model)) = minilm_onnx() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let r = json(&ferry(
        &[
            "verify",
            minilm.to_str().unwrap(),
            model.to_str().unwrap(),
            "--languages",
            "en,de,zh,ar",
            "--tolerance",
            "exact",
            "--json",
        ],
        dir.path(),
    ));
    let res = &r["result"];
    assert_eq!(res["kind"], "encoder");
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["languages"].as_array().unwrap().len(), 4);
    let max_abs = res["overall"]["encoder"]["max_abs"].as_f64().unwrap();
    assert!(
        max_abs > 0.0 && max_abs < 1e-4,
        "torch's export, ferry's executor: {max_abs}"
    );
    // The graph has no per-layer taps: no attribution rather than a false "identical".
    assert!(res["layers"].as_array().unwrap().is_empty(), "{res}");

    // migrate optimizes the graph, then runs both on the probes (tokenizer.json travels).
    let out = dir.path().join("opt");
    let v = json(&ferry(
        &[
            "migrate",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--languages",
            "en,ja,ru",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(v["ok"], true, "{v:#}");
    let check = &v["outputs_check"]["report"]["result"];
    assert_eq!(check["budget"]["name"], "exact");
    assert_eq!(check["languages"].as_array().unwrap().len(), 3);
    assert!(out.join("tokenizer.json").is_file() && out.join("config.json").is_file());
}

#[test]
fn migrate_says_why_a_graph_without_token_ids_is_not_run_on_probes() {
    let dir = tempfile::tempdir().unwrap();
    let v = json(&ferry(
        &["migrate", &fixture("encoder.onnx"), "--out", "o", "--json"],
        dir.path(),
    ));
    let why = v["outputs_check"]["skipped"].as_str().unwrap();
    assert!(why.contains("input_ids"), "{why}");
}

/// The real all-MiniLM-L6-v2 folder and its ONNX export (`scripts/make_graph_fixtures.py
/// --minilm`), when present.
fn minilm_onnx() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let minilm = ferry_testkit::minilm()?;
    let model = minilm.join("model.onnx");
    model.is_file().then_some((minilm, model))
}

#[test]
fn inspect_describes_a_graph_and_the_ops_ferry_runs() {
    let dir = tempfile::tempdir().unwrap();
    let v = json(&ferry(
        &["inspect", &fixture("encoder.onnx"), "--json"],
        dir.path(),
    ));
    assert_eq!(v["format"], "onnx");
    assert_eq!(v["nodes"], 286);
    assert_eq!(v["ops"]["MatMul"].as_u64().map(|n| n > 0), Some(true));
    assert!(v["unsupported_ops"].as_object().unwrap().is_empty(), "{v}");
    assert!(v["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["name"].is_string()));
    let text = ferry(&["inspect", &fixture("encoder.onnx")], dir.path());
    assert!(ok(&text).contains("ferry runs every op"));
}

/// ONNX's own backend test cases (scripts/make_onnx_node_tests.py; CI makes them), or `None`
/// (skipped; with FERRY_REQUIRE_PYTHON=1 a failure).
fn onnx_node_tests() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("FERRY_ONNX_NODE_TESTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| ferry_testkit::repo_root().join("target/onnx-node-tests"));
    if dir.join("MANIFEST.json").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("FERRY_REQUIRE_PYTHON").is_none_or(|v| v != "1"),
        "FERRY_REQUIRE_PYTHON=1 but the ONNX node tests are not at {} (run scripts/make_onnx_node_tests.py)",
        dir.display()
    );
    None
}

/// `--input NAME=FILE.pb` feeds ONNX TensorProtos: bf16 and int4, which NumPy files cannot
/// hold, run as ONNX's own test data says they should.
#[test]
fn run_takes_tensorproto_inputs_of_any_element_type() {
    let Some(suite) = onnx_node_tests() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (case, inputs) in [
        ("test_cast_BFLOAT16_to_FLOAT", &["input"][..]),
        (
            "test_dequantizelinear_int4",
            &["x", "x_scale", "x_zero_point"][..],
        ),
    ] {
        let case_dir = suite.join(case);
        let data = case_dir.join("test_data_set_0");
        let model = case_dir.join("model.onnx");
        let out = dir.path().join(format!("{case}.npz"));
        let mut args: Vec<String> = vec!["run".into(), model.display().to_string()];
        for (i, name) in inputs.iter().enumerate() {
            args.push("--input".into());
            args.push(format!(
                "{name}={}",
                data.join(format!("input_{i}.pb")).display()
            ));
        }
        args.extend([
            "--output".into(),
            out.display().to_string(),
            "--quiet".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&ferry(&args, dir.path()));
        let got = ferry_graph::feeds::read_arrays(&out, &candle_core::Device::Cpu).unwrap();
        let want =
            ferry_graph::feeds::read_arrays(&data.join("output_0.pb"), &candle_core::Device::Cpu)
                .unwrap();
        let (g, w) = (got.values().next().unwrap(), want.values().next().unwrap());
        let as_f32 = |t: &candle_core::Tensor| {
            t.to_dtype(candle_core::DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let (g, w) = (as_f32(g), as_f32(w));
        assert_eq!(g.len(), w.len(), "{case}");
        for (a, b) in g.iter().zip(&w) {
            assert!(a == b || a.is_nan() && b.is_nan(), "{case}: {g:?} vs {w:?}");
        }
    }
}
