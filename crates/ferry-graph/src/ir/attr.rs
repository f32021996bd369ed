//! Node attributes.

use ferry_io::TensorEntry;

/// An attribute value (ONNX `AttributeProto` without subgraphs, which ferry does not run).
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
            (Attr::Tensor(a), Attr::Tensor(b)) => {
                a.dtype == b.dtype
                    && a.shape == b.shape
                    && matches!((a.data(), b.data()), (Ok(x), Ok(y)) if x == y)
            }
            _ => false,
        }
    }
}
