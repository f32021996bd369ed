"""transformers' own bf16 against its f32 run, on the probes a `ferry place --json` verified.

Side by side with `ferry place MODEL --dtype bf16`: the same model, the same probe texts
(read from ferry's report, cut to the same token count), the mean KL divergence of the bf16
run's next-token distribution from the f32 run's, and the same-top-1 share, per language.

    ferry place target/models/SmolLM2-135M --dtype bf16 --json -q > place.json
    .venv/bin/python scripts/bf16_peer.py target/models/SmolLM2-135M place.json [--attn sdpa|eager]

Prints both tables (ferry's from the report, transformers' computed here) and the worst
languages of each. Measured numbers live in docs/benchmarks.md.
"""

import argparse
import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("report", help="stdout of `ferry place MODEL --dtype bf16 --json`")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    report = json.load(open(a.report))["verification"]
    max_tokens = report["result"]["max_tokens"]
    tok = AutoTokenizer.from_pretrained(a.model)
    f32 = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    bf16 = AutoModelForCausalLM.from_pretrained(
        a.model, dtype=torch.bfloat16, attn_implementation=a.attn
    ).eval()
    per_lang = {}
    with torch.no_grad():
        for p in report["probes"]:
            ids = tok(p["text"], return_tensors="pt").input_ids[:, :max_tokens]
            la = torch.log_softmax(f32(ids).logits.double(), -1)
            lb = torch.log_softmax(bf16(ids).logits.double(), -1)
            kld = (la.exp() * (la - lb)).sum(-1)[0]
            same = (la.argmax(-1) == lb.argmax(-1)).double()[0]
            k, s = per_lang.setdefault(p["lang"], ([], []))
            k += kld.tolist()
            s += same.tolist()
    ferry = {
        l["lang"]: (l["decoder"]["kld_mean"], l["decoder"]["same_top1"])
        for l in report["result"]["languages"]
    }
    peer = {l: (sum(k) / len(k), sum(s) / len(s)) for l, (k, s) in per_lang.items()}
    print("| language | ferry bf16 KLD | ferry same top-1 | transformers bf16 KLD | transformers same top-1 |")
    print("|---|---|---|---|---|")
    for lang in sorted(peer, key=lambda l: -max(ferry.get(l, (0, 0))[0], peer[l][0])):
        fk, fs = ferry.get(lang, (float("nan"), float("nan")))
        pk, ps = peer[lang]
        print(f"| {lang} | {fk:.2e} | {fs:.3f} | {pk:.2e} | {ps:.3f} |")
    overall = report["result"]["overall"]["decoder"]["kld_mean"]
    all_p = [x for k, _ in per_lang.values() for x in k]
    print(f"\nmean KLD over all tokens: ferry {overall:.2e}, transformers {sum(all_p) / len(all_p):.2e}")
    print(f"worst: ferry {max(ferry.items(), key=lambda kv: kv[1][0])}, "
          f"transformers {max(peer.items(), key=lambda kv: kv[1][0])}")


if __name__ == "__main__":
    main()
