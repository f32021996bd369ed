//! The op registry: which ops run and how. One module per family.

mod attention;
mod elementwise;
mod fused;
mod indexing;
mod linalg;
mod loss;
mod math;
mod nn;
mod norm;
mod quant;
mod reduce;
mod shape;
mod signal;

use candle_core::{DType, Device, Tensor};

pub use shape::reshape_dims;

use super::util::R;
use super::MemoryBudget;
use crate::ir::Node;
use crate::onnx::FERRY_DOMAIN;

/// What an op may need besides its inputs.
pub(crate) struct OpCx<'a> {
    /// The model's standard opset (ops whose inputs moved from attributes check it).
    pub opset: i64,
    /// The device the node runs on.
    pub device: &'a Device,
    /// The node's weight packed at load, for ops that take one (see [`packs_weight`]).
    pub packed: Option<&'a ferry_kernels::PackedMatrix>,
    /// The most bytes one tensor the op makes may take.
    pub budget: MemoryBudget,
    /// The declared ONNX element type code of each input, where the graph says (see
    /// `exec::types`): what tells int8 from int16 (both held as i16) or int4 from int8.
    pub in_types: &'a [Option<i32>],
}

impl OpCx<'_> {
    /// `Ok` when a tensor of `shape` and `dtype` fits the memory budget: called before making
    /// one whose size comes from input values or attributes. `what` names it for the error
    /// ("its output").
    pub fn fits(&self, what: &'static str, shape: &[usize], dtype: DType) -> R<()> {
        Ok(self.budget.check(what, shape, dtype)?)
    }

    /// The declared element type code of input `i`, if known.
    pub fn in_type(&self, i: usize) -> Option<i32> {
        self.in_types.get(i).copied().flatten()
    }
}

/// Whether `node` multiplies by its input 1 as a constant `[in, out]` matrix that the executor
/// may pack once at load ([`ferry_kernels::PackedMatrix`]) instead of passing it as a tensor.
pub(crate) fn packs_weight(node: &Node) -> bool {
    node.domain == FERRY_DOMAIN && fused::takes_packed_weight(&node.op_type)
}

type OpFn = fn(&Node, &OpCx, Vec<Option<Tensor>>) -> R<Vec<Tensor>>;

fn lookup(node: &Node) -> Option<OpFn> {
    match node.domain.as_str() {
        "" | "ai.onnx" => standard(&node.op_type),
        FERRY_DOMAIN => fused::lookup(&node.op_type),
        _ => None,
    }
}

fn standard(op: &str) -> Option<OpFn> {
    elementwise::lookup(op)
        .or_else(|| shape::lookup(op))
        .or_else(|| reduce::lookup(op))
        .or_else(|| linalg::lookup(op))
        .or_else(|| nn::lookup(op))
        .or_else(|| math::lookup(op))
        .or_else(|| signal::lookup(op))
        .or_else(|| indexing::lookup(op))
        .or_else(|| norm::lookup(op))
        .or_else(|| quant::lookup(op))
        .or_else(|| loss::lookup(op))
        .or_else(|| attention::lookup(op))
        .or_else(|| fused::lookup_standard(op))
}

/// Whether the executor implements `node`'s op (If, Loop and Scan included: the executor
/// runs their subgraphs, whose own ops [`crate::Executor::new`] checks).
pub fn is_supported(node: &Node) -> bool {
    lookup(node).is_some() || super::control::is_control(node)
}

/// Runs one node.
pub(crate) fn run(node: &Node, cx: &OpCx, args: Vec<Option<Tensor>>) -> R<Vec<Tensor>> {
    let Some(f) = lookup(node) else {
        if super::control::is_control(node) {
            super::util::bail!(
                "op `{}` runs subgraphs, which only an Executor of its graph can do",
                node.op_type
            );
        }
        super::util::bail!("op `{}` is not supported", node.qualified_op());
    };
    f(node, cx, args)
}
