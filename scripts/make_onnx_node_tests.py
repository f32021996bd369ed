#!/usr/bin/env python3
"""Write the ONNX package's own backend node test cases under OUT_DIR for ferry-graph's
`tests/onnx_backend.rs` (default place: target/onnx-node-tests).

    .venv/bin/python scripts/make_onnx_node_tests.py target/onnx-node-tests

The cases come from `onnx.backend.test.case.node.collect_testcases()` of the pinned onnx
(scripts/requirements-fixtures.txt), written the way onnx's own
`onnx/backend/test/cmd_tools.py generate-data` writes them:

    OUT_DIR/<case name>/model.onnx
    OUT_DIR/<case name>/test_data_set_N/input_K.pb     serialized TensorProto
    OUT_DIR/<case name>/test_data_set_N/output_K.pb

Only tensor-only cases are written: every graph input and output is a tensor (no sequence, map
or optional). The others are listed in the manifest, not written.

OUT_DIR/MANIFEST.json lists the cases: the onnx and numpy versions, and per case its ops, its
opset imports, the element types of its inputs and outputs and its number of data sets.

Deterministic: onnx seeds numpy before each exporter (np.random.seed(0)) and imports its case
modules in sorted order; the same onnx and numpy give the same bytes. About 6 s.

Atomic enough: everything is written to OUT_DIR.partial first, MANIFEST.json last, and the folder
then replaces OUT_DIR. An interrupted run leaves OUT_DIR.partial (removed by the next run) and
OUT_DIR as it was; a folder without MANIFEST.json is incomplete, and the test says so. An
existing OUT_DIR is replaced only when it holds nothing but test_* folders and MANIFEST.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings

GENERATOR = "scripts/make_onnx_node_tests.py"


def kind_of(type_proto) -> str:
    """The TypeProto's kind: tensor, sequence, map, optional, sparse_tensor or undefined."""
    return type_proto.WhichOneof("value") or "undefined"


def elem_name(type_proto) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(type_proto.tensor_type.elem_type)


def to_tensor_proto(value, name: str):
    from onnx import TensorProto, numpy_helper

    if isinstance(value, TensorProto):
        return value
    return numpy_helper.from_array(value, name)


def write_case(case, case_dir: str) -> dict:
    graph = case.model.graph
    os.makedirs(case_dir)
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(case.model.SerializeToString())
    for i, (inputs, outputs) in enumerate(case.data_sets):
        ds = os.path.join(case_dir, f"test_data_set_{i}")
        os.makedirs(ds)
        for what, values, infos in (
            ("input", inputs, graph.input),
            ("output", outputs, graph.output),
        ):
            for j, value in enumerate(values):
                t = to_tensor_proto(value, infos[j].name)
                with open(os.path.join(ds, f"{what}_{j}.pb"), "wb") as f:
                    f.write(t.SerializeToString())
    return {
        "name": case.name,
        "ops": sorted({(n.domain or "") + ("." if n.domain else "") + n.op_type for n in graph.node}),
        "opsets": {(o.domain or ""): o.version for o in case.model.opset_import},
        "inputs": [elem_name(v.type) for v in graph.input],
        "outputs": [elem_name(v.type) for v in graph.output],
        "data_sets": len(case.data_sets),
        "rtol": case.rtol,
        "atol": case.atol,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="where to write the cases (e.g. target/onnx-node-tests)")
    args = ap.parse_args()
    out = os.path.abspath(args.out_dir)
    partial = out + ".partial"
    old = out + ".old"

    # Replace only a folder of node test cases (test_* folders and a MANIFEST.json).
    if os.path.isdir(out):
        foreign = [
            n
            for n in os.listdir(out)
            if not (n == "MANIFEST.json" or n.startswith("test_"))
        ]
        if foreign:
            sys.exit(
                f"{out} holds {foreign[0]!r}, which is not an ONNX node test case: "
                "not replacing it (remove it or pick another folder)"
            )
    elif os.path.exists(out):
        sys.exit(f"{out} is not a folder")

    import numpy as np
    import onnx
    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings():
        # Casts and reductions in the exporters overflow on purpose (inf, NaN cases).
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases()
    cases = sorted(cases, key=lambda c: c.name)
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "duplicate case names"

    for d in (partial, old):
        if os.path.exists(d):
            shutil.rmtree(d)
    os.makedirs(partial)

    written = []
    skipped = []
    for case in cases:
        assert case.model is not None and case.data_sets, case.name
        graph = case.model.graph
        kinds = [kind_of(v.type) for v in list(graph.input) + list(graph.output)]
        if any(k != "tensor_type" for k in kinds):
            skipped.append(
                {
                    "name": case.name,
                    "kinds": sorted({k for k in kinds if k != "tensor_type"}),
                }
            )
            continue
        written.append(write_case(case, os.path.join(partial, case.name)))

    manifest = {
        "generator": GENERATOR,
        "onnx_version": onnx.__version__,
        "numpy_version": np.__version__,
        "total_cases": len(cases),
        "tensor_only_cases": len(written),
        "cases": written,
        "skipped_not_tensor_only": skipped,
    }
    # Last: a folder with a MANIFEST.json is complete.
    tmp = os.path.join(partial, "MANIFEST.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(partial, "MANIFEST.json"))

    if os.path.exists(out):
        os.rename(out, old)
    os.rename(partial, out)
    if os.path.exists(old):
        shutil.rmtree(old)
    print(
        f"make_onnx_node_tests: onnx {onnx.__version__}: {len(written)} tensor-only cases "
        f"of {len(cases)} written to {out} ({len(skipped)} with sequences, maps or optionals skipped)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
