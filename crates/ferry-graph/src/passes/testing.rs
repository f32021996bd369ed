//! Test helpers: tiny models, fixtures, and before/after output checks.

use std::path::PathBuf;

use candle_core::Device;
use ferry_io::DType;

use crate::exec::Executor;
use crate::ir::{Dim, Graph, Node, OnnxModel, ValueInfo};
use crate::verify::{compare_outputs, symbol_sizes, synth_inputs};

/// `x [batch, 8] -> op1 -> op2 ... -> y` (unary ops).
pub(crate) fn chain_model(ops: &[&str]) -> OnnxModel {
    let mut nodes = Vec::new();
    let mut prev = "x".to_string();
    for (i, op) in ops.iter().enumerate() {
        let out = if i + 1 == ops.len() {
            "y".to_string()
        } else {
            format!("v{i}")
        };
        nodes.push(Node::new(
            format!("n{i}"),
            *op,
            vec![prev.clone()],
            vec![out.clone()],
        ));
        prev = out;
    }
    let vi = |n: &str| ValueInfo {
        name: n.into(),
        dtype: Some(DType::F32),
        shape: Some(vec![Dim::Symbolic("batch".into()), Dim::Fixed(8)]),
    };
    OnnxModel {
        graph: Graph {
            name: "chain".into(),
            inputs: vec![vi("x")],
            outputs: vec![vi("y")],
            nodes,
            ..Graph::default()
        },
        opsets: [(String::new(), 17)].into_iter().collect(),
        ir_version: 8,
        ..OnnxModel::default()
    }
}

pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/graph")
        .join(name)
}

pub(crate) fn load_fixture(name: &str) -> OnnxModel {
    crate::onnx::read_model(&fixture(name)).unwrap()
}

/// Runs both models on the same seeded inputs (two shapes) and asserts every output agrees
/// within `rel` of its scale.
pub(crate) fn assert_same_outputs(a: &OnnxModel, b: &OnnxModel, rel: f64) {
    for sizes in [&[2usize, 7][..], &[3, 5]] {
        let dims = symbol_sizes(&a.graph, sizes);
        let inputs = synth_inputs(&a.graph, &dims, 1).unwrap();
        let ya = Executor::new(a, &Device::Cpu)
            .unwrap()
            .run(&inputs)
            .unwrap();
        let yb = Executor::new(b, &Device::Cpu)
            .unwrap()
            .run(&inputs)
            .unwrap();
        for c in compare_outputs(&ya, &yb, rel).unwrap() {
            assert!(
                c.ok,
                "output `{}` differs: max abs {:?}, max rel {:?}",
                c.name, c.max_abs, c.max_rel
            );
        }
    }
}
