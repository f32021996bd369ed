//! The executor and the optimizer on graphs exported by torch.onnx.export
//! (fixtures/graph, made by scripts/make_graph_fixtures.py), against torch's own outputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ferry_graph::exec::Executor;
use ferry_graph::feeds::read_arrays;
use ferry_graph::onnx::{read_model, write_model, ExportOptions, ExternalData};
use ferry_graph::passes::{all, PassManager, VerifyOptions};
use ferry_graph::verify::compare_outputs;
use ferry_graph::Model;
use indexmap::IndexMap;

fn fixture(name: &str) -> PathBuf {
    ferry_testkit::fixture(&format!("graph/{name}"))
}

/// (inputs, torch outputs) of `model.onnx.io.npz`.
fn io(model: &Path) -> (HashMap<String, Tensor>, IndexMap<String, Tensor>) {
    let arrays = read_arrays(
        Path::new(&format!("{}.io.npz", model.display())),
        &Device::Cpu,
    )
    .unwrap();
    let mut inputs = HashMap::new();
    let mut outputs = IndexMap::new();
    for (k, v) in arrays {
        if let Some(n) = k.strip_prefix("input.") {
            inputs.insert(n.to_string(), v);
        } else if let Some(n) = k.strip_prefix("output.") {
            outputs.insert(n.to_string(), v);
        }
    }
    (inputs, outputs)
}

fn assert_matches(
    what: &str,
    model: &Model,
    inputs: &HashMap<String, Tensor>,
    want: &IndexMap<String, Tensor>,
    rel: f64,
) {
    let got = Executor::new(model, &Device::Cpu)
        .unwrap()
        .run(inputs)
        .unwrap();
    let got: IndexMap<String, Tensor> = got
        .into_iter()
        .filter(|(k, _)| want.contains_key(k))
        .collect();
    assert_eq!(got.len(), want.len(), "{what}: outputs {:?}", got.keys());
    for c in compare_outputs(want, &got, rel).unwrap() {
        assert!(
            c.ok,
            "{what}: output `{}` max abs {:?}, max rel {:?}",
            c.name, c.max_abs, c.max_rel
        );
    }
}

fn optimize(model: &Model) -> Model {
    let mut opt = model.clone();
    let r = PassManager::new(all())
        .verify(VerifyOptions::default())
        .run(&mut opt, |_| {})
        .unwrap();
    assert!(r.failed.is_none(), "{r:#?}");
    opt
}

const ALL: [&str; 7] = [
    "linear.onnx",
    "bag.onnx",
    "cnn.onnx",
    "encoder.onnx",
    "encoder_tanh.onnx",
    "encoder_opset18.onnx",
    "linear_external.onnx",
];

#[test]
fn executor_matches_torch_before_and_after_optimization() {
    for name in ALL {
        let path = fixture(name);
        let model = read_model(&path).unwrap();
        let (inputs, want) = io(&path);
        assert_matches(name, &model, &inputs, &want, 1e-4);
        let opt = optimize(&model);
        assert_matches(&format!("{name} optimized"), &opt, &inputs, &want, 1e-4);
    }
}

#[test]
fn optimization_removes_batch_norm_and_fuses_the_encoder() {
    let cnn = optimize(&read_model(&fixture("cnn.onnx")).unwrap());
    assert!(
        !cnn.graph.op_histogram().contains_key("BatchNormalization"),
        "{:?}",
        cnn.graph.op_histogram()
    );
    let enc = read_model(&fixture("encoder.onnx")).unwrap();
    let opt = optimize(&enc);
    let h = opt.graph.op_histogram();
    assert_eq!(h.get("com.ferry.PackedAttention"), Some(&2), "{h:?}");
    // The embeddings' LayerNorm alone, and both post-norm residuals of each layer fused.
    assert_eq!(
        (h.get("LayerNormalization"), h.get("com.ferry.AddLayerNorm")),
        (Some(&1), Some(&4)),
        "{h:?}"
    );
    assert_eq!(h.get("com.ferry.MatMulBiasGelu"), Some(&2), "{h:?}");
    assert!(
        opt.graph.nodes.len() < enc.graph.nodes.len() / 3,
        "{} -> {} nodes",
        enc.graph.nodes.len(),
        opt.graph.nodes.len()
    );
}

#[test]
fn written_models_read_back_and_compute_the_same() {
    let dir = tempfile::tempdir().unwrap();
    for (name, ext) in [
        ("encoder.onnx", ExternalData::Auto),
        ("cnn.onnx", ExternalData::Always),
    ] {
        let path = fixture(name);
        let (inputs, want) = io(&path);
        let opt = optimize(&read_model(&path).unwrap());
        let out = dir.path().join(name);
        let data = write_model(&opt, &out, &ExportOptions { external_data: ext }).unwrap();
        assert_eq!(data.is_some(), ext == ExternalData::Always);
        let back = read_model(&out).unwrap();
        assert_eq!(back.graph.nodes.len(), opt.graph.nodes.len());
        assert_matches(
            &format!("{name} written and read"),
            &back,
            &inputs,
            &want,
            1e-4,
        );
    }
}

#[test]
fn onnxruntime_and_the_checker_accept_written_models() {
    let Some(py) = ferry_testkit::python_with("onnx, onnxruntime, numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, numpy as np, onnx, onnxruntime as ort
path, io = sys.argv[1], np.load(sys.argv[2])
onnx.checker.check_model(onnx.load(path), full_check=True)
sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
feeds = {i.name: io["input." + i.name] for i in sess.get_inputs()}
outs = sess.run(None, feeds)
worst = 0.0
for o, v in zip(sess.get_outputs(), outs):
    ref = io["output." + o.name]
    worst = max(worst, float(np.abs(v - ref).max() / (np.abs(ref).max() + 1e-12)))
print(worst)
"#;
    for (name, ext) in [
        ("encoder.onnx", ExternalData::Auto),
        ("encoder_tanh.onnx", ExternalData::Auto),
        ("cnn.onnx", ExternalData::Always),
        ("encoder_opset18.onnx", ExternalData::Auto),
    ] {
        let path = fixture(name);
        let opt = optimize(&read_model(&path).unwrap());
        let out = dir.path().join(name);
        write_model(&opt, &out, &ExportOptions { external_data: ext }).unwrap();
        let io_path = PathBuf::from(format!("{}.io.npz", path.display()));
        let worst: f64 = ferry_testkit::run_python(&py, script, &[&out, &io_path])
            .trim()
            .parse()
            .unwrap();
        assert!(
            worst < 1e-4,
            "{name}: onnxruntime on ferry's optimized model is off by {worst} (relative)"
        );
    }
}

#[test]
fn all_minilm_l6_v2_matches_transformers() {
    let Some(dir) = ferry_testkit::minilm() else {
        return;
    };
    let path = dir.join("model.onnx");
    if !path.is_file() {
        assert!(
            std::env::var_os("FERRY_REQUIRE_PYTHON").is_none_or(|v| v != "1"),
            "{} is missing: run scripts/make_graph_fixtures.py --minilm",
            path.display()
        );
        eprintln!(
            "skipped: {} is missing (scripts/make_graph_fixtures.py --minilm)",
            path.display()
        );
        return;
    }
    let model = read_model(&path).unwrap();
    let (inputs, want) = io(&path);
    // Padded rows: compare real tokens only is what transformers' reference means; the io file
    // holds transformers' full output, padding included, which ferry must reproduce too.
    assert_matches("all-MiniLM-L6-v2", &model, &inputs, &want, 1e-4);
    let opt = optimize(&model);
    assert_matches("all-MiniLM-L6-v2 optimized", &opt, &inputs, &want, 1e-4);
    let h = opt.graph.op_histogram();
    assert_eq!(
        (
            h.get("com.ferry.PackedAttention"),
            h.get("LayerNormalization"),
            h.get("com.ferry.AddLayerNorm")
        ),
        (Some(&6), Some(&1), Some(&12)),
        "{h:?}"
    );
}
