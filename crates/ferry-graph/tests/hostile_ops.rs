//! Indexing, math and shape ops given bad indices, attributes or shapes return errors (never
//! panic), and outputs sized by input values or attributes are checked against the memory
//! budget before they are made.

mod support;

use ferry_graph::Attr;
use support::{assert_op_errors, assert_over_budget, f32s, i64s, node, Case};

#[test]
fn bad_indices_and_attributes_are_errors() {
    let m = f32s(&[1., 2., 3., 4.], &[2, 2]);
    let cases: Vec<Case> = vec![
        (
            "GatherElements index past the end",
            node("GatherElements", 2, &[]),
            vec![m.clone(), i64s(&[0, 2, 1, 0], &[2, 2])],
        ),
        (
            "GatherElements rank mismatch",
            node("GatherElements", 2, &[]),
            vec![m.clone(), i64s(&[0], &[1])],
        ),
        (
            "ScatterElements index past the end",
            node("ScatterElements", 3, &[("axis", Attr::Int(1))]),
            vec![m.clone(), i64s(&[-3], &[1, 1]), f32s(&[9.], &[1, 1])],
        ),
        (
            "ScatterElements unknown reduction",
            node(
                "ScatterElements",
                3,
                &[("reduction", Attr::String("avg".into()))],
            ),
            vec![m.clone(), i64s(&[0], &[1, 1]), f32s(&[9.], &[1, 1])],
        ),
        (
            "ScatterND index past the end",
            node("ScatterND", 3, &[]),
            vec![m.clone(), i64s(&[5], &[1, 1]), f32s(&[9., 9.], &[1, 2])],
        ),
        (
            "ScatterND updates of the wrong shape",
            node("ScatterND", 3, &[]),
            vec![m.clone(), i64s(&[0], &[1, 1]), f32s(&[9.], &[1, 1])],
        ),
        (
            "TopK k past the axis",
            node("TopK", 2, &[]),
            vec![m.clone(), i64s(&[3], &[1])],
        ),
        (
            "Trilu of a vector",
            node("Trilu", 1, &[]),
            vec![f32s(&[1.], &[1])],
        ),
        (
            "Compress with a long condition",
            node("Compress", 2, &[("axis", Attr::Int(0))]),
            vec![m.clone(), i64s(&[1, 0, 1], &[3])],
        ),
        (
            "OneHot with a negative depth",
            node("OneHot", 3, &[]),
            vec![i64s(&[0], &[1]), i64s(&[-2], &[1]), f32s(&[0., 1.], &[2])],
        ),
        (
            "Mod of integers by zero",
            node("Mod", 2, &[]),
            vec![i64s(&[3], &[1]), i64s(&[0], &[1])],
        ),
        (
            "BitShift without a direction",
            node("BitShift", 2, &[]),
            vec![i64s(&[3], &[1]), i64s(&[1], &[1])],
        ),
        (
            "CumSum axis out of range",
            node("CumSum", 2, &[]),
            vec![m.clone(), i64s(&[2], &[])],
        ),
        (
            "Einsum operand of the wrong rank",
            node("Einsum", 1, &[("equation", Attr::String("ijk->i".into()))]),
            vec![m.clone()],
        ),
        (
            "Einsum diagonal over different sizes",
            node("Einsum", 1, &[("equation", Attr::String("ii->i".into()))]),
            vec![f32s(&[1., 2.], &[1, 2])],
        ),
        (
            "Pad cropping past the size",
            node("Pad", 2, &[]),
            vec![m.clone(), i64s(&[-3, 0, 0, 0], &[4])],
        ),
        (
            "Pad reflecting an empty axis",
            node("Pad", 2, &[("mode", Attr::String("reflect".into()))]),
            vec![f32s(&[], &[0, 2]), i64s(&[1, 0, 0, 0], &[4])],
        ),
        (
            "DepthToSpace with channels the block does not divide",
            node("DepthToSpace", 1, &[("blocksize", Attr::Int(2))]),
            vec![f32s(&[0.; 6], &[1, 6, 1, 1])],
        ),
        (
            "ReverseSequence with a length past the time axis",
            node("ReverseSequence", 2, &[]),
            vec![m.clone(), i64s(&[3, 1], &[2])],
        ),
        (
            "TensorScatter writing past the cache",
            node("TensorScatter", 3, &[]),
            vec![
                f32s(&[0.; 4], &[1, 2, 2]),
                f32s(&[1.; 2], &[1, 1, 2]),
                i64s(&[2], &[1]),
            ],
        ),
        (
            "NonMaxSuppression boxes of the wrong shape",
            node("NonMaxSuppression", 2, &[]),
            vec![f32s(&[0.; 3], &[1, 1, 3]), f32s(&[1.], &[1, 1, 1])],
        ),
        (
            "DFT along the complex dimension",
            node("DFT", 3, &[]),
            vec![f32s(&[0.; 4], &[2, 2]), None, i64s(&[-1], &[])],
        ),
        (
            "BitCast changing the width",
            node("BitCast", 1, &[("to", Attr::Int(7))]),
            vec![m.clone()],
        ),
    ];
    assert_op_errors(21, cases);
}

#[test]
fn outputs_sized_by_values_are_checked_against_the_budget() {
    let cases: Vec<Case> = vec![
        (
            "OneHot with a huge depth",
            node("OneHot", 3, &[]),
            vec![
                i64s(&[0], &[1]),
                i64s(&[1 << 40], &[1]),
                f32s(&[0., 1.], &[2]),
            ],
        ),
        (
            "Pad by a huge amount",
            node("Pad", 2, &[]),
            vec![f32s(&[1.], &[1]), i64s(&[1 << 40, 0], &[2])],
        ),
        (
            "CenterCropPad to a huge size",
            node("CenterCropPad", 2, &[]),
            vec![f32s(&[1.], &[1]), i64s(&[1 << 40], &[1])],
        ),
        (
            "a huge window",
            node("HannWindow", 1, &[]),
            vec![i64s(&[1 << 40], &[])],
        ),
        (
            "DFT to a huge length",
            node("DFT", 2, &[]),
            vec![f32s(&[0.; 2], &[1, 2]), i64s(&[1 << 40], &[])],
        ),
    ];
    assert_over_budget(21, cases);
}

/// If, Loop and Scan run their subgraphs in an `Executor` (see `tests/control_flow.rs` for
/// hostile graphs); run alone, as constant folding runs nodes, they are an op error, not a
/// panic or an endless loop, with or without a subgraph.
#[test]
fn control_flow_alone_is_an_error() {
    let body = Attr::Graph(Box::default());
    let cases: Vec<Case> = vec![
        (
            "Loop with an endless trip count",
            node("Loop", 3, &[("body", body.clone())]),
            vec![i64s(&[i64::MAX], &[]), None, f32s(&[1.], &[1])],
        ),
        (
            "If with a three-element condition",
            node("If", 1, &[]),
            vec![i64s(&[1, 0, 1], &[3])],
        ),
        (
            "Scan without a body",
            node("Scan", 2, &[("num_scan_inputs", Attr::Int(1))]),
            vec![f32s(&[0.], &[1]), f32s(&[1., 2.], &[2, 1])],
        ),
    ];
    assert_op_errors(17, cases);
}
