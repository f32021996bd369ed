//! Building single nodes and their inputs for the hostile-input op tests, and the two
//! verdicts those tests give: an op error, or a refusal over the memory budget.

use candle_core::{Device, Tensor};
use ferry_graph::exec::{run_node, MemoryBudget};
use ferry_graph::{Attr, Error, Node};

/// A case: what it is, the node, its inputs.
pub type Case = (&'static str, Node, Vec<Option<Tensor>>);

/// Node `op` reading `x0..x{inputs-1}`, with four outputs and `attrs`.
pub fn node(op: &str, inputs: usize, attrs: &[(&str, Attr)]) -> Node {
    let mut n = Node::new(
        "n",
        op,
        (0..inputs).map(|i| format!("x{i}")).collect(),
        vec!["y".into(), "z".into(), "w".into(), "v".into()],
    );
    for (k, v) in attrs {
        n.attrs.insert((*k).to_string(), v.clone());
    }
    n
}

/// An f32 input.
pub fn f32s(v: &[f32], dims: &[usize]) -> Option<Tensor> {
    Some(Tensor::from_slice(v, dims, &Device::Cpu).unwrap())
}

/// An i64 input.
pub fn i64s(v: &[i64], dims: &[usize]) -> Option<Tensor> {
    Some(Tensor::from_slice(v, dims, &Device::Cpu).unwrap())
}

/// An f32 input of zeros.
#[allow(dead_code)] // each test binary includes this module; not every one uses it
pub fn zeros(dims: &[usize]) -> Option<Tensor> {
    f32s(&vec![0.; dims.iter().product()], dims)
}

/// An `ints` attribute.
#[allow(dead_code)] // each test binary includes this module; not every one uses it
pub fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

fn run(opset: i64, n: &Node, inputs: Vec<Option<Tensor>>) -> ferry_graph::Result<Vec<Tensor>> {
    run_node(n, opset, MemoryBudget::new(1 << 20), &[], inputs)
}

/// Every case, run at `opset` under a 1 MiB budget, is an op error (not a panic, not a result).
pub fn assert_op_errors(opset: i64, cases: Vec<Case>) {
    for (what, n, inputs) in cases {
        match run(opset, &n, inputs) {
            Err(Error::Node { .. }) => {}
            other => panic!("{what}: expected an op error, got {other:?}"),
        }
    }
}

/// Every case, run at `opset` under a 1 MiB budget, is refused as over the budget.
pub fn assert_over_budget(opset: i64, cases: Vec<Case>) {
    for (what, n, inputs) in cases {
        match run(opset, &n, inputs) {
            Err(Error::NodeOverBudget { .. }) => {}
            other => panic!("{what}: expected an over-budget error, got {other:?}"),
        }
    }
}
