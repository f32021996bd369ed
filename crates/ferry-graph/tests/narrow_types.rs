//! Element types ferry holds wider (int4 as i8, float8 e5m2 as f32; `ir::Narrow`): a model
//! with an int4 weight and int8 activations, the way 4-bit QDQ exports store them, runs, is
//! written back with its int4 tensors packed, reads back the same, and onnxruntime (the
//! consumer) loads the written file and computes what ferry computes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use ferry_graph::ir::{entry_from_candle, Dim, Narrow, ValueInfo};
use ferry_graph::onnx::{read_model, write_model, ExportOptions};
use ferry_graph::{Attr, Executor, Graph, Node, OnnxModel};
use ferry_io::{DType, Layout, Storage, TensorEntry};

fn vi(name: &str, dtype: DType, dims: &[usize]) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        dtype: Some(dtype),
        shape: Some(dims.iter().map(|&d| Dim::Fixed(d)).collect()),
    }
}

fn int4(name: &str, values: &[i8], dims: &[usize]) -> TensorEntry {
    TensorEntry {
        name: name.into(),
        dtype: DType::I8,
        shape: dims.to_vec(),
        storage: Storage::owned(values.iter().map(|&v| v as u8).collect()),
        layout: Layout::Contiguous { offset: 0 },
        storage_key: None,
        file: Arc::from(Path::new("<test>")),
    }
}

/// `y = MatMul(DequantizeLinear(QuantizeLinear(x) as int8), DequantizeLinear(w as int4))` and
/// the int4 quantization of `x`, dequantized, as a second output (onnxruntime's Python API
/// cannot hand out int4 arrays).
fn model() -> OnnxModel {
    let dev = Device::Cpu;
    let w: Vec<i8> = (0..24).map(|i| ((i * 5) % 16 - 8) as i8).collect();
    let mut g = Graph {
        name: "narrow".into(),
        inputs: vec![vi("x", DType::F32, &[2, 6])],
        outputs: vec![vi("y", DType::F32, &[2, 4]), vi("q4f", DType::F32, &[2, 6])],
        ..Graph::default()
    };
    let scalar = |name: &str, t: Tensor| entry_from_candle(name, &t).unwrap();
    g.initializers.insert("w".into(), int4("w", &w, &[6, 4]));
    g.initializers.insert(
        "w_scale".into(),
        scalar(
            "w_scale",
            Tensor::new(&[0.5f32, 0.25, 0.125, 1.0], &dev).unwrap(),
        ),
    );
    g.initializers
        .insert("w_zp".into(), int4("w_zp", &[1, -1, 0, 2], &[4]));
    g.initializers.insert(
        "x_scale".into(),
        scalar("x_scale", Tensor::new(0.05f32, &dev).unwrap()),
    );
    // An int8 zero point without output_dtype: the declared type says int8 (held as i16).
    let mut x_zp = scalar("x_zp", Tensor::new(-3i16, &dev).unwrap());
    x_zp.dtype = DType::I8;
    x_zp.storage = Storage::owned(vec![(-3i8) as u8]);
    g.initializers.insert("x_zp".into(), x_zp);
    g.initializers
        .insert("q4_zp".into(), int4("q4_zp", &[0], &[]));
    for name in ["w", "w_zp", "q4_zp"] {
        g.narrow.insert(name.into(), Narrow::I4);
    }
    let n = |name: &str, op: &str, ins: &[&str], out: &str| {
        Node::new(
            name,
            op,
            ins.iter().map(|s| s.to_string()).collect(),
            vec![out.to_string()],
        )
    };
    g.nodes = vec![
        n("dq_w", "DequantizeLinear", &["w", "w_scale", "w_zp"], "wf")
            .with_attr("axis", Attr::Int(1)),
        n("q_x", "QuantizeLinear", &["x", "x_scale", "x_zp"], "xq"),
        n("dq_x", "DequantizeLinear", &["xq", "x_scale", "x_zp"], "xf"),
        n("mm", "MatMul", &["xf", "wf"], "y"),
        n("q4", "QuantizeLinear", &["x", "x_scale", "q4_zp"], "q4"),
        n(
            "dq4",
            "DequantizeLinear",
            &["q4", "x_scale", "q4_zp"],
            "q4f",
        ),
    ];
    OnnxModel {
        graph: g,
        opsets: [(String::new(), 21)].into_iter().collect(),
        ir_version: 10,
        ..OnnxModel::default()
    }
}

fn inputs() -> HashMap<String, Tensor> {
    let x: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) * 0.13).collect();
    [(
        "x".to_string(),
        Tensor::from_vec(x, (2, 6), &Device::Cpu).unwrap(),
    )]
    .into_iter()
    .collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn int4_weights_and_int8_activations_run_round_trip_and_match_onnxruntime() {
    let m = model();
    let got = Executor::new(&m, &Device::Cpu)
        .unwrap()
        .run(&inputs())
        .unwrap();
    let q4: Vec<f32> = values(&got["q4f"])
        .iter()
        .map(|v| (v / 0.05).round())
        .collect();
    // QuantizeLinear to int4 saturates to [-8, 7].
    assert!(q4.iter().all(|&v| (-8.0..=7.0).contains(&v)), "{q4:?}");
    assert!(q4.contains(&-8.0) && q4.contains(&7.0), "{q4:?}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("narrow.onnx");
    write_model(&m, &path, &ExportOptions::default()).unwrap();
    let back = read_model(&path).unwrap();
    for name in ["w", "w_zp", "q4_zp"] {
        assert_eq!(back.graph.narrow.get(name), Some(&Narrow::I4), "{name}");
    }
    assert_eq!(
        back.graph.initializers["w"].data().unwrap(),
        m.graph.initializers["w"].data().unwrap()
    );
    let again = Executor::new(&back, &Device::Cpu)
        .unwrap()
        .run(&inputs())
        .unwrap();
    for k in ["y", "q4f"] {
        assert_eq!(values(&got[k]), values(&again[k]), "{k}");
    }

    let Some(py) = ferry_testkit::python_with("onnxruntime, numpy") else {
        return;
    };
    let x = values(&inputs()["x"]);
    let script = r#"
import sys, json, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.array(json.loads(sys.argv[2]), dtype=np.float32).reshape(2, 6)
y, q4f = s.run(["y", "q4f"], {"x": x})
print(json.dumps({"y": y.ravel().tolist(), "q4": np.round(q4f / np.float32(0.05)).ravel().tolist()}))
"#;
    let out = ferry_testkit::run_python(
        &py,
        script,
        &[&path, Path::new(&serde_json::to_string(&x).unwrap())],
    );
    let ort: HashMap<String, Vec<f64>> = serde_json::from_str(out.trim()).unwrap();
    let q4_ort: Vec<f32> = ort["q4"].iter().map(|&v| v as f32).collect();
    assert_eq!(q4, q4_ort, "int4 QuantizeLinear");
    for (a, b) in values(&got["y"]).iter().zip(&ort["y"]) {
        assert!(
            (f64::from(*a) - b).abs() <= 1e-5 + 1e-5 * b.abs(),
            "y: {a} vs {b}"
        );
    }
}
