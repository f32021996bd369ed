//! Node attributes.

use ferry_io::TensorEntry;

use super::Graph;

/// An attribute value (ONNX `AttributeProto`; of the graph-valued kinds, one subgraph, as
/// If, Loop and Scan take).
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum Attr {
    Float(f32),
    Int(i64),
    String(String),
    Tensor(TensorEntry),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<String>),
    /// A subgraph (If's branches, Loop's and Scan's body). Its nodes may read values of the
    /// enclosing graphs by name (see [`crate::ir::Node::captured_inputs`]).
    Graph(Box<Graph>),
}

impl PartialEq for Attr {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Attr::Float(a), Attr::Float(b)) => a.to_bits() == b.to_bits(),
            (Attr::Int(a), Attr::Int(b)) => a == b,
            (Attr::String(a), Attr::String(b)) => a == b,
            (Attr::Floats(a), Attr::Floats(b)) => a == b,
            (Attr::Ints(a), Attr::Ints(b)) => a == b,
            (Attr::Strings(a), Attr::Strings(b)) => a == b,
            (Attr::Tensor(a), Attr::Tensor(b)) => same_tensor(a, b),
            (Attr::Graph(a), Attr::Graph(b)) => a == b,
            _ => false,
        }
    }
}

/// Same element type, shape and bytes.
pub(super) fn same_tensor(a: &TensorEntry, b: &TensorEntry) -> bool {
    a.dtype == b.dtype
        && a.shape == b.shape
        && matches!((a.data(), b.data()), (Ok(x), Ok(y)) if x == y)
}
