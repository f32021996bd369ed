#!/usr/bin/env python3
"""Write tiny hostile ONNX graphs under fixtures/hostile_onnx/ for ferry-graph's memory budget.

Each graph is a few hundred bytes and asks one op to materialize far more memory than a machine
has (16 GiB to 48 TiB), or carries an attribute that overflows a size computation. They are what
issue 14's fuzzing of `ferry optimize` / `ferry run` found (finding 3), cut down to one op each.
Run through ferry (`ferry optimize`, `ferry optimize --verify`, `ferry run`), each must end in an
error naming the node and the memory budget within milliseconds: never an allocation of what
the graph asks for, an abort or a panic. crates/ferry-graph/tests/broken_inputs.rs checks that.

    constant_of_shape_16gib.onnx  ConstantOfShape([65536, 65536]) of f32: 16 GiB (2^32 elements,
                                  exactly what the old element-count guard still allowed)
    expand_1tib.onnx              Expand([1] -> [1048576, 262144]) f32: a 1 TiB view, which
                                  whoever reads it (the verify comparison, `ferry run`'s
                                  output) writes out
    tile_4tib.onnx                Tile([1] f32, repeats [2^40]): 4 TiB (and 2^40 copies in a
                                  list before that)
    range_32gib.onnx              Range(0, 2^32, 1) of int64: 32 GiB (again exactly at the old
                                  guard's element count)
    matmul_4tib.onnx              MatMul of two Expand views [2^20, 1] x [1, 2^20]: a 4 TiB
                                  product from 8 MiB of operands
    add_broadcast_4tib.onnx       Add of the same views: broadcasting to [2^20, 2^20] f32
    concat_16gib.onnx             Concat of four 4 GiB Expand views (each exactly at the
                                  budget): 16 GiB
    gather_4tib.onnx              Gather of 2^20 rows of a [1, 2^20] view: [2^20, 2^20] f32
    conv_pads_48tib.onnx          x [N, 3, 8, 8] -> Conv(pads 2^20 on every side) ->
                                  BatchNormalization: the padded input is 48 TiB per batch row;
                                  the old BatchNorm-fold probe and --verify ran it
    conv_pads_wrap.onnx           the same with pads [0, 0, 0, 2^62 + 9]: the padded size
                                  overflows 64 bits; a release build wrapped it and panicked
                                  inside candle ("range start index 4611686018427387913+k
                                  out of range"), a debug build panics on the overflow
    bn_probe_huge_input.onnx      x declared [2^40, 4] (fixed) -> MatMul -> BatchNormalization:
                                  the BatchNorm-fold probe and --verify make up a 16 TiB input
                                  from the declared dimensions
    reshape_wrap.onnx             Reshape of 36 values to [2^62 + 9, 4] (the product wraps to
                                  36 in 64 bits) -> Transpose

Usage (needs only the onnx package; .venv from scripts/setup-python.sh has it):
    .venv/bin/python scripts/make_hostile_onnx.py           # (re)write fixtures/hostile_onnx/
    .venv/bin/python scripts/make_hostile_onnx.py --check   # regenerate into a temp dir and
                                                            # compare with SHA256SUMS
Options:
    --out DIR   write somewhere other than fixtures/hostile_onnx/

The graphs are written with onnx.helper (IR 8, opset 17), node by node, no exporter: hostile
files are by definition not what an exporter writes. Each passes onnx.checker.check_model
(structure; no shape inference, which would itself try to reason about the sizes). None is ever
run by onnxruntime here: it would try the allocations. The bytes depend only on the onnx
package's serializer (made with onnx 1.23.2): --check compares SHA-256s.
"""

import sys
import tempfile
from pathlib import Path

from ferry_scripts import fixture_parser, sha256

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "fixtures" / "hostile_onnx"
OPSET = 17


def graphs():
    """name -> ModelProto."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def const(name, values, dtype):
        return numpy_helper.from_array(np.array(values, dtype=dtype), name)

    def model(name, nodes, inits, outputs, inputs=()):
        g = helper.make_graph(nodes, name, list(inputs), list(outputs), initializer=inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="ferry scripts/make_hostile_onnx.py")
        m.ir_version = 8
        return m

    def out(name, rank, elem=TensorProto.FLOAT):
        return helper.make_tensor_value_info(name, elem, [f"{name}{i}" for i in range(rank)])

    one = lambda name, shape: const(name, np.ones(shape), np.float32)  # noqa: E731
    i64 = lambda name, v: const(name, v, np.int64)  # noqa: E731
    two_views = [  # [2^20, 1] and [1, 2^20] views of one value
        helper.make_node("Expand", ["one", "rows"], ["a"], name="expand_rows"),
        helper.make_node("Expand", ["one", "cols"], ["b"], name="expand_cols"),
    ]
    two_view_inits = [one("one", [1, 1]), i64("rows", [1 << 20, 1]), i64("cols", [1, 1 << 20])]
    conv_bn = lambda pads: ([  # noqa: E731
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=pads),
        helper.make_node("BatchNormalization", ["c", "s", "bias", "mean", "var"], ["y"],
                         name="bn"),
    ], [
        const("w", np.full((4, 3, 1, 1), 0.5), np.float32),
        one("s", [4]), const("bias", np.zeros(4), np.float32),
        const("mean", np.zeros(4), np.float32), one("var", [4]),
    ])
    x_nchw = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])

    m = {}
    m["constant_of_shape_16gib"] = model("constant_of_shape_16gib", [
        helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill",
                         value=helper.make_tensor("value", TensorProto.FLOAT, [1], [1.0])),
    ], [i64("shape", [65536, 65536])], [out("y", 2)])
    m["expand_1tib"] = model("expand_1tib", [
        helper.make_node("Expand", ["one", "shape"], ["y"], name="expand"),
    ], [one("one", [1]), i64("shape", [1 << 20, 1 << 18])], [out("y", 2)])
    m["tile_4tib"] = model("tile_4tib", [
        helper.make_node("Tile", ["one", "repeats"], ["y"], name="tile"),
    ], [one("one", [1]), i64("repeats", [1 << 40])], [out("y", 1)])
    m["range_32gib"] = model("range_32gib", [
        helper.make_node("Range", ["start", "limit", "delta"], ["y"], name="range"),
    ], [i64("start", 0), i64("limit", 1 << 32), i64("delta", 1)], [out("y", 1, TensorProto.INT64)])
    m["matmul_4tib"] = model("matmul_4tib", two_views + [
        helper.make_node("MatMul", ["a", "b"], ["y"], name="matmul"),
    ], two_view_inits, [out("y", 2)])
    m["add_broadcast_4tib"] = model("add_broadcast_4tib", two_views + [
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ], two_view_inits, [out("y", 2)])
    m["concat_16gib"] = model("concat_16gib", [
        helper.make_node("Expand", ["one", "shape"], ["e"], name="expand"),
        helper.make_node("Concat", ["e", "e", "e", "e"], ["y"], name="concat", axis=0),
    ], [one("one", [1]), i64("shape", [1 << 30])], [out("y", 1)])
    m["gather_4tib"] = model("gather_4tib", [
        helper.make_node("Expand", ["one", "cols"], ["table"], name="expand_cols"),
        helper.make_node("ConstantOfShape", ["n"], ["idx"], name="zeros",
                         value=helper.make_tensor("value", TensorProto.INT64, [1], [0])),
        helper.make_node("Gather", ["table", "idx"], ["y"], name="gather", axis=0),
    ], [one("one", [1, 1]), i64("cols", [1, 1 << 20]), i64("n", [1 << 20])], [out("y", 3)])
    nodes, inits = conv_bn([1 << 20] * 4)
    m["conv_pads_48tib"] = model("conv_pads_48tib", nodes, inits, [out("y", 4)], [x_nchw])
    nodes, inits = conv_bn([0, 0, 0, (1 << 62) + 9])
    m["conv_pads_wrap"] = model("conv_pads_wrap", nodes, inits, [out("y", 4)], [x_nchw])
    m["bn_probe_huge_input"] = model("bn_probe_huge_input", [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("BatchNormalization", ["h", "s", "bias", "mean", "var"], ["y"],
                         name="bn"),
    ], [
        const("w", np.eye(4), np.float32), one("s", [4]),
        const("bias", np.zeros(4), np.float32), const("mean", np.zeros(4), np.float32),
        one("var", [4]),
    ], [out("y", 2)], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1 << 40, 4])])
    m["reshape_wrap"] = model("reshape_wrap", [
        helper.make_node("Reshape", ["v", "shape"], ["r"], name="reshape"),
        helper.make_node("Transpose", ["r"], ["y"], name="transpose", perm=[1, 0]),
    ], [const("v", np.arange(36), np.float32), i64("shape", [(1 << 62) + 9, 4])], [out("y", 2)])
    return m


def build(out):
    import onnx
    out.mkdir(parents=True, exist_ok=True)
    sums = []
    for name, m in sorted(graphs().items()):
        onnx.checker.check_model(m)
        data = m.SerializeToString()
        (out / f"{name}.onnx").write_bytes(data)
        sums.append(f"{sha256(data)}  {name}.onnx")
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n", encoding="utf-8")
    return sums


def check(out):
    with tempfile.TemporaryDirectory() as tmp:
        got = build(Path(tmp))
    want = (out / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    bad = sorted(set(got) ^ set(want))
    for line in want:
        digest, rel = line.split("  ", 1)
        path = out / rel
        if not path.is_file() or sha256(path.read_bytes()) != digest:
            bad.append(f"committed {rel} does not match SHA256SUMS")
    if bad:
        print("CHECK FAILED:", *bad, sep="\n  ", file=sys.stderr)
        return 1
    print(f"check OK: {len(want)} files in {out} match the regenerated graphs")
    return 0


def main():
    ap = fixture_parser(__doc__, DEFAULT_OUT)
    a = ap.parse_args()
    if a.check:
        return check(a.out)
    for line in build(a.out):
        digest, rel = line.split("  ", 1)
        print(f"{a.out / rel}: {(a.out / rel).stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
