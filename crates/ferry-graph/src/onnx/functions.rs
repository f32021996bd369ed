//! ONNX function definitions of ferry's fused ops (domain `com.ferry`), written into every
//! model that uses them. ferry runs these ops with its own kernels; onnxruntime and other
//! runtimes inline the function body, so an optimized model stays loadable everywhere.
//!
//! The ops, their inputs and attributes:
//! - `Gelu(X) -> Y`: `0.5 X (1 + erf(X / sqrt 2))`.
//! - `GeluTanh(X) -> Y`: `0.5 X (1 + tanh(sqrt(2/pi) (X + 0.044715 X^3)))`.
//! - `MatMulBias(X, W, B) -> Y`: `X W + B`; `MatMulBiasGelu`: `Gelu(X W + B)` (erf form).
//! - `Attention(Q, K, V, Bias) -> Y` with `num_heads` and `scale`: Q, K, V `[batch, seq,
//!   heads x head_size]`; `Bias` is added to the scores `[batch, heads, seq, seq]`
//!   (broadcast; a padding mask is `[batch, 1, 1, seq]`); `Y = softmax(scale Q K^T + Bias) V`
//!   with heads merged back.
//! - `AddLayerNorm(A, B, Scale, Bias) -> Y` with `epsilon`: `LayerNormalization(A + B)` over
//!   the last axis (models with this op are at opset 17 or later).
//! - `PackedAttention(QKV, Bias) -> Y` with `num_heads` and `scale`: `Attention` on the three
//!   equal parts of `QKV`'s last axis.

use indexmap::IndexMap;

use super::proto::{self, attribute_proto::AttributeType as T};
use crate::ir::OnnxModel;

/// The domain of ferry's fused ops.
pub const FERRY_DOMAIN: &str = "com.ferry";

/// Function definitions for the `com.ferry` ops `model` uses, at the model's opsets.
pub(super) fn for_model(
    model: &OnnxModel,
    opsets: &IndexMap<String, i64>,
) -> Vec<proto::FunctionProto> {
    let opset = opsets.get("").copied().unwrap_or(13);
    let mut used: Vec<&str> = model
        .graph
        .nodes
        .iter()
        .filter(|n| n.domain == FERRY_DOMAIN)
        .map(|n| n.op_type.as_str())
        .collect();
    used.sort_unstable();
    used.dedup();
    used.into_iter()
        .filter_map(|op| {
            let (inputs, outputs, attributes, nodes) = match op {
                "Gelu" => gelu_erf(),
                "GeluTanh" => gelu_tanh(),
                "Attention" => attention(),
                "PackedAttention" => packed_attention(opset),
                "AddLayerNorm" => add_layer_norm(),
                "MatMulBias" => matmul_bias(false),
                "MatMulBiasGelu" => matmul_bias(true),
                _ => return None,
            };
            Some(proto::FunctionProto {
                name: Some(op.into()),
                domain: Some(FERRY_DOMAIN.into()),
                input: strs(&inputs),
                output: strs(&outputs),
                attribute: strs(&attributes),
                node: nodes,
                opset_import: vec![proto::OperatorSetIdProto {
                    domain: Some(String::new()),
                    version: Some(opset),
                }],
                ..Default::default()
            })
        })
        .collect()
}

type Body = (
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<proto::NodeProto>,
);

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn node(
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<proto::AttributeProto>,
) -> proto::NodeProto {
    proto::NodeProto {
        op_type: Some(op.into()),
        input: strs(inputs),
        output: strs(outputs),
        attribute,
        ..Default::default()
    }
}

fn attr(name: &str, ty: T) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(ty as i32),
        ..Default::default()
    }
}

fn float_const(out: &str, v: f32) -> proto::NodeProto {
    node(
        "Constant",
        &[],
        &[out],
        vec![proto::AttributeProto {
            f: Some(v),
            ..attr("value_float", T::Float)
        }],
    )
}

fn ints_const(out: &str, v: &[i64]) -> proto::NodeProto {
    node(
        "Constant",
        &[],
        &[out],
        vec![proto::AttributeProto {
            ints: v.to_vec(),
            ..attr("value_ints", T::Ints)
        }],
    )
}

/// A Constant whose value is the function's attribute `from`.
fn ref_const(out: &str, value_attr: &str, ty: T, from: &str) -> proto::NodeProto {
    node(
        "Constant",
        &[],
        &[out],
        vec![proto::AttributeProto {
            ref_attr_name: Some(from.into()),
            ..attr(value_attr, ty)
        }],
    )
}

fn gelu_erf() -> Body {
    let nodes = vec![
        float_const("rsqrt2", std::f32::consts::FRAC_1_SQRT_2),
        float_const("one", 1.0),
        float_const("half", 0.5),
        node("Mul", &["X", "rsqrt2"], &["t"], vec![]),
        node("Erf", &["t"], &["e"], vec![]),
        node("Add", &["e", "one"], &["o"], vec![]),
        node("Mul", &["X", "half"], &["h"], vec![]),
        node("Mul", &["h", "o"], &["Y"], vec![]),
    ];
    (vec!["X"], vec!["Y"], vec![], nodes)
}

fn gelu_tanh() -> Body {
    let nodes = vec![
        float_const("c", 0.044715),
        float_const("k", (2.0f32 / std::f32::consts::PI).sqrt()),
        float_const("one", 1.0),
        float_const("half", 0.5),
        node("Mul", &["X", "X"], &["x2"], vec![]),
        node("Mul", &["x2", "X"], &["x3"], vec![]),
        node("Mul", &["x3", "c"], &["a"], vec![]),
        node("Add", &["X", "a"], &["s"], vec![]),
        node("Mul", &["s", "k"], &["t"], vec![]),
        node("Tanh", &["t"], &["th"], vec![]),
        node("Add", &["th", "one"], &["o"], vec![]),
        node("Mul", &["X", "half"], &["h"], vec![]),
        node("Mul", &["h", "o"], &["Y"], vec![]),
    ];
    (vec!["X"], vec!["Y"], vec![], nodes)
}

fn matmul_bias(gelu: bool) -> Body {
    let mut nodes = vec![node("MatMul", &["X", "W"], &["xw"], vec![])];
    if gelu {
        let (_, _, _, body) = gelu_erf();
        nodes.push(node("Add", &["xw", "B"], &["pre"], vec![]));
        // The GELU body reads X and writes Y: rename its input to the biased product.
        nodes.extend(body.into_iter().map(|mut n| {
            for i in n.input.iter_mut().filter(|i| *i == "X") {
                *i = "pre".into();
            }
            n
        }));
    } else {
        nodes.push(node("Add", &["xw", "B"], &["Y"], vec![]));
    }
    (vec!["X", "W", "B"], vec!["Y"], vec![], nodes)
}

fn add_layer_norm() -> Body {
    let eps = proto::AttributeProto {
        ref_attr_name: Some("epsilon".into()),
        ..attr("epsilon", T::Float)
    };
    let axis = proto::AttributeProto {
        i: Some(-1),
        ..attr("axis", T::Int)
    };
    let nodes = vec![
        node("Add", &["A", "B"], &["sum"], vec![]),
        node(
            "LayerNormalization",
            &["sum", "Scale", "Bias"],
            &["Y"],
            vec![axis, eps],
        ),
    ];
    (
        vec!["A", "B", "Scale", "Bias"],
        vec!["Y"],
        vec!["epsilon"],
        nodes,
    )
}

/// Split into three equal parts: by output count before opset 18, `num_outputs` from 18.
fn packed_attention(opset: i64) -> Body {
    let (_, outputs, attributes, body) = attention();
    let mut split_attrs = vec![proto::AttributeProto {
        i: Some(-1),
        ..attr("axis", T::Int)
    }];
    if opset >= 18 {
        split_attrs.push(proto::AttributeProto {
            i: Some(3),
            ..attr("num_outputs", T::Int)
        });
    }
    let mut nodes = vec![node("Split", &["QKV"], &["Q", "K", "V"], split_attrs)];
    nodes.extend(body);
    (vec!["QKV", "Bias"], outputs, attributes, nodes)
}

fn attention() -> Body {
    let perm = |v: &[i64]| proto::AttributeProto {
        ints: v.to_vec(),
        ..attr("perm", T::Ints)
    };
    let mut nodes = vec![
        ref_const("heads", "value_int", T::Int, "num_heads"),
        ref_const("scale", "value_float", T::Float, "scale"),
        ints_const("zero_axis", &[0]),
        ints_const("keep2", &[0, 0]),
        ints_const("rest", &[-1]),
        node("Unsqueeze", &["heads", "zero_axis"], &["heads1"], vec![]),
        node(
            "Concat",
            &["keep2", "heads1", "rest"],
            &["split_shape"],
            vec![proto::AttributeProto {
                i: Some(0),
                ..attr("axis", T::Int)
            }],
        ),
        ints_const("merge_shape", &[0, 0, -1]),
    ];
    for (x, p) in [
        ("Q", [0, 2, 1, 3]),
        ("K", [0, 2, 3, 1]),
        ("V", [0, 2, 1, 3]),
    ] {
        let r = format!("{x}_r");
        let t = format!("{x}_t");
        nodes.push(node("Reshape", &[x, "split_shape"], &[&r], vec![]));
        nodes.push(node("Transpose", &[&r], &[&t], vec![perm(&p)]));
    }
    nodes.extend([
        node("MatMul", &["Q_t", "K_t"], &["qk"], vec![]),
        node("Mul", &["qk", "scale"], &["scaled"], vec![]),
        node("Add", &["scaled", "Bias"], &["scores"], vec![]),
        node(
            "Softmax",
            &["scores"],
            &["probs"],
            vec![proto::AttributeProto {
                i: Some(-1),
                ..attr("axis", T::Int)
            }],
        ),
        node("MatMul", &["probs", "V_t"], &["ctx"], vec![]),
        node("Transpose", &["ctx"], &["ctx_t"], vec![perm(&[0, 2, 1, 3])]),
        node("Reshape", &["ctx_t", "merge_shape"], &["Y"], vec![]),
    ]);
    (
        vec!["Q", "K", "V", "Bias"],
        vec!["Y"],
        vec!["num_heads", "scale"],
        nodes,
    )
}
