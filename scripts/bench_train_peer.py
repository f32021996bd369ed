#!/usr/bin/env python3
"""Side-by-side training-throughput benchmark: ferry-train vs PyTorch on the CPU, same work.

Both sides train the same models with the same step, thread count and batch shapes:
  bag          the seed MultiLanguageModel: Embedding(10000, 100) -> mean over the tokens ->
               Linear(100, 30); batch 64 x 64 tokens, no padding (an all-ones mask is passed
               and applied: x = (e*m).sum(1) / m.sum(1).clamp(min=1))
  transformer  Embedding(10000, 128) + positional Embedding(64, 128) -> 2 post-norm
               nn.TransformerEncoderLayer (4 heads, FFN 512, relu, dropout 0, batch_first) ->
               plain mean over the tokens -> Linear(128, 30); batch 32 x 64 tokens, no padding:
               the encoder is called without src_key_padding_mask (ferry does no masking either)
One step = forward, CrossEntropyLoss (mean), backward, clip_grad_norm_(1.0), AdamW(lr=1e-3,
betas (0.9, 0.999), eps 1e-8, weight_decay 0.01), zero_grad. Ids are uniform in [0, V), labels
in [0, C); every step gets a fresh batch, all generated before timing. --warmup steps run
untimed, then --steps timed steps. tokens/s = steps * B * T / seconds.

PyTorch side (in this process): torch.set_num_threads(--threads) (and interop threads 1),
float32, model.train(). A fresh model and optimizer each run.

ferry side (a subprocess per run, env RAYON_NUM_THREADS=--threads):
    FERRY_BENCH --workload bag|transformer --steps N --warmup W --threads T
FERRY_BENCH is --ferry (default target/release/train_throughput). It must print one JSON object
(log lines before it are tolerated) with at least
    seconds      in-process seconds of the N timed steps only
    steps        N
    tokens_per_s N * B * T / seconds
Each side runs --repeat times per workload, interleaved (ferry, torch, ferry, torch, ...); the
best of each is kept. Prints a Markdown table for docs/benchmarks.md.

Usage:
    cargo build --release -p ferry-train --bin train_throughput   # (or wherever it lives)
    .venv/bin/python scripts/bench_train_peer.py [--ferry target/release/train_throughput]
    .venv/bin/python scripts/bench_train_peer.py --only torch     # the PyTorch side alone
Options: --workloads bag,transformer  --threads 2  --repeat 3  --steps-bag 300
    --steps-transformer 40  --warmup-bag 20  --warmup-transformer 5  --json-out FILE
"""
import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from ferry_scripts import (die, ferry_env, fmt_rate, load_average, load_text, machine,
                           machine_line, report_header, require_positive, run_json)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FERRY = "target/release/train_throughput"
FERRY_FIELDS = ("seconds", "steps", "tokens_per_s")

WORKLOADS = {
    "bag": {"V": 10000, "D": 100, "C": 30, "B": 64, "T": 64, "steps": 300, "warmup": 20},
    "transformer": {"V": 10000, "P": 64, "D": 128, "H": 4, "F": 512, "L": 2, "C": 30,
                    "B": 32, "T": 64, "steps": 40, "warmup": 5},
}
LR, WEIGHT_DECAY, CLIP = 1e-3, 0.01, 1.0


# ----------------------------------------------------------------------------- torch side


def make_model(name, w):
    import torch
    from torch import nn

    class Bag(nn.Module):
        def __init__(s, V, D, C):
            super().__init__()
            s.embedding = nn.Embedding(V, D)
            s.fc = nn.Linear(D, C)

        def forward(s, ids, mask):
            e = s.embedding(ids)
            m = mask.unsqueeze(-1).float()
            x = (e * m).sum(1) / m.sum(1).clamp(min=1)
            return s.fc(x)

    class Classifier(nn.Module):
        def __init__(s, V, P, D, H, F, L, C):
            super().__init__()
            s.tok_embed = nn.Embedding(V, D)
            s.pos_embed = nn.Embedding(P, D)
            layer = nn.TransformerEncoderLayer(D, H, F, dropout=0.0, activation="relu",
                                               batch_first=True, norm_first=False)
            s.encoder = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
            s.head = nn.Linear(D, C)

        def forward(s, ids, mask):  # no padding in this benchmark: mask is not used
            x = s.tok_embed(ids) + s.pos_embed(torch.arange(ids.shape[1]))[None]
            x = s.encoder(x)
            return s.head(x.mean(1))

    if name == "bag":
        return Bag(w["V"], w["D"], w["C"])
    return Classifier(w["V"], w["P"], w["D"], w["H"], w["F"], w["L"], w["C"])


def make_batches(w, n, seed):
    import torch
    g = torch.Generator().manual_seed(seed)
    B, T = w["B"], w["T"]
    mask = torch.ones(B, T, dtype=torch.uint8)
    return [(torch.randint(0, w["V"], (B, T), generator=g, dtype=torch.int64), mask,
             torch.randint(0, w["C"], (B,), generator=g, dtype=torch.int64)) for _ in range(n)]


def run_torch(name, w, steps, warmup, batches):
    """Trains warmup + steps steps; returns (seconds of the timed steps, last loss)."""
    import torch
    torch.manual_seed(0)
    model = make_model(name, w)
    model.train()
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=WEIGHT_DECAY)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(ids, mask, labels):
        loss = loss_fn(model(ids, mask), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for i in range(warmup):
        step(*batches[i])
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        loss = step(*batches[i])
    seconds = time.perf_counter() - t0  # CPU ops are synchronous: all work is done here
    return seconds, float(loss.item())


# ----------------------------------------------------------------------------- ferry side


def run_ferry(ferry, name, steps, warmup, threads, env):
    cmd = [str(ferry), "--workload", name, "--steps", str(steps), "--warmup", str(warmup),
           "--threads", str(threads)]
    result, wall = run_json(cmd, env)
    require_positive(result, FERRY_FIELDS)
    if int(result["steps"]) != steps:
        die(f"ferry ran {result['steps']} timed steps, asked for {steps}")
    w = WORKLOADS[name]
    own = steps * w["B"] * w["T"] / float(result["seconds"])
    if abs(float(result["tokens_per_s"]) / own - 1) > 0.01:
        print(f"WARNING: ferry reports tokens_per_s {result['tokens_per_s']:.0f} but "
              f"steps * {w['B']} * {w['T']} / seconds = {own:.0f}; is its batch shape "
              "the same? The table uses the latter", file=sys.stderr)
    return result, wall, cmd


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", type=Path, default=Path(DEFAULT_FERRY),
                    help=f"ferry benchmark binary (default {DEFAULT_FERRY})")
    ap.add_argument("--only", choices=["torch", "ferry"], help="run one side alone")
    ap.add_argument("--workloads", default="bag,transformer",
                    help="comma-separated subset of: " + ", ".join(WORKLOADS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per side; best is kept")
    for name, w in WORKLOADS.items():
        ap.add_argument(f"--steps-{name}", type=int, default=w["steps"],
                        help=f"timed steps for {name} (default {w['steps']})")
        ap.add_argument(f"--warmup-{name}", type=int, default=w["warmup"],
                        help=f"untimed warm-up steps for {name} (default {w['warmup']})")
    ap.add_argument("--seed", type=int, default=0, help="seed of the torch side's batches")
    ap.add_argument("--json-out", type=Path, help="also write the results here as JSON")
    args = ap.parse_args()
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    bad = [n for n in names if n not in WORKLOADS]
    if bad or not names:
        die(f"unknown workload(s) {bad}; choose from {', '.join(WORKLOADS)}")
    if args.threads < 1 or args.repeat < 1:
        die("--threads and --repeat must be >= 1")
    plan = {n: (getattr(args, f"steps_{n}"), getattr(args, f"warmup_{n}")) for n in names}
    if any(s < 1 or wu < 0 for s, wu in plan.values()):
        die("--steps-* must be >= 1 and --warmup-* >= 0")
    do_torch, do_ferry = args.only != "ferry", args.only != "torch"
    if do_ferry:
        if not args.ferry.is_file():
            die(f"ferry benchmark binary {args.ferry} not found (build it with cargo build "
                "--release, give --ferry PATH, or run --only torch)")
        if not os.access(args.ferry, os.X_OK):
            die(f"{args.ferry} is not executable")

    env = ferry_env(args.threads)
    torch_version = None
    if do_torch:
        import torch
        torch.set_num_threads(args.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        torch_version = torch.__version__
        if torch.get_num_threads() != args.threads:
            die(f"torch runs {torch.get_num_threads()} threads, not {args.threads}")

    load_before = load_average()
    results = {n: {"torch": [], "ferry": [], "ferry_wall": [], "torch_loss": None,
                   "ferry_json": None, "ferry_cmd": None} for n in names}
    for n in names:
        steps, warmup = plan[n]
        w = WORKLOADS[n]
        batches = make_batches(w, warmup + steps, args.seed) if do_torch else None
        for rep in range(args.repeat):
            line = f"{n} run {rep + 1}/{args.repeat}:"
            if do_ferry:  # ferry first: a broken binary fails before the slow part
                res, wall, cmd = run_ferry(args.ferry, n, steps, warmup, args.threads, env)
                results[n]["ferry"].append(float(res["seconds"]))
                results[n]["ferry_wall"].append(wall)
                results[n]["ferry_json"], results[n]["ferry_cmd"] = res, shlex.join(cmd)
                line += f" ferry {res['seconds']:.3f} s (process wall {wall:.2f} s)"
            if do_torch:
                sec, loss = run_torch(n, w, steps, warmup, batches)
                results[n]["torch"].append(sec)
                results[n]["torch_loss"] = loss
                line += f" torch {sec:.3f} s (last loss {loss:.4f})"
            print(line, flush=True)
        del batches
    load_after = load_average()

    cmdline, now = report_header("bench_train_peer.py")
    k = args.repeat
    print(f"{args.threads} threads (torch.set_num_threads({args.threads}), interop 1; ferry: "
          f"--threads {args.threads}, RAYON_NUM_THREADS={args.threads}). One step = forward, "
          f"cross entropy, backward, clip_grad_norm_(1.0), AdamW(lr 1e-3, wd 0.01). "
          f"Best of {k} runs per side, interleaved; warm-up steps untimed.")
    print()
    print("| workload | batch | timed steps | ferry tokens/s | torch tokens/s | ferry / torch | "
          "ferry ms/step | torch ms/step |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for n in names:
        steps, warmup = plan[n]
        w = WORKLOADS[n]
        tokens = steps * w["B"] * w["T"]
        r = results[n]
        fb = min(r["ferry"]) if r["ferry"] else None
        tb = min(r["torch"]) if r["torch"] else None
        f_tps = tokens / fb if fb else None
        t_tps = tokens / tb if tb else None
        summary[n] = {"steps": steps, "warmup": warmup, "B": w["B"], "T": w["T"],
                      "ferry_seconds": r["ferry"], "ferry_process_wall": r["ferry_wall"],
                      "ferry_tokens_per_s": f_tps, "ferry_json": r["ferry_json"],
                      "ferry_command": r["ferry_cmd"], "torch_seconds": r["torch"],
                      "torch_tokens_per_s": t_tps, "torch_last_loss": r["torch_loss"]}
        cell = lambda x, f: f(x) if x is not None else "-"
        print(f"| {n} | {w['B']} x {w['T']} | {steps} (+{warmup}) | {cell(f_tps, fmt_rate)} | "
              f"{cell(t_tps, fmt_rate)} | "
              f"{f'{f_tps / t_tps:.2f}x' if f_tps and t_tps else '-'} | "
              f"{cell(fb, lambda s: f'{1e3 * s / steps:.2f}')} | "
              f"{cell(tb, lambda s: f'{1e3 * s / steps:.2f}')} |")
    print()
    for n in names:
        r = results[n]
        print(f"All runs, {n} (s): "
              + "; ".join(f"{side} " + ", ".join(f"{t:.3f}" for t in r[side])
                          for side in ("ferry", "torch") if r[side]))
    load = load_text(load_before, load_after)
    print(f"{machine_line()}; {args.threads} threads; {load}. Python {platform.python_version()}"
          + (f", torch {torch_version}" if torch_version else "") + f". Date: {now}.")

    if args.json_out:
        args.json_out.write_text(json.dumps({
            "command": cmdline, "date": now, **machine(), "torch": torch_version,
            "threads": args.threads, "repeat": k,
            "load_average": [load_before, load_after], "workloads": summary,
        }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
