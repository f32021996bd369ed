//! ONNX element types (`TensorProto.DataType` codes) of a graph's values, as far as they follow
//! from the graph: what the file declares (inputs, outputs, value infos, initializers, and the
//! narrow types of [`Graph::narrow`]) first, then each node's outputs from its op and inputs.
//!
//! candle cannot tell every ONNX type apart: ferry holds int8 as i16, uint16 as i32, int4 as
//! i8 and float8 e5m2 as f32. The ops whose result depends on the declared width (Cast and
//! CastLike, QuantizeLinear, bit shifts and bitwise not) read it from here, through
//! `OpCx::in_types`; the graph passes read it to write folded constants with their types.

use std::collections::HashMap;

use crate::ir::{Attr, Graph, Node};
use crate::onnx::dtype_to_onnx;

const BOOL: i32 = 9;
const INT64: i32 = 7;
const UINT8: i32 = 2;
const FLOAT: i32 = 1;
const INT32: i32 = 6;

/// The element type code of every value whose type is declared or follows from the graph.
pub(crate) fn elem_types(g: &Graph) -> HashMap<String, i32> {
    let mut t: HashMap<String, i32> = HashMap::new();
    let declared = g
        .inputs
        .iter()
        .chain(&g.outputs)
        .chain(g.value_info.values());
    for v in declared {
        if let Some(code) = v.dtype.and_then(dtype_to_onnx) {
            t.insert(v.name.clone(), code);
        }
    }
    for (name, e) in &g.initializers {
        if let Some(code) = dtype_to_onnx(e.dtype) {
            t.insert(name.clone(), code);
        }
    }
    for (name, n) in &g.narrow {
        t.insert(name.clone(), n.onnx());
    }
    for n in &g.nodes {
        let ins: Vec<Option<i32>> = n
            .inputs
            .iter()
            .map(|i| t.get(i.as_str()).copied())
            .collect();
        for (k, out) in n.outputs.iter().enumerate() {
            if out.is_empty() || t.contains_key(out) {
                continue;
            }
            if let Some(code) = output_type(n, k, &ins) {
                t.insert(out.clone(), code);
            }
        }
    }
    t
}

/// The declared type of each of `node`'s inputs (`None` where unknown or omitted).
pub(crate) fn input_types(node: &Node, types: &HashMap<String, i32>) -> Vec<Option<i32>> {
    node.inputs.iter().map(|i| types.get(i).copied()).collect()
}

/// The type of output `k` of `n` given its inputs' types, where the op determines it.
fn output_type(n: &Node, k: usize, ins: &[Option<i32>]) -> Option<i32> {
    let first = ins.first().copied().flatten();
    let nth = |i: usize| ins.get(i).copied().flatten();
    if n.has_subgraphs() {
        // If, Loop, Scan: their outputs come from their subgraphs, not their inputs.
        return None;
    }
    if !n.domain.is_empty() && n.domain != "ai.onnx" {
        return (k == 0).then_some(first).flatten();
    }
    match (n.op_type.as_str(), k) {
        (
            "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor"
            | "Not" | "IsNaN" | "IsInf",
            0,
        ) => Some(BOOL),
        ("Cast", 0) => Some(n.attr_int("to", 1) as i32),
        ("CastLike", 0) => nth(1),
        ("Shape" | "Size" | "ArgMax" | "ArgMin" | "NonZero", 0) => Some(INT64),
        ("TopK", 1) => Some(INT64),
        ("MaxPool", 1) => Some(INT64),
        ("QuantizeLinear", 0) => match n.attr_int("output_dtype", 0) {
            0 => nth(2).or(Some(UINT8)),
            code => Some(code as i32),
        },
        ("DequantizeLinear", 0) => match n.attr_int("output_dtype", 0) {
            0 => nth(1),
            code => Some(code as i32),
        },
        ("MatMulInteger" | "ConvInteger", 0) => Some(INT32),
        ("QLinearMatMul" | "QLinearConv", 0) => nth(7),
        ("OneHot", 0) => nth(2),
        ("NonMaxSuppression", 0) => Some(INT64),
        ("BitCast", 0) => Some(n.attr_int("to", 1) as i32),
        (
            "EyeLike" | "RandomUniformLike" | "RandomNormalLike" | "Bernoulli" | "Multinomial"
            | "RandomUniform" | "RandomNormal",
            0,
        ) => match n.attrs.get("dtype") {
            Some(Attr::Int(code)) => Some(*code as i32),
            _ if n.op_type == "Multinomial" => Some(6),
            _ if n.op_type.ends_with("Like")
                || n.op_type == "Bernoulli"
                || n.op_type == "EyeLike" =>
            {
                first
            }
            _ => Some(FLOAT),
        },
        ("HannWindow" | "HammingWindow" | "BlackmanWindow" | "MelWeightMatrix", 0) => {
            Some(n.attr_int("output_datatype", 1) as i32)
        }
        ("DynamicQuantizeLinear", 0 | 2) => Some(UINT8),
        ("DynamicQuantizeLinear", 1) => Some(FLOAT),
        ("Where", 0) => nth(1),
        ("Constant", 0) => match n.attrs.first().map(|(_, a)| a) {
            Some(Attr::Tensor(e)) => dtype_to_onnx(e.dtype),
            Some(Attr::Float(_)) | Some(Attr::Floats(_)) => Some(FLOAT),
            Some(Attr::Int(_)) | Some(Attr::Ints(_)) => Some(INT64),
            _ => None,
        },
        ("ConstantOfShape", 0) => match n.attrs.get("value") {
            Some(Attr::Tensor(e)) => dtype_to_onnx(e.dtype),
            _ => Some(FLOAT),
        },
        (_, 0) => first,
        _ => None,
    }
}
