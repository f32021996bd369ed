#!/usr/bin/env python3
"""Side-by-side forward benchmark: ferry's runtime (f32 HF folder, q8_0 and q4_k GGUF) against
transformers (PyTorch) f32 on SmolLM2-135M, on the same token ids.

Workload: one forward pass of batch --batch x seq --seq token ids (uniform in [0, vocab),
seeded, no padding), every position's logits. transformers: AutoModelForCausalLM in f32,
torch.set_num_threads(--threads), torch.no_grad(), use_cache=False, in this process. ferry:
`runtime_bench --model M --ids IDS.npy --threads N --runs R --warmup W --kernels K` (a
subprocess per round; env RAYON_NUM_THREADS=N), one JSON line with ms_best / ms_median. GGUFs
run dequantized at load (--kernels f32, what `ferry verify` does by default) and, with --ggml,
on candle's quantized kernels too (what `ferry run` does by default).

The GGUF files are written first with `ferry convert` (target/release/ferry) unless present.
Rounds (--repeat) are interleaved: transformers, ferry f32, ferry q8_0, ferry q4_k, ... . Per
side, "best" is the minimum over rounds of each round's best, "median" the median of the
rounds' medians. Prints a Markdown table for docs/benchmarks.md.

Usage:
    cargo build --release -p ferry-cli -p ferry-benches --bin ferry --bin runtime_bench
    .venv/bin/python scripts/bench_runtime_peer.py [--model target/models/SmolLM2-135M]
Options: --batch 8 --seq 128 --threads 2 --runs 3 --warmup 1 --repeat 2 --only torch|ferry --ggml
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ferry_scripts import time_ms

REPO = Path(__file__).resolve().parent.parent


def ferry_side(bench, model, ids, args, kernels="f32"):
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    cmd = [str(bench), "--model", str(model), "--ids", str(ids), "--threads", str(args.threads),
           "--runs", str(args.runs), "--warmup", str(args.warmup), "--kernels", kernels]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    r = json.loads(line)
    return r["ms_best"], r["ms_median"]


def torch_side(model, ids, args):
    import torch
    x = torch.from_numpy(ids)
    with torch.no_grad():
        times = time_ms(lambda: model(input_ids=x, use_cache=False), args.runs, args.warmup)
    times.sort()
    return times[0], times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "target/models/SmolLM2-135M")
    ap.add_argument("--ferry", type=Path, default=REPO / "target/release/ferry")
    ap.add_argument("--bench", type=Path, default=REPO / "target/release/runtime_bench")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", choices=["torch", "ferry"])
    ap.add_argument("--ggml", action="store_true",
                    help="also time the GGUFs kept quantized (ferry's int8 GEMM where the CPU has AVX-512 VNNI or AVX2 + FMA)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    cfg = json.loads((args.model / "config.json").read_text())
    ids = np.random.default_rng(0).integers(0, cfg["vocab_size"], (args.batch, args.seq), dtype=np.int64)
    ids_path = work / "ids.npy"
    np.save(ids_path, ids)
    sides = {}
    if args.only != "ferry":
        import torch
        from transformers import AutoModelForCausalLM
        torch.set_num_threads(args.threads)
        hf = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
        sides["transformers f32"] = lambda: torch_side(hf, ids, args)
    if args.only != "torch":
        ggufs = {}
        for q in ["q8_0", "q4_k"]:
            g = work / f"model-{q}.gguf"
            subprocess.run([str(args.ferry), "convert", str(args.model), str(g), "--quant", q, "--quiet"],
                           check=True, capture_output=True)
            ggufs[q] = g
        sides["ferry f32"] = lambda: ferry_side(args.bench, args.model, ids_path, args)
        for q, g in ggufs.items():
            sides[f"ferry {q}, dequantized at load"] = lambda g=g: ferry_side(args.bench, g, ids_path, args)
        if args.ggml:
            for q, g in ggufs.items():
                sides[f"ferry {q}, kept quantized (ferry int8 GEMM, 8-bit activations)"] = lambda g=g: ferry_side(args.bench, g, ids_path, args, "ggml")
    results = {k: [] for k in sides}
    for _ in range(args.repeat):
        for name, fn in sides.items():
            results[name].append(fn())
    tokens = args.batch * args.seq
    base = results.get("transformers f32")
    base_best = min(b for b, _ in base) if base else None
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, "
          f"{datetime.date.today()}, batch {args.batch} x seq {args.seq}, {args.repeat} rounds of {args.runs} runs\n")
    print("| side | best ms | median ms | tokens/s (best) | vs transformers (best) |")
    print("|---|---:|---:|---:|---:|")
    for name, rs in results.items():
        best = min(b for b, _ in rs)
        med = statistics.median(m for _, m in rs)
        ratio = f"{base_best / best:.2f}x" if base_best else "-"
        print(f"| {name} | {best:.0f} | {med:.0f} | {tokens / best * 1e3:.0f} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
