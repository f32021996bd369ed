#!/usr/bin/env python3
"""Side-by-side data benchmark: ferry's corpus -> padded batches vs Python `tokenizers` + numpy.

Both sides do the same work on the same corpus, tokenizer and thread count:
  1. read a TSV corpus (header line, then records; the `text` column is used),
  2. tokenize every text with the tokenizer's special tokens ([CLS] ... [SEP] for WordPiece),
  3. sort the examples by token length (stable) and cut them, in that order, into consecutive
     batches with batch_len * max_len_in_batch <= --max-tokens (an example longer than
     --max-tokens on its own gets a batch of one),
  4. pad each batch on the right with the tokenizer's pad id (0 if it has none) into a
     [batch, max_len] id array plus an attention mask.
Timed from opening the corpus file to having all batches; the tokenizer is loaded before.

Python side (in this process): `Tokenizer.from_file(...).encode_batch(texts)` with
RAYON_NUM_THREADS=--threads and TOKENIZERS_PARALLELISM=true set before `tokenizers` is
imported, then numpy (int64 ids, uint8 mask). RAYON_NUM_THREADS is the variable rayon-core
reads (its deprecated alias is RAYON_RS_NUM_CPUS); RAYON_RS_NUM_THREADS, often quoted, is
read by nothing: with it alone tokenizers 0.23 starts one worker per CPU whatever its value.
RAYON_RS_NUM_THREADS is set too, for the record; on Linux the script counts the rayon workers
(threads of this process after the first encode_batch) and fails if it is not --threads. The tokenizer file's own padding (all-MiniLM's
tokenizer.json pads every text to 128) is switched off, since padding is the batcher's job; its
truncation (all-MiniLM: 128 tokens, longest_first) is kept unless --truncation none.

ferry side (a subprocess per run):
    FERRY data batch CORPUS --tokenizer TOK --max-tokens M --threads N --window 0 --json
must print one JSON object with at least the fields
    seconds        in-process seconds from opening the corpus to all padded batches built
    records        examples read
    tokens         non-pad tokens over all batches (special tokens included)
    batches        number of batches
    padded_tokens  sum over batches of batch_len * max_len_in_batch
records, tokens, batches and padded_tokens must equal the Python side's; a warning is printed
where they differ.

Each side runs --repeat times, interleaved (ferry, python, ferry, python, ...), after one
untimed read of the corpus to warm the page cache; the best time of each is kept. Prints a
Markdown table for docs/benchmarks.md.

Usage:
    cargo build --release -p ferry-cli
    .venv/bin/python scripts/bench_data_peer.py --ferry target/release/ferry
    .venv/bin/python scripts/bench_data_peer.py --python-only      # the Python side alone
The corpus bench-data/udhr-x<S>.tsv is corpora/udhr/train.tsv's header followed by its records
repeated --scale times (S=40: 79,920 records, ~19.4 MB); it is written once and reused.
"""
import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from ferry_scripts import (die, ferry_env, fmt_rate, machine, machine_line, report_header,
                           run_json)

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "corpora" / "udhr" / "train.tsv"
DEFAULT_TOKENIZER = "target/models/all-MiniLM-L6-v2/tokenizer.json"
FERRY_FIELDS = ("seconds", "records", "tokens", "batches", "padded_tokens")
COMPARED = ("records", "tokens", "batches", "padded_tokens")


def make_corpus(work, scale):
    """bench-data/udhr-x<scale>.tsv: train.tsv's header, then its records `scale` times."""
    src = SOURCE.read_bytes()
    header, body = src.split(b"\n", 1)
    if not body.endswith(b"\n"):
        body += b"\n"
    path = work / f"udhr-x{scale}.tsv"
    size = len(header) + 1 + len(body) * scale
    if path.is_file() and path.stat().st_size == size:
        with open(path, "rb") as f:
            if f.read(len(header) + 1) == header + b"\n":
                return path
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tsv.tmp")
    with open(tmp, "wb") as f:
        f.write(header + b"\n")
        for _ in range(scale):
            f.write(body)
    os.replace(tmp, path)
    return path


def batch_bounds(sorted_lens, max_tokens):
    """[(start, end)] of consecutive batches of the length-sorted examples such that
    (end - start) * sorted_lens[end - 1] <= max_tokens (at least one example per batch).
    sorted_lens is non-decreasing, so the largest such end is found by bisection."""
    n = len(sorted_lens)
    bounds = []
    s = 0
    while s < n:
        lo, hi = s + 1, n  # lo always fits (a batch of one), find the largest end that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if (mid - s) * sorted_lens[mid - 1] <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        bounds.append((s, lo))
        s = lo
    return bounds


def python_batches(path, tok, max_tokens, pad_id):
    """Corpus -> padded batches with tokenizers + numpy. Returns (seconds, stats, batches)."""
    import itertools
    import numpy as np
    t0 = time.perf_counter()
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    col = lines[0].split("\t").index("text")
    texts = [line.split("\t")[col] for line in lines[1:] if line]
    del lines
    encodings = tok.encode_batch(texts)  # add_special_tokens=True by default
    ids = [e.ids for e in encodings]
    lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    order = np.argsort(lens, kind="stable")
    sorted_lens = lens[order]
    total = int(sorted_lens.sum())
    flat = np.fromiter(itertools.chain.from_iterable(ids[i] for i in order.tolist()),
                       dtype=np.int64, count=total)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(sorted_lens, out=offsets[1:])
    batches = []
    for s, e in batch_bounds(sorted_lens.tolist(), max_tokens):
        width = int(sorted_lens[e - 1])
        mask = np.arange(width) < sorted_lens[s:e, None]
        block = np.full((e - s, width), pad_id, dtype=np.int64)
        block[mask] = flat[offsets[s]:offsets[e]]  # row-major: fills each row from the left
        batches.append((order[s:e], block, mask.view(np.uint8)))
    seconds = time.perf_counter() - t0
    stats = {"records": len(texts), "tokens": total, "batches": len(batches),
             "padded_tokens": sum(b.size for _, b, _ in batches),
             "max_len": int(sorted_lens[-1]) if len(texts) else 0}
    return seconds, stats, batches


def check_batches(batches, stats, max_tokens, pad_id):
    """Untimed sanity check of the Python side's batches."""
    seen = 0
    for idx, block, mask in batches:
        rows, width = block.shape
        assert rows == 1 or rows * width <= max_tokens, (rows, width)
        assert mask[-1].all()  # the last (longest) example of a batch fills its width
        assert (block[mask == 0] == pad_id).all()
        seen += rows
    assert seen == stats["records"]
    assert sum(int(m.sum()) for _, _, m in batches) == stats["tokens"]


def run_ferry(ferry, corpus, tokenizer, max_tokens, threads, env):
    cmd = [str(ferry), "data", "batch", str(corpus), "--tokenizer", str(tokenizer),
           "--max-tokens", str(max_tokens), "--threads", str(threads), "--window", "0", "--json"]
    result, wall = run_json(cmd, env, hint="\n(is this a ferry release binary with the `data "
                            "batch` command? build it with `cargo build --release -p ferry-cli`)")
    missing = [k for k in FERRY_FIELDS if k not in result]
    if missing:
        die(f"ferry's JSON lacks the field(s) {', '.join(missing)} "
            f"(needs {', '.join(FERRY_FIELDS)}; got {', '.join(sorted(result)) or 'none'})")
    for k in FERRY_FIELDS:
        v = result[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (k != "seconds"
                                                                       and v != int(v)):
            die(f"ferry's JSON field {k!r} is {v!r}, expected a "
                + ("number" if k == "seconds" else "whole number"))
    return result, wall, cmd


def os_threads():
    """Threads of this process (Linux), or None."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", type=Path, help="ferry release binary (target/release/ferry)")
    ap.add_argument("--python-only", action="store_true", help="time the Python side alone")
    ap.add_argument("--tokenizer", type=Path, default=Path(DEFAULT_TOKENIZER),
                    help=f"tokenizer.json (default {DEFAULT_TOKENIZER}, made by "
                         "scripts/fetch_minilm.py)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per side; best is kept")
    ap.add_argument("--scale", type=int, default=40,
                    help="corpus = train.tsv's records this many times (40: ~19.4 MB)")
    ap.add_argument("--max-tokens", type=int, default=8192,
                    help="token budget per batch: batch_len * max_len <= this")
    ap.add_argument("--work", type=Path, default=Path("bench-data"))
    ap.add_argument("--truncation", choices=["file", "none"], default="file",
                    help="Python side: keep the tokenizer file's truncation (default) or "
                         "switch it off (ferry must do the same for the counts to match)")
    ap.add_argument("--json-out", type=Path, help="also write the results here as JSON")
    args = ap.parse_args()
    if args.threads < 1 or args.repeat < 1 or args.scale < 1 or args.max_tokens < 1:
        die("--threads, --repeat, --scale and --max-tokens must be >= 1")
    if not args.python_only:
        if args.ferry is None:
            die("give --ferry PATH (the release binary), or --python-only")
        if not args.ferry.is_file():
            die(f"ferry binary {args.ferry} not found "
                "(build it with `cargo build --release -p ferry-cli`)")
        if not os.access(args.ferry, os.X_OK):
            die(f"ferry binary {args.ferry} is not executable")
    if not args.tokenizer.is_file():
        die(f"tokenizer {args.tokenizer} not found (run .venv/bin/python scripts/fetch_minilm.py, "
            "or give --tokenizer)")

    # Must be set before tokenizers is imported: its rayon pool reads them at first use.
    env = ferry_env()  # no RAYON_* variables: ferry is given --threads
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # what rayon-core actually reads
    os.environ["RAYON_RS_NUM_THREADS"] = str(args.threads)  # asked for; ignored by rayon
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    import numpy as np  # (may start OpenBLAS threads: count after it)
    threads_before = os_threads()
    import tokenizers
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(args.tokenizer))
    pad_id = tok.padding["pad_id"] if tok.padding else 0
    file_padding, file_truncation = tok.padding, tok.truncation
    tok.no_padding()
    if args.truncation == "none":
        tok.no_truncation()
    truncation = tok.truncation
    tok.encode_batch(["warm up the rayon pool"] * 64)
    workers = None
    if threads_before is not None:
        workers = os_threads() - threads_before
        if workers != args.threads:
            die(f"tokenizers started {workers} rayon worker threads, not {args.threads}")

    corpus = make_corpus(args.work, args.scale)
    corpus_bytes = corpus.stat().st_size
    with open(corpus, "rb") as f:  # warm the page cache for both sides
        while f.read(1 << 24):
            pass

    py_times, ferry_times, ferry_walls = [], [], []
    py_stats = ferry_stats = ferry_cmd = None
    for rep in range(args.repeat):
        line = f"run {rep + 1}/{args.repeat}:"
        if not args.python_only:  # ferry first: a broken binary fails before the slow part
            result, wall, ferry_cmd = run_ferry(args.ferry, corpus, args.tokenizer,
                                                args.max_tokens, args.threads, env)
            ferry_times.append(float(result["seconds"]))
            ferry_walls.append(wall)
            ferry_stats = {k: int(result[k]) for k in COMPARED}
            line += f" ferry {result['seconds']:.3f} s (process wall {wall:.3f} s),"
        seconds, stats, batches = python_batches(corpus, tok, args.max_tokens, pad_id)
        if rep == 0:
            check_batches(batches, stats, args.max_tokens, pad_id)
        del batches
        py_times.append(seconds)
        if py_stats is not None and stats != py_stats:
            print(f"WARNING: Python side's counts changed between runs: {py_stats} -> {stats}")
        py_stats = stats
        print(f"{line} python {seconds:.3f} s", flush=True)

    mismatches = []
    if ferry_stats is not None:
        mismatches = [k for k in COMPARED if ferry_stats[k] != py_stats[k]]
        if mismatches:
            print("WARNING: ferry and Python differ in "
                  + ", ".join(f"{k} (ferry {ferry_stats[k]}, python {py_stats[k]})"
                              for k in mismatches)
                  + f". They should match exactly. Python side: special tokens added, "
                    f"padding off, truncation {truncation or 'none'}, pad id {pad_id}.")

    py_best = min(py_times)
    rows = []
    if ferry_stats is not None:
        fb = min(ferry_times)
        rows.append(("ferry `data batch`", fb, ferry_stats, f"{py_best / fb:.2f}x"))
    rows.append((f"Python tokenizers {tokenizers.__version__} `encode_batch` + numpy", py_best,
                 py_stats, "1.00x"))

    cmdline, now = report_header("bench_data_peer.py")
    k = args.repeat
    print(f"Corpus `{corpus}`: {corpus_bytes / 1e6:.1f} MB, {py_stats['records']} records "
          f"(corpora/udhr/train.tsv x{args.scale}); tokenizer `{args.tokenizer}` "
          f"({tok.model.__class__.__name__}, special tokens added, truncation "
          f"{truncation['max_length'] if truncation else 'off'}, pad id {pad_id}); "
          f"--max-tokens {args.max_tokens}; {args.threads} threads (tokenizers: "
          f"RAYON_NUM_THREADS={args.threads}, {workers} rayon workers seen"
          + ("" if args.python_only else
             f"; ferry: --threads {args.threads}, no RAYON_* variables") + "). Seconds: from opening the "
          f"corpus to all padded batches, in process, best of {k}.")
    print()
    print(f"| tool | seconds (best of {k}) | records/s | tokens/s | speed vs Python |")
    print("|---|---:|---:|---:|---:|")
    for name, sec, st, ratio in rows:
        print(f"| {name} | {sec:.3f} | {fmt_rate(st['records'] / sec)} | "
              f"{fmt_rate(st['tokens'] / sec)} | {ratio} |")
    print()
    print("| tool | records | tokens | batches | padded_tokens | padding overhead |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, st, _ in rows:
        print(f"| {name.split(' `')[0]} | {st['records']} | {st['tokens']} | {st['batches']} | "
              f"{st['padded_tokens']} | {st['padded_tokens'] / max(st['tokens'], 1) - 1:.2%} |")
    print()
    print("All runs (s): python " + ", ".join(f"{t:.3f}" for t in py_times)
          + ("; ferry " + ", ".join(f"{t:.3f}" for t in ferry_times)
             + " (process wall " + ", ".join(f"{t:.3f}" for t in ferry_walls) + ")"
             if ferry_times else ""))
    print(f"{machine_line()}; Python {platform.python_version()}, "
          f"tokenizers {tokenizers.__version__}, numpy {np.__version__}. Date: {now}.")
    if mismatches:
        print(f"**Counts differ** between ferry and Python: {', '.join(mismatches)}.")

    if args.json_out:
        args.json_out.write_text(json.dumps({
            "command": cmdline, "date": now, **machine(), "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
            "corpus": str(corpus), "corpus_bytes": corpus_bytes, "threads": args.threads,
            "max_tokens": args.max_tokens, "tokenizer": str(args.tokenizer),
            "truncation": truncation, "rayon_workers": workers, "file_truncation": file_truncation,
            "file_padding": file_padding, "pad_id": pad_id,
            "python_side": {"seconds": py_times, "best": py_best, **py_stats},
            "ferry_side": ({"seconds": ferry_times, "best": min(ferry_times),
                            "process_wall": ferry_walls, "command": shlex.join(ferry_cmd),
                            **ferry_stats} if ferry_stats else None),
            "mismatches": mismatches,
        }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
