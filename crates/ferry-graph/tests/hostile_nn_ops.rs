//! Network ops (attention, normalization, losses, quantization, pooling, convolution,
//! resampling, recurrent) given bad attributes, shapes or values return errors (never panic),
//! and outputs sized by input values or attributes are checked against the memory budget
//! before they are made.

mod support;

use ferry_graph::Attr;
use support::{assert_op_errors, assert_over_budget, f32s, i64s, ints, node, zeros, Case};

#[test]
fn bad_attributes_shapes_and_values_are_errors() {
    let cases: Vec<Case> = vec![
        (
            "Attention with heads that do not group",
            node("Attention", 3, &[]),
            vec![
                zeros(&[1, 3, 2, 4]),
                zeros(&[1, 2, 2, 4]),
                zeros(&[1, 2, 2, 4]),
            ],
        ),
        (
            "3-D Attention without head counts",
            node("Attention", 3, &[]),
            vec![zeros(&[1, 2, 4]), zeros(&[1, 2, 4]), zeros(&[1, 2, 4])],
        ),
        (
            "Attention with a mask longer than the keys",
            node("Attention", 4, &[]),
            vec![
                zeros(&[1, 1, 2, 4]),
                zeros(&[1, 1, 2, 4]),
                zeros(&[1, 1, 2, 4]),
                zeros(&[2, 3]),
            ],
        ),
        (
            "RotaryEmbedding with a position past the cache",
            node("RotaryEmbedding", 4, &[]),
            vec![
                zeros(&[1, 1, 1, 4]),
                zeros(&[2, 2]),
                zeros(&[2, 2]),
                i64s(&[5], &[1, 1]),
            ],
        ),
        (
            "LinearAttention without its decay",
            node(
                "LinearAttention",
                3,
                &[
                    ("q_num_heads", Attr::Int(1)),
                    ("kv_num_heads", Attr::Int(1)),
                ],
            ),
            vec![zeros(&[1, 2, 4]), zeros(&[1, 2, 4]), zeros(&[1, 2, 4])],
        ),
        (
            "NegativeLogLikelihoodLoss with a class past the end",
            node("NegativeLogLikelihoodLoss", 2, &[]),
            vec![zeros(&[2, 3]), i64s(&[0, 7], &[2])],
        ),
        (
            "SoftmaxCrossEntropyLoss with a mismatched target",
            node("SoftmaxCrossEntropyLoss", 2, &[]),
            vec![zeros(&[2, 3]), i64s(&[0, 1, 2], &[3])],
        ),
        (
            "QuantizeLinear per axis with the wrong count",
            node("QuantizeLinear", 2, &[]),
            vec![zeros(&[2, 3]), f32s(&[1., 1.], &[2])],
        ),
        (
            "blocked DequantizeLinear with the wrong block count",
            node("DequantizeLinear", 2, &[("block_size", Attr::Int(2))]),
            vec![
                Some(
                    candle_core::Tensor::zeros(
                        (2, 4),
                        candle_core::DType::U8,
                        &candle_core::Device::Cpu,
                    )
                    .unwrap(),
                ),
                f32s(&[1.; 6], &[2, 3]),
            ],
        ),
        (
            "GroupNormalization with groups that do not divide the channels",
            node("GroupNormalization", 3, &[("num_groups", Attr::Int(3))]),
            vec![zeros(&[1, 4, 2]), zeros(&[4]), zeros(&[4])],
        ),
        (
            "LRN of size 0",
            node("LRN", 1, &[("size", Attr::Int(0))]),
            vec![zeros(&[1, 2, 2, 2])],
        ),
        (
            "MaxPool with a kernel of the wrong rank",
            node("MaxPool", 1, &[("kernel_shape", ints(&[2]))]),
            vec![zeros(&[1, 1, 3, 3])],
        ),
        (
            "MaxUnpool with an index past the output",
            node(
                "MaxUnpool",
                2,
                &[("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))],
            ),
            vec![zeros(&[1, 1, 1, 1]), i64s(&[99], &[1, 1, 1, 1])],
        ),
        (
            "ConvTranspose with a negative output size",
            node("ConvTranspose", 2, &[("pads", ints(&[9, 9]))]),
            vec![zeros(&[1, 1, 2]), zeros(&[1, 1, 2])],
        ),
        (
            "DeformConv with offsets of the wrong size",
            node("DeformConv", 3, &[]),
            vec![
                zeros(&[1, 1, 3, 3]),
                zeros(&[1, 1, 2, 2]),
                zeros(&[1, 3, 2, 2]),
            ],
        ),
        (
            "Col2Im with blocks that do not tile the image",
            node("Col2Im", 3, &[]),
            vec![zeros(&[1, 4, 5]), i64s(&[3, 3], &[2]), i64s(&[2, 2], &[2])],
        ),
        (
            "GridSample of an empty image",
            node("GridSample", 2, &[]),
            vec![zeros(&[1, 1, 0, 2]), zeros(&[1, 1, 1, 2])],
        ),
        (
            "RoiAlign with a batch index past the batch",
            node("RoiAlign", 3, &[]),
            vec![zeros(&[1, 1, 2, 2]), zeros(&[1, 4]), i64s(&[3], &[1])],
        ),
        (
            "Resize with a scale per missing axis",
            node("Resize", 3, &[]),
            vec![zeros(&[1, 1, 2, 2]), None, f32s(&[2., 2.], &[2])],
        ),
        (
            "LSTM weights for the wrong direction count",
            node(
                "LSTM",
                3,
                &[("direction", Attr::String("bidirectional".into()))],
            ),
            vec![zeros(&[1, 1, 2]), zeros(&[1, 8, 2]), zeros(&[1, 8, 2])],
        ),
        (
            "CausalConvWithState with a zero-width kernel",
            node("CausalConvWithState", 2, &[]),
            vec![zeros(&[1, 1, 2]), zeros(&[1, 1, 0])],
        ),
    ];
    assert_op_errors(23, cases);
}

#[test]
fn outputs_sized_by_values_are_checked_against_the_budget() {
    let cases: Vec<Case> = vec![
        (
            "Resize to a huge size",
            node("Resize", 4, &[]),
            vec![
                zeros(&[1, 1, 2, 2]),
                None,
                None,
                i64s(&[1, 1, 1 << 20, 1 << 20], &[4]),
            ],
        ),
        (
            "ConvTranspose to a huge output shape",
            node("ConvTranspose", 2, &[("output_shape", ints(&[1 << 40]))]),
            vec![zeros(&[1, 1, 2]), zeros(&[1, 1, 2])],
        ),
        (
            "MaxPool with huge padding",
            node(
                "MaxPool",
                1,
                &[("kernel_shape", ints(&[1])), ("pads", ints(&[0, 1 << 40]))],
            ),
            vec![zeros(&[1, 1, 2])],
        ),
        (
            "AffineGrid of a huge size",
            node("AffineGrid", 2, &[]),
            vec![zeros(&[1, 2, 3]), i64s(&[1, 1, 1 << 20, 1 << 20], &[4])],
        ),
        (
            "MaxUnpool to a huge output shape",
            node("MaxUnpool", 3, &[("kernel_shape", ints(&[1, 1]))]),
            vec![
                zeros(&[1, 1, 1, 1]),
                i64s(&[0], &[1, 1, 1, 1]),
                i64s(&[1, 1, 1 << 20, 1 << 20], &[4]),
            ],
        ),
    ];
    assert_over_budget(23, cases);
}
