//! Element types of values as ONNX sees them. The executor holds `bool` as `u8`; a folded
//! constant must be written back with its ONNX type, so folding asks here.

use std::collections::HashMap;

use ferry_io::DType;

use crate::ir::{Attr, Graph};

/// ONNX element types of every value whose type follows from the graph.
pub(crate) fn infer(g: &Graph) -> HashMap<String, DType> {
    let mut t: HashMap<String, DType> = HashMap::new();
    for v in &g.inputs {
        if let Some(d) = v.dtype {
            t.insert(v.name.clone(), d);
        }
    }
    for (name, e) in &g.initializers {
        t.insert(name.clone(), e.dtype);
    }
    for n in &g.nodes {
        let first = n.input(0).and_then(|i| t.get(i).copied());
        let out = match n.op_type.as_str() {
            "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or"
            | "Xor" | "Not" | "IsNaN" | "IsInf" => Some(DType::Bool),
            "Cast" => crate::onnx::dtype_from_onnx(n.attr_int("to", 1) as i32),
            "Shape" | "Size" | "ArgMax" | "ArgMin" => Some(DType::I64),
            "Constant" => match n.attrs.first().map(|(_, a)| a) {
                Some(Attr::Tensor(e)) => Some(e.dtype),
                Some(Attr::Float(_)) | Some(Attr::Floats(_)) => Some(DType::F32),
                Some(Attr::Int(_)) | Some(Attr::Ints(_)) => Some(DType::I64),
                _ => None,
            },
            "ConstantOfShape" => match n.attrs.get("value") {
                Some(Attr::Tensor(e)) => Some(e.dtype),
                _ => Some(DType::F32),
            },
            "Where" => n.input(1).and_then(|i| t.get(i).copied()),
            _ => first,
        };
        if let Some(d) = out {
            for o in n.outputs.iter().take(1) {
                t.insert(o.clone(), d);
            }
        }
    }
    t
}
