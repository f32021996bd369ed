#!/usr/bin/env python3
"""Streamed vs in-memory training on a multi-GB corpus: throughput and peak memory.

Generates a folder-per-language corpus of --gib GiB (--langs languages, each its own
letters and word list, sentences of 5-40 words; seeded), then runs the same `ferry train`
config twice, once holding the corpus (`[data]` without `stream`) and once streaming it
(`stream = { window, block }`), each under /usr/bin/time for its peak resident memory. Both
train the bag model on hashed character n-grams for --steps steps of --batch examples.

Reported per side: wall seconds of the whole run (reading/encoding or indexing included),
training tokens (the sum of metrics.jsonl's per-step `tokens`), tokens per second over the
whole run, and the peak RSS. The in-memory side must read and encode the whole corpus before
its first step; the streamed side encodes only what it draws, a window at a time.

    python3 scripts/bench_stream.py --ferry target/release/ferry --gib 2 --steps 20000

Needs GNU time (/usr/bin/time). The corpus is kept under --work for reruns (--keep-corpus).
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

LETTERS = ["abcdefghij", "klmnopqrst", "uvwxyzabcd", "aeioubcdfg", "hjklmnpqrs", "tvwxyzaeio",
           "bdfhjlnprt", "acegikmoqs", "uwyzbdfhjl", "nprtvxzace"]


def die(msg):
    sys.exit(f"bench_stream: {msg}")


def make_corpus(root, gib, langs, seed):
    rng = random.Random(seed)
    per_lang = gib * (1 << 30) // langs
    for i in range(langs):
        lang = f"l{i:02d}"
        letters = LETTERS[i % len(LETTERS)]
        words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 8)))
                 for _ in range(5000)]
        pool = [" ".join(rng.choices(words, k=rng.randint(5, 40))) + "\n" for _ in range(20000)]
        os.makedirs(os.path.join(root, lang), exist_ok=True)
        with open(os.path.join(root, lang, "part-0.txt"), "w") as f:
            size = 0
            while size < per_lang:
                chunk = "".join(rng.choices(pool, k=4096))
                f.write(chunk)
                size += len(chunk)


def config(corpus, out, steps, batch, threads, stream):
    return f"""
[data]
train = "{corpus}"
label = "lang"
max_len = 128
{stream}

[tokenizer]
char_ngrams = {{ min_n = 1, max_n = 3, buckets = 65536 }}

[model]
kind = "bag"
dim = 32

[optimizer]
kind = "adamw"
lr = 0.01

[schedule]
kind = "linear"
warmup = 0

[train]
steps = {steps}
batch_size = {batch}
seed = 1
threads = {threads}
checkpoint_every = {steps}

[output]
dir = "{out}"
"""


def run(ferry, cfg_path, out):
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["/usr/bin/time", "-v", ferry, "train", "--config", cfg_path, "-q"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        die(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    if not rss:
        die("no peak RSS in /usr/bin/time -v output (is it GNU time?)")
    tokens = 0
    steps = 0
    with open(os.path.join(out, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "loss" in rec:
                tokens += rec["tokens"]
                steps += 1
    return {"wall_s": wall, "tokens": tokens, "steps": steps,
            "tokens_per_s": tokens / wall, "peak_rss_mib": int(rss.group(1)) / 1024}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ferry", default="target/release/ferry")
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--langs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--window", type=int, default=8192)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--work", default="target/bench-stream")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep-corpus", action="store_true", help="reuse the corpus under --work")
    ap.add_argument("--only", choices=["memory", "stream"], help="run one side")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not os.path.exists("/usr/bin/time"):
        die("needs GNU time at /usr/bin/time (apt install time)")
    ferry = os.path.abspath(a.ferry)
    work = os.path.abspath(a.work)
    corpus = os.path.join(work, "corpus")
    if not (a.keep_corpus and os.path.isdir(corpus)):
        shutil.rmtree(corpus, ignore_errors=True)
        t0 = time.perf_counter()
        make_corpus(corpus, a.gib, a.langs, a.seed)
        print(f"generated {corpus} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(corpus) for f in fs)
    results = {"corpus_bytes": size, "steps": a.steps, "batch": a.batch, "threads": a.threads,
               "window": a.window, "block": a.block}
    sides = [("memory", ""), ("stream", f"stream = {{ window = {a.window}, block = {a.block} }}")]
    for name, stream in sides:
        if a.only and a.only != name:
            continue
        out = os.path.join(work, f"run-{name}")
        cfg_path = os.path.join(work, f"{name}.toml")
        with open(cfg_path, "w") as f:
            f.write(config(corpus, out, a.steps, a.batch, a.threads, stream))
        results[name] = run(ferry, cfg_path, out)
        print(f"{name}: {results[name]}", file=sys.stderr)
    if a.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"corpus {size / (1 << 30):.2f} GiB, {a.steps} steps of {a.batch}, "
              f"{a.threads} threads")
        print("| path | wall s | training tokens | tokens/s | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|")
        for name, _ in sides:
            r = results.get(name)
            if r:
                print(f"| {name} | {r['wall_s']:.1f} | {r['tokens']:,} | "
                      f"{r['tokens_per_s']:,.0f} | {r['peak_rss_mib']:,.0f} |")


if __name__ == "__main__":
    main()
