#!/usr/bin/env python3
"""Language identification side by side: ferry's shipped identifier, fastText supervised and
langdetect, on the repo's UDHR corpus (corpora/udhr/: 47 languages, 14 scripts).

Every side is judged on the same two sets: the held-out articles 27-30 (corpora/udhr/test.tsv,
one paragraph per line) and their 4-word snippets, cut exactly as `ferry eval --snippet-words 4`
cuts them (ferry_train::data::snippets: whitespace-separated words in runs of 4, a partial run
dropped; texts with fewer than one space per 12 characters, i.e. Chinese, Japanese and Thai, in
pieces of 8 non-space characters).

  ferry       `ferry train --config CONFIG` (default configs/langid-udhr.toml) into a temporary
              folder, then `ferry eval --model RUN/best --data SET --json` on both sets. Training
              time is the wall time of `ferry train` (tokenizer/features, training, its own
              final evaluation) in a subprocess.
  fastText    fasttext-numpy2-wheel: train_supervised on train.tsv plus its 4-word snippets
              (snippet augmentation helps fastText; ferry's naive Bayes counts would not
              change), by default
              with its own autotune (--fasttext-autotune SECONDS on dev.tsv), so the peer is as
              strong as fastText can make itself; or fixed parameters with
              --fasttext-autotune 0 (minn 2, maxn 4, the issue's description). Training time is
              train_supervised's wall time with the chosen parameters (autotune's search is not
              counted). Threads: --threads.
  langdetect  langdetect's shipped profiles (55 languages; DetectorFactory.seed = 0). Five of
              the corpus's languages (be, gl, hy, ka, sr) have no profile: its accuracy is given
              over all 47 (those count as errors) and over its 42 alone.

Accuracy and macro-F1 (the mean over the 47 classes of each class's F1 over all predictions, as
ferry eval computes it; a prediction outside the 47 is an error). Prints a Markdown table, the
per-language snippet accuracy and the most frequent confusions of each side.

Usage:
    python3 -m venv target/lid-venv
    target/lid-venv/bin/pip install fasttext-numpy2-wheel==0.9.2 langdetect==1.0.9 numpy
    cargo build --release -p ferry-cli
    target/lid-venv/bin/python scripts/bench_langid_peers.py [--json-out FILE]
Options: --ferry target/release/ferry  --config configs/langid-udhr.toml  --only ferry,fasttext
    --threads 2  --fasttext-autotune 120  --fasttext-params '{"lr": 0.07, "epoch": 100, ...}'
    (rerun with the parameters an autotune printed)
"""
import argparse
import collections
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ferry_scripts import die, ferry_env, load_average, machine, machine_line, report_header

REPO = Path(__file__).resolve().parent.parent
UDHR = REPO / "corpora" / "udhr"
SNIPPET_WORDS = 4
# langdetect's codes for the corpus's languages where they differ.
LANGDETECT_CODES = {"zh-cn": "zh", "zh-tw": "zh", "no": "nb"}
LANGDETECT_MISSING = {"be", "gl", "hy", "ka", "sr"}


def read_tsv(path):
    """(lang, text) rows of a corpus file (header `lang article text`)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        li, ti = header.index("lang"), header.index("text")
        for line in f:
            cols = line.rstrip("\n").split("\t")
            rows.append((cols[li], cols[ti]))
    return rows


def snippets(rows, words=SNIPPET_WORDS):
    """ferry_train::data::snippets, line for line."""
    out = []
    for lang, text in rows:
        ws = text.split()
        if len(ws) * 12 < len(text):
            cs = [c for c in text if not c.isspace()]
            pieces = ["".join(cs[i:i + 2 * words]) for i in range(0, len(cs) - 2 * words + 1,
                                                                   2 * words)]
        else:
            pieces = [" ".join(ws[i:i + words]) for i in range(0, len(ws) - words + 1, words)]
        out.extend((lang, p) for p in pieces)
    return out


def scores(gold, pred, classes):
    """Accuracy, macro-F1 over CLASSES, per-class accuracy and the confusion counts."""
    tp, fp, fn = collections.Counter(), collections.Counter(), collections.Counter()
    per = collections.defaultdict(lambda: [0, 0])
    conf = collections.Counter()
    for g, p in zip(gold, pred):
        per[g][1] += 1
        if g == p:
            tp[g] += 1
            per[g][0] += 1
        else:
            fn[g] += 1
            fp[p] += 1
            conf[(g, p)] += 1
    f1 = []
    for c in classes:
        d = 2 * tp[c] + fp[c] + fn[c]
        f1.append(2 * tp[c] / d if d else 0.0)
    correct = sum(tp.values())
    return {
        "n": len(gold),
        "accuracy": correct / len(gold),
        "macro_f1": sum(f1) / len(f1),
        "per_language": {c: per[c][0] / per[c][1] for c in classes if per[c][1]},
        "confusions": [[g, p, n] for (g, p), n in conf.most_common(10)],
    }


# ----------------------------------------------------------------------------- the sides


def run_fasttext(train, dev, sets, classes, args):
    import fasttext
    with tempfile.TemporaryDirectory(prefix="ferry-lid-ft-") as t:
        return fasttext_in(Path(t), fasttext, train, dev, sets, classes, args)


def fasttext_in(tmp, fasttext, train, dev, sets, classes, args):

    def write(rows, name):
        p = tmp / name
        with open(p, "w", encoding="utf-8") as f:
            for lang, text in rows:
                f.write(f"__label__{lang} {' '.join(text.split())}\n")
        return str(p)

    # Autotune validates on the dev paragraphs and their snippets: short text is the target.
    train_path, dev_path = write(train, "train.txt"), write(dev + snippets(dev), "dev.txt")
    params = {"minn": 2, "maxn": 4, "thread": args.threads, "verbose": 0}
    if args.fasttext_params:
        params = dict(json.loads(args.fasttext_params), thread=args.threads, verbose=0)
    elif args.fasttext_autotune > 0:
        tuned = fasttext.train_supervised(input=train_path, autotuneValidationFile=dev_path,
                                          autotuneDuration=args.fasttext_autotune,
                                          thread=args.threads, verbose=0).f
        params = {k: getattr(tuned, k) for k in
                  ("lr", "dim", "ws", "epoch", "minCount", "minn", "maxn", "neg", "wordNgrams",
                   "bucket", "lrUpdateRate", "t")}
        params["loss"] = str(tuned.loss).split(".")[-1]
        params.update(thread=args.threads, verbose=0)
    t0 = time.perf_counter()
    model = fasttext.train_supervised(input=train_path, **params)
    seconds = time.perf_counter() - t0
    out = {"train_seconds": seconds, "params": {k: v for k, v in params.items()
                                                 if k not in ("verbose",)}}
    for name, rows in sets.items():
        texts = [" ".join(t.split()) for _, t in rows]
        labels, _ = model.predict(texts, k=1)
        pred = [ls[0].removeprefix("__label__") if ls else "" for ls in labels]
        out[name] = scores([g for g, _ in rows], pred, classes)
    return out


def run_langdetect(sets, classes):
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException
    DetectorFactory.seed = 0
    out = {}
    for name, rows in sets.items():
        pred = []
        for _, text in rows:
            try:
                code = detect(text)
            except LangDetectException:
                code = ""
            pred.append(LANGDETECT_CODES.get(code, code))
        gold = [g for g, _ in rows]
        out[name] = scores(gold, pred, classes)
        keep = [(g, p) for g, p in zip(gold, pred) if g not in LANGDETECT_MISSING]
        supported = [c for c in classes if c not in LANGDETECT_MISSING]
        out[name + "_supported"] = scores([g for g, _ in keep], [p for _, p in keep], supported)
    return out


def run_ferry(sets, args):
    with tempfile.TemporaryDirectory(prefix="ferry-lid-") as t:
        return ferry_in(Path(t), sets, args)


def ferry_in(tmp, sets, args):
    env = ferry_env(args.threads)
    run = tmp / "run"
    cmd = [args.ferry, "train", "--config", args.config, "--out", str(run), "--quiet"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        die(f"{shlex.join(cmd)} failed:\n{p.stderr}")
    out = {"train_seconds": seconds, "config": args.config}
    cmd = [args.ferry, "eval", "--model", str(run / "best"), "--data", str(UDHR / "test.tsv"),
           "--snippet-words", str(SNIPPET_WORDS), "--json", "--quiet"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        die(f"{shlex.join(cmd)} failed:\n{p.stderr}")
    evaluations = json.loads(p.stdout)
    for name, ev in zip(("paragraphs", "snippets"), evaluations):
        rep = ev["evaluation"]["report"]
        if rep["overall"]["n"] != len(sets[name]):
            die(f"ferry eval scored {rep['overall']['n']} {name}, this script cut "
                f"{len(sets[name])}: the snippet rules differ")
        conf = collections.Counter({(g, p): n for g, p, n in rep["overall"]["confusion"]
                                    if g != p})
        out[name] = {
            "n": rep["overall"]["n"],
            "accuracy": rep["overall"]["accuracy"],
            "macro_f1": rep["overall"]["macro_f1"],
            "per_language": {k: v["accuracy"] for k, v in rep["per_language"].items()},
            "confusions": [[g, p, n] for (g, p), n in conf.most_common(10)],
        }
    return out


# ----------------------------------------------------------------------------- report


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ferry", default=str(REPO / "target" / "release" / "ferry"))
    ap.add_argument("--config", default=str(REPO / "configs" / "langid-udhr.toml"))
    ap.add_argument("--only", default="ferry,fasttext,langdetect")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fasttext-autotune", type=int, default=120,
                    help="seconds of fastText autotune on the dev split (0: fixed parameters)")
    ap.add_argument("--fasttext-params",
                    help="fastText parameters as JSON (as a run prints them): no autotune")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    sides = set(args.only.split(","))

    train = read_tsv(UDHR / "train.tsv")
    train = train + snippets(train)
    dev = read_tsv(UDHR / "dev.tsv")
    test = read_tsv(UDHR / "test.tsv")
    sets = {"paragraphs": test, "snippets": snippets(test)}
    classes = sorted({g for g, _ in test})
    load = load_average()
    results = {"machine": machine(), "load_before": load,
               "sets": {k: len(v) for k, v in sets.items()}}
    if "fasttext" in sides:
        results["fasttext"] = run_fasttext(train, dev, sets, classes, args)
    if "langdetect" in sides:
        results["langdetect"] = run_langdetect(sets, classes)
    if "ferry" in sides:
        results["ferry"] = run_ferry(sets, args)
    results["load_after"] = load_average()

    report_header("bench_langid_peers.py")
    print("| side | paragraphs acc | paragraphs macro-F1 | snippets acc | snippets macro-F1 "
          "| training s |")
    print("|---|---:|---:|---:|---:|---:|")
    for side in ("ferry", "fasttext", "langdetect"):
        r = results.get(side)
        if not r:
            continue
        t = f"{r['train_seconds']:.1f}" if "train_seconds" in r else "(shipped profiles)"
        print(f"| {side} | {100 * r['paragraphs']['accuracy']:.1f}% "
              f"| {100 * r['paragraphs']['macro_f1']:.1f}% "
              f"| {100 * r['snippets']['accuracy']:.1f}% "
              f"| {100 * r['snippets']['macro_f1']:.1f}% | {t} |")
    if "langdetect" in results:
        r = results["langdetect"]
        print(f"| langdetect, its 42 languages only | "
              f"{100 * r['paragraphs_supported']['accuracy']:.1f}% "
              f"| {100 * r['paragraphs_supported']['macro_f1']:.1f}% "
              f"| {100 * r['snippets_supported']['accuracy']:.1f}% "
              f"| {100 * r['snippets_supported']['macro_f1']:.1f}% | |")
    print()
    print(machine_line() + f"; {args.threads} threads; sets: {results['sets']}.")
    for side in ("ferry", "fasttext", "langdetect"):
        r = results.get(side)
        if r and "confusions" in r["snippets"]:
            top = ", ".join(f"{g}->{p} {n}" for g, p, n in r["snippets"]["confusions"][:6])
            print(f"- {side} snippet confusions: {top}")
    if "fasttext" in results:
        print(f"- fastText parameters: {results['fasttext']['params']}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n",
                                 encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
