#!/usr/bin/env python3
"""onnxruntime's own per-op profile of an ONNX model, to compare with `graph_bench --profile`.

Runs the model with CPUExecutionProvider, ORT_ENABLE_ALL, intra-op --threads, inter-op 1,
sequential, profiling on; feeds as scripts/bench_graph_peer.py makes them (random ids, full
mask, zero token types; seeded). Prints the best run and, per op type, the nodes per run and
the mean milliseconds per run (profiling adds some overhead to every node).

Usage:
    .venv/bin/python scripts/profile_ort.py [--model target/models/all-MiniLM-L6-v2/model.onnx]
        [--batch 8] [--seq 128] [--threads 2] [--runs 23]
"""
import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "target/models/all-MiniLM-L6-v2/model.onnx"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=23)
    args = ap.parse_args()

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    shape = (args.batch, args.seq)
    feeds = {
        "input_ids": rng.integers(0, 30522, shape).astype(np.int64),
        "attention_mask": np.ones(shape, np.int64),
        "token_type_ids": np.zeros(shape, np.int64),
    }
    names = {i.name for i in sess.get_inputs()}
    feeds = {k: v for k, v in feeds.items() if k in names}
    for _ in range(args.runs):
        sess.run(None, feeds)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    runs = [e["dur"] for e in events if e.get("name") == "model_run"]
    per_op = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]].append(e["dur"])
    print(f"{len(runs)} runs, best {min(runs) / 1e3:.2f} ms")
    for op, durs in sorted(per_op.items(), key=lambda kv: -sum(kv[1])):
        print(f"{op:30s} {len(durs) // len(runs):4d} nodes {sum(durs) / len(runs) / 1e3:8.2f} ms/run (mean)")


if __name__ == "__main__":
    main()
