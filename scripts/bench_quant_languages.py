"""Per-language evidence for multilingual-calibrated and budgeted quantization (issue 16, section
3): the same model quantized six ways, each verified by `ferry verify` against the original on
the held-out UDHR probes (47 languages, one text of 64 tokens each), one Markdown table with a
column per way and a row per language, then the worst, median and mean language.

The ways: uniform q4_k (llama.cpp's fallbacks for rows that 256 does not divide), q4_k with an
English-only importance matrix, q4_k with ferry's language-balanced one (`ferry calibrate`
defaults), and `--quant auto` at the uniform q4_k's tensor-data size three ways: quantizing
without an importance matrix (`--auto-no-imatrix`), as it does by default (with the calibration
it weighs the errors by), and with the balanced matrix (`--imatrix`). Decoders are judged by
the mean KL divergence of the next-token distribution, encoders by 1 - cosine of the
mean-pooled embeddings (lower is better for both).

    .venv/bin/python scripts/bench_quant_languages.py --model target/models/SmolLM2-135M
    .venv/bin/python scripts/bench_quant_languages.py --model target/models/all-MiniLM-L6-v2

Needs a release build (`cargo build --release -p ferry-cli`). About 12 minutes for SmolLM2-135M
and 3 for all-MiniLM-L6-v2 on 2 cores. Writes its files under --work (a temporary folder by
default) and the table on stdout; --json FILE keeps every number.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ferry_scripts as fs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--ferry", default="target/release/ferry")
    ap.add_argument("--work", type=Path, help="keep the files here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--auto-types", help="passed to --quant auto (e.g. leave out q4_1 for a model "
                    "whose weights came from a Q4_1 GGUF: they sit on its grid, so it is lossless)")
    args = ap.parse_args()
    if not Path(args.ferry).is_file():
        fs.die(f"{args.ferry} is missing: run `cargo build --release -p ferry-cli` first")
    if not args.model.exists():
        fs.die(f"{args.model} is missing (scripts/make_smollm2.py / scripts/fetch_minilm.py make it)")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        run(args, work)


def ferry(args, *cmd):
    result, wall = fs.run_json([args.ferry, *map(str, cmd)], fs.ferry_env())
    return result, wall


def run(args, work):
    m = args.model
    env_before = fs.load_average()
    ferry(args, "calibrate", m, "--out", work / "balanced.imatrix.gguf", "--json")
    ferry(args, "calibrate", m, "--languages", "en", "--out", work / "en.imatrix.gguf", "--json")
    ways = {}
    uniform, _ = ferry(args, "convert", m, work / "q4_k.gguf", "--quant", "q4_k", "--json")
    size = uniform["output_bytes"]
    ways["uniform q4_k"] = (work / "q4_k.gguf", 0.0, None)
    for tag in ["en", "balanced"]:
        out = work / f"q4_k-{tag}.gguf"
        ferry(args, "convert", m, out, "--quant", "q4_k", "--imatrix",
              work / f"{tag}.imatrix.gguf", "--json")
        ways[f"q4_k + {tag} imatrix"] = (out, 0.0, None)
    for tag, extra in [("auto, no imatrix", ["--auto-no-imatrix"]), ("auto", []),
                       ("auto + balanced imatrix",
                        ["--imatrix", work / "balanced.imatrix.gguf"])]:
        out = work / f"{tag.replace(' ', '_').replace('+', '').replace(',', '')}.gguf"
        types = ["--auto-types", args.auto_types] if args.auto_types else []
        r, wall = ferry(args, "convert", m, out, "--quant", "auto", "--target-size", size,
                        *types, *extra, "--json")
        ways[tag] = (out, wall, r["auto"])
    per = {}
    metric = None
    for name, (path, _, _) in ways.items():
        v, _ = ferry(args, "verify", m, path, "--no-attribution", "--tolerance",
                     "kld<=1000,cos>=-1", "--json")
        res = v["result"]
        metric = "mean KLD" if res["kind"] == "decoder" else "1 - cosine"
        per[name] = {
            l["lang"]: (l["decoder"]["kld_mean"] if l.get("decoder")
                        else 1.0 - l["encoder"]["cosine_mean"])
            for l in res["languages"]}
    env_after = fs.load_average()
    names = list(ways)
    langs = sorted(per[names[0]], key=lambda l: -per[names[0]][l])
    fs.report_header("bench_quant_languages.py")
    print(f"{m.name}, {metric} against the original per held-out language (lower is better); "
          f"sizes are the GGUF files'.")
    print()
    print("| language | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for l in langs:
        print(f"| {l} | " + " | ".join(f"{per[n][l]:.4f}" for n in names) + " |")
    summary = {}
    for n in names:
        vals = list(per[n].values())
        worst_lang = max(per[n], key=per[n].get)
        summary[n] = {"worst": max(vals), "worst_lang": worst_lang,
                      "median": statistics.median(vals), "mean": statistics.fmean(vals),
                      "bytes": ways[n][0].stat().st_size}
    base = summary[names[0]]
    for key, label in [("worst", "**worst**"), ("median", "**median**"), ("mean", "**mean**")]:
        cells = []
        for n in names:
            v = summary[n][key]
            rel = "" if n == names[0] else f" ({100 * (v / base[key] - 1):+.1f}%)"
            lang = f" {summary[n]['worst_lang']}" if key == "worst" else ""
            cells.append(f"{v:.4f}{lang}{rel}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("| **file** | " + " | ".join(f"{summary[n]['bytes'] / 2**20:.2f} MiB" for n in names)
          + " |")
    for n in names:
        plan = ways[n][2]
        if plan:
            types = ", ".join(f"{c} {t}" for t, c in plan["types"])
            print(f"\n{n}: {types}; {plan['bpw']:.2f} bits per weight; chosen in "
                  f"{ways[n][1]:.0f} s.")
    print()
    print(f"{fs.machine_line()}; {fs.load_text(env_before, env_after)}; "
          f"{time.strftime('%Y-%m-%d', time.gmtime())}.")
    if args.json:
        args.json.write_text(json.dumps({"model": str(m), "metric": metric, "per_language": per,
                                         "summary": summary, "plans": {n: w[2] for n, w in ways.items()},
                                         "machine": fs.machine()}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
