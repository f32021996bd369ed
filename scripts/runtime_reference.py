#!/usr/bin/env python3
"""transformers (PyTorch) outputs of a model on given texts: the reference ferry's runtime and
its written files are judged against. Used by ferry-verify's tests (run with `python -c`).

Usage:
    python scripts/runtime_reference.py MODEL_DIR TEXTS.json OUT.npz [--gguf FILE] [--max-tokens N]

TEXTS.json is a list of strings. Each text is tokenized by MODEL_DIR's tokenizer (special
tokens added, cut to --max-tokens) and run alone (no padding) in f32. OUT.npz holds, per text i,
`ids_i` (int64) and `out_i`: next-token logits [seq, vocab] for a causal LM, the last hidden
state [seq, hidden] for an encoder. With --gguf, the model is loaded from that GGUF the way
transformers loads llama.cpp files (`from_pretrained(dir, gguf_file=...)`, dequantized to f32;
needs accelerate), and tokenized by MODEL_DIR's tokenizer all the same.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("texts", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--gguf", type=Path)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tok = AutoTokenizer.from_pretrained(args.model)
    cfg = AutoConfig.from_pretrained(args.model)
    causal = any(a.endswith("ForCausalLM") for a in (cfg.architectures or []))
    cls = AutoModelForCausalLM if causal else AutoModel
    if args.gguf:
        model = cls.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name, dtype=torch.float32)
    else:
        model = cls.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    texts = json.loads(args.texts.read_text(encoding="utf-8"))
    arrays = {}
    with torch.no_grad():
        for i, text in enumerate(texts):
            ids = tok(text, add_special_tokens=True)["input_ids"][: args.max_tokens]
            x = torch.tensor([ids], dtype=torch.long)
            if causal:
                out = model(input_ids=x).logits[0]
            else:
                out = model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state[0]
            arrays[f"ids_{i}"] = np.asarray(ids, dtype=np.int64)
            arrays[f"out_{i}"] = out.float().numpy()
    np.savez(args.out, **arrays)
    print(f"{len(texts)} texts -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
