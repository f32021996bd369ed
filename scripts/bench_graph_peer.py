#!/usr/bin/env python3
"""Side-by-side inference benchmark: ferry's ONNX graph runtime vs onnxruntime on all-MiniLM-L6-v2.

Workload: the all-MiniLM-L6-v2 ONNX export (`scripts/make_graph_fixtures.py --minilm` writes
target/models/all-MiniLM-L6-v2/model.onnx), one forward pass of batch 8 x seq 128: input_ids
uniform in [0, vocab) (vocab from the model folder's config.json, else 30522; seeded),
attention_mask all ones, token_type_ids all zeros. Output last_hidden_state [8, 128, 384].

onnxruntime side (in this process): InferenceSession with CPUExecutionProvider,
intra_op_num_threads = --threads, inter_op_num_threads 1, ExecutionMode.ORT_SEQUENTIAL,
GraphOptimizationLevel.ORT_ENABLE_ALL. --warmup untimed runs, then --runs timed runs
(time.perf_counter around session.run), per round.

ferry side (a subprocess per run, env RAYON_NUM_THREADS=--threads), twice per round:
    FERRY_BENCH --model PATH --batch B --seq T --threads N --json [--unoptimized] [FERRY_ARGS]
FERRY_BENCH is --ferry (default target/release/graph_bench); --ferry-args adds arguments (e.g.
"--runs 20 --warmup 3" once the binary takes them). It must print one JSON object on stdout
(log lines before it are tolerated) with at least
    ms_best     fastest timed forward pass, milliseconds
    ms_median   median timed forward pass, milliseconds
If the binary is missing, onnxruntime runs alone and the table says so.

Rounds (--repeat) are interleaved: ferry-opt, ferry-unopt, onnxruntime, ferry-opt, ... .
Per side, "best" is the minimum over rounds of each round's best and "median" the median of
the rounds' medians. Prints a Markdown table for docs/benchmarks.md, with the ratios
ferry-opt vs ferry-unopt and ferry-opt vs onnxruntime.

Usage:
    .venv/bin/python scripts/make_graph_fixtures.py --minilm        # once: the ONNX model
    cargo build --release --bin graph_bench                         # (or wherever it lives)
    .venv/bin/python scripts/bench_graph_peer.py [--ferry target/release/graph_bench]
    .venv/bin/python scripts/bench_graph_peer.py --only ort         # onnxruntime alone
Options: --model PATH  --batch 8  --seq 128  --threads 2  --runs 20  --warmup 3  --repeat 3
    --seed 0  --ferry-args "..."  --json-out FILE
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import sys
from pathlib import Path

from ferry_scripts import (die, ferry_env, load_average, load_text, machine, machine_line,
                           report_header, require_positive, run_json, time_ms)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FERRY = "target/release/graph_bench"
DEFAULT_MODEL = REPO / "target" / "models" / "all-MiniLM-L6-v2" / "model.onnx"
FERRY_FIELDS = ("ms_best", "ms_median")


# ----------------------------------------------------------------------------- onnxruntime


def make_session(model, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def make_feed(session, model, batch, seq, seed):
    import numpy as np
    vocab = 30522
    cfg = Path(model).parent / "config.json"
    if cfg.is_file():
        vocab = int(json.loads(cfg.read_text()).get("vocab_size", vocab))
    rng = np.random.default_rng(seed)
    all_inputs = {
        "input_ids": rng.integers(0, vocab, size=(batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
        "token_type_ids": np.zeros((batch, seq), dtype=np.int64),
    }
    names = [i.name for i in session.get_inputs()]
    unknown = [n for n in names if n not in all_inputs]
    if unknown:
        die(f"{model} has inputs {unknown} this benchmark does not know how to fill")
    return {n: all_inputs[n] for n in names}


def run_ort(session, feed, runs, warmup):
    """Returns the timed runs in ms."""
    return time_ms(lambda: session.run(None, feed), runs, warmup)


# ----------------------------------------------------------------------------- ferry


def ferry_command(ferry, model, batch, seq, threads, runs, warmup, unoptimized, extra):
    # The same number of warm-up and timed runs as onnxruntime gets, so "best" compares alike.
    cmd = [str(ferry), "--model", str(model), "--batch", str(batch), "--seq", str(seq),
           "--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup), "--json"]
    if unoptimized:
        cmd.append("--unoptimized")
    return cmd + extra


def run_ferry(cmd, env):
    result, wall = run_json(cmd, env)
    require_positive(result, FERRY_FIELDS)
    if result["ms_best"] > result["ms_median"]:
        die(f"ferry's ms_best {result['ms_best']} > ms_median {result['ms_median']}")
    return result, wall


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                    help="the ONNX model (default target/models/all-MiniLM-L6-v2/model.onnx)")
    ap.add_argument("--ferry", type=Path, default=Path(DEFAULT_FERRY),
                    help=f"ferry benchmark binary (default {DEFAULT_FERRY})")
    ap.add_argument("--ferry-args", default="",
                    help="extra arguments appended to both ferry command lines")
    ap.add_argument("--only", choices=["ort", "ferry"], help="run one side alone")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20, help="timed runs per round, each side")
    ap.add_argument("--warmup", type=int, default=3, help="untimed warm-up runs per round, each side")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds per side")
    ap.add_argument("--seed", type=int, default=0, help="seed of the input ids")
    ap.add_argument("--json-out", type=Path, help="also write the results here as JSON")
    args = ap.parse_args()
    if min(args.batch, args.seq, args.threads, args.runs, args.repeat) < 1 or args.warmup < 0:
        die("--batch, --seq, --threads, --runs and --repeat must be >= 1, --warmup >= 0")
    model = args.model if args.model.is_absolute() else (Path.cwd() / args.model)
    if not model.is_file():
        die(f"{args.model} not found (make it with .venv/bin/python "
            "scripts/make_graph_fixtures.py --minilm)")
    do_ort, do_ferry = args.only != "ferry", args.only != "ort"
    ferry_note = None
    if do_ferry and not args.ferry.is_file():
        if args.only == "ferry":
            die(f"ferry benchmark binary {args.ferry} not found")
        ferry_note = (f"ferry benchmark binary {args.ferry} not found: onnxruntime alone "
                      "(build it with cargo build --release, or give --ferry PATH)")
        print(f"NOTE: {ferry_note}", file=sys.stderr)
        do_ferry = False
    elif do_ferry and not os.access(args.ferry, os.X_OK):
        die(f"{args.ferry} is not executable")

    env = ferry_env(args.threads)
    extra = shlex.split(args.ferry_args)
    cmds = {}
    if do_ferry:
        cmds = {"ferry-opt": ferry_command(args.ferry, model, args.batch, args.seq,
                                           args.threads, args.runs, args.warmup, False, extra),
                "ferry-unopt": ferry_command(args.ferry, model, args.batch, args.seq,
                                             args.threads, args.runs, args.warmup, True, extra)}
    ort_version = session = feed = None
    if do_ort:
        import onnxruntime as ort
        ort_version = ort.__version__
        session = make_session(model, args.threads)
        feed = make_feed(session, model, args.batch, args.seq, args.seed)
        out = session.run(None, feed)[0]
        print(f"onnxruntime {ort_version}: output {out.dtype} {list(out.shape)}", flush=True)

    load_before = load_average()
    sides = list(cmds) + (["onnxruntime"] if do_ort else [])
    res = {s: {"best": [], "median": [], "runs": [], "wall": [], "json": None} for s in sides}
    for rep in range(args.repeat):
        line = f"round {rep + 1}/{args.repeat}:"
        for side, cmd in cmds.items():  # ferry first: a broken binary fails before the slow part
            r, wall = run_ferry(cmd, env)
            res[side]["best"].append(float(r["ms_best"]))
            res[side]["median"].append(float(r["ms_median"]))
            res[side]["wall"].append(wall)
            res[side]["json"] = r
            line += f" {side} {r['ms_best']:.2f}/{r['ms_median']:.2f} ms"
        if do_ort:
            times = run_ort(session, feed, args.runs, args.warmup)
            res["onnxruntime"]["best"].append(min(times))
            res["onnxruntime"]["median"].append(statistics.median(times))
            res["onnxruntime"]["runs"].append(times)
            line += f" onnxruntime {min(times):.2f}/{statistics.median(times):.2f} ms"
        print(line + " (best/median)", flush=True)
    load_after = load_average()

    summary = {s: {"ms_best": min(r["best"]), "ms_median": statistics.median(r["median"]),
                   "rounds_best": r["best"], "rounds_median": r["median"]}
               for s, r in res.items()}
    for s, cmd in cmds.items():
        summary[s]["command"] = shlex.join(cmd)
        summary[s]["process_wall_s"] = res[s]["wall"]
        summary[s]["last_json"] = res[s]["json"]
    if do_ort:
        summary["onnxruntime"]["runs_ms"] = res["onnxruntime"]["runs"]

    cmdline, now = report_header("bench_graph_peer.py")
    tokens = args.batch * args.seq
    print(f"all-MiniLM-L6-v2 (`{os.path.relpath(model, Path.cwd())}`), one forward pass of "
          f"batch {args.batch} x seq {args.seq} (full attention mask), {args.threads} threads. "
          f"onnxruntime {ort_version or '-'}: CPUExecutionProvider, intra-op {args.threads}, "
          f"inter-op 1, sequential, ORT_ENABLE_ALL, {args.warmup} warm-up + {args.runs} timed "
          f"runs per round. ferry: RAYON_NUM_THREADS={args.threads}, the same warm-up and timed runs. "
          f"{args.repeat} interleaved rounds; best = fastest run of all rounds, median = median "
          "of the rounds' medians.")
    if ferry_note:
        print()
        print(f"**{ferry_note}.**")
    print()
    print("| runtime | ms best | ms median | tokens/s (best) | ferry-opt speed-up (best) |")
    print("|---|---:|---:|---:|---:|")
    labels = {"ferry-opt": "ferry (optimized graph)", "ferry-unopt": "ferry (`--unoptimized`)",
              "onnxruntime": "onnxruntime (ORT_ENABLE_ALL)"}
    opt = summary.get("ferry-opt", {}).get("ms_best")
    for s in sides:
        b, m = summary[s]["ms_best"], summary[s]["ms_median"]
        ratio = f"{b / opt:.2f}x" if opt and s != "ferry-opt" else "-"
        print(f"| {labels[s]} | {b:.2f} | {m:.2f} | {tokens / b * 1e3:,.0f} | {ratio} |")
    print()
    if opt:
        u = summary["ferry-unopt"]
        print(f"ferry-opt vs ferry-unopt: {u['ms_best'] / opt:.2f}x (best), "
              f"{u['ms_median'] / summary['ferry-opt']['ms_median']:.2f}x (median) "
              "(> 1: the graph optimizations make ferry faster)")
        if do_ort:
            o = summary["onnxruntime"]
            print(f"ferry-opt vs onnxruntime: {o['ms_best'] / opt:.2f}x (best), "
                  f"{o['ms_median'] / summary['ferry-opt']['ms_median']:.2f}x (median) "
                  "(> 1: ferry is faster; < 1: onnxruntime is)")
        print()
    for s in sides:
        print(f"All rounds, {s} (ms best/median): "
              + "; ".join(f"{b:.2f}/{m:.2f}" for b, m in zip(res[s]["best"], res[s]["median"])))
    load = load_text(load_before, load_after)
    print(f"{machine_line()}; {args.threads} threads; {load}. Python {platform.python_version()}"
          + (f", onnxruntime {ort_version}" if ort_version else "") + f". Date: {now}.")

    if args.json_out:
        args.json_out.write_text(json.dumps({
            "command": cmdline, "date": now, **machine(), "onnxruntime": ort_version,
            "model": str(model), "batch": args.batch, "seq": args.seq, "threads": args.threads,
            "runs": args.runs,
            "warmup": args.warmup, "repeat": args.repeat, "ferry_note": ferry_note,
            "load_average": [load_before, load_after], "results": summary,
        }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
