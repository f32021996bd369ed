#!/usr/bin/env python3
"""Side-by-side conversion benchmark: ferry vs the Python peers vs `cp` of the same bytes.

Makes a synthetic f32 checkpoint (default ~1 GB) with PyTorch, then times, each as a separate
process under GNU time (wall seconds and peak RSS):
  - `cp` of the .pth (the disk-copy floor),
  - pth -> safetensors: `ferry convert` vs `torch.load` + `safetensors.torch.save_file`,
  - safetensors -> GGUF q8_0 and q4_0: `ferry convert --quant` vs gguf-py
    (`gguf.quants.quantize` + `GGUFWriter`).
Each command runs once to warm the page cache, then --repeat times; the best run is kept.
Prints a Markdown table for docs/benchmarks.md.

Usage: .venv/bin/python scripts/bench_peer.py --ferry target/release/ferry [--size-gb 1.0]
"""
import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

PY_PTH_TO_ST = """
import sys, torch, safetensors.torch
sd = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
safetensors.torch.save_file(sd, sys.argv[2])
"""

PY_ST_TO_GGUF = """
import sys, numpy as np, gguf
from safetensors.numpy import safe_open
qtype = getattr(gguf.GGMLQuantizationType, sys.argv[3].upper())
w = gguf.GGUFWriter(sys.argv[2], "ferry-bench")
with safe_open(sys.argv[1], framework="np") as f:
    for name in f.keys():
        a = f.get_tensor(name)
        q = gguf.quants.quantize(a, qtype)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
"""


def timed(cmd, repeat):
    """Best wall time (s) and the peak RSS (MiB) of that run."""
    best = None
    for i in range(repeat + 1):
        # Flush earlier runs' dirty pages first, so one run's writeback does not land in the next.
        subprocess.run(["sync"], check=True)
        with tempfile.NamedTemporaryFile("r") as out:
            t0 = time.perf_counter()
            subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", out.name] + cmd, check=True,
                           stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            rss_kib = int(out.read().split()[-1])
        if i == 0:
            continue  # warm-up
        if best is None or wall < best[0]:
            best = (wall, rss_kib / 1024)
    return best


def make_checkpoint(path_pth, path_st, size_gb):
    import torch
    import safetensors.torch
    torch.manual_seed(0)
    n = max(1, round(size_gb * 1e9 / (4096 * 4096 * 4)))
    sd = {f"layers.{i}.weight": torch.randn(4096, 4096) for i in range(n)}
    torch.save(sd, path_pth)
    safetensors.torch.save_file(sd, path_st)
    return sum(t.numel() * 4 for t in sd.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", required=True, help="path to a release build of ferry")
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--work", default="bench-data", help="scratch folder (large files)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    pth = os.path.join(args.work, "synthetic.pth")
    st = os.path.join(args.work, "synthetic.safetensors")
    nbytes = make_checkpoint(pth, st, args.size_gb)
    py = sys.executable
    out = lambda name: os.path.join(args.work, name)
    rows = []
    def row(task, tool, cmd):
        wall, rss = timed(cmd, args.repeat)
        rows.append((task, tool, wall, rss))
        print(f"{task:28} {tool:32} {wall:7.3f} s  {rss:8.1f} MiB", file=sys.stderr)

    row("copy .pth", "cp", ["cp", pth, out("copy.pth")])
    # ferry syncs what it writes before renaming it into place; `cp` does not. This row is the
    # floor for a durable copy.
    row("copy .pth", "cp + sync", ["sh", "-c", f"cp {pth} {out('copy2.pth')} && sync"])
    row("pth -> safetensors", "ferry", [args.ferry, "convert", pth, out("ferry.safetensors"), "-q"])
    row("pth -> safetensors", "torch.load + save_file", [py, "-c", PY_PTH_TO_ST, pth, out("py.safetensors")])
    for q in ["q8_0", "q4_0"]:
        row(f"safetensors -> gguf {q}", "ferry", [args.ferry, "convert", st, out(f"ferry-{q}.gguf"), "--quant", q, "-q"])
        row(f"safetensors -> gguf {q}", "gguf-py quantize + GGUFWriter", [py, "-c", PY_ST_TO_GGUF, st, out(f"py-{q}.gguf"), q])

    print(f"\nModel: {nbytes / 1e9:.2f} GB f32 ({nbytes // (4096 * 4096 * 4)} tensors of 4096x4096). "
          f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}. "
          f"Date: {time.strftime('%Y-%m-%d')}. Best of {args.repeat} warm runs.\n")
    print("| task | tool | wall s | speed vs cp / cp + sync | vs Python | peak RSS MiB | RSS / model |")
    print("|---|---|---:|---:|---:|---:|---:|")
    cp, cp_sync = rows[0][2], rows[1][2]
    for task, tool, wall, rss in rows:
        peer = next((r[2] for r in rows if r[0] == task and r[1] not in ("ferry", "cp", "cp + sync")), None)
        vs_peer = f"{peer / wall:.2f}x faster" if tool == "ferry" and peer else ""
        vs_cp = f"{cp / wall:.2f}x / {cp_sync / wall:.2f}x" if task.startswith(("copy", "pth")) else ""
        print(f"| {task} | {tool} | {wall:.3f} | {vs_cp} | {vs_peer} | {rss:.0f} | {rss * 2**20 / nbytes:.2f} |")
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
