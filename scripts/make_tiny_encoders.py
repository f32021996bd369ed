#!/usr/bin/env python3
"""Tiny randomly initialised BERT-family encoders, made by transformers, with reference outputs
for ferry-runtime's encoder tests (crates/ferry-runtime/tests/encoders.rs).

Usage:
    .venv/bin/python scripts/make_tiny_encoders.py [OUT_DIR]          # default fixtures/encoders
    .venv/bin/python scripts/make_tiny_encoders.py --check            # rebuild in a temp dir,
                                                                      # compare with fixtures/encoders

For each family (`bert`: BertModel, `xlm-roberta`: XLMRobertaModel, `distilbert`:
DistilBertModel) it writes `OUT_DIR/<family>/` with `config.json` and `model.safetensors`
(`save_pretrained`, base model alone: no `bert.`/`roberta.`/`distilbert.` prefix) and
`reference.npz`:

    input_ids          int64 [2, 12]  row 0: 12 real tokens; row 1: 7 real tokens, then the
                                      model's pad_token_id (right padding)
    attention_mask     int64 [2, 12]  1 for real tokens
    last_hidden_state  f32 [2, 12, 32]
    hidden_states_<i>  f32 [2, 12, 32] for i in 0..=n_layers: transformers'
                                      `output_hidden_states=True` (0 is the embedding output)

Computed in eval mode, float32, eager attention, one thread. The weights are redrawn with a
larger spread than transformers' init (std 0.02 makes attention nearly uniform and the layers
nearly the identity, which would hide a wrong mask or wrong position ids): every matrix and
embedding ~ N(0, 0.3), every bias ~ N(0, 0.1), LayerNorm weight 1 + N(0, 0.1).
"""
import argparse
import filecmp
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (BertConfig, BertModel, DistilBertConfig, DistilBertModel,
                          XLMRobertaConfig, XLMRobertaModel)

REPO = Path(__file__).resolve().parent.parent
SEQ, REAL1 = 12, 7
COMMON = dict(vocab_size=512, max_position_embeddings=64)


def families():
    """(folder, model class, config) per family; all hidden 32, 2 layers, 4 heads, ffn 64."""
    bert = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, type_vocab_size=2, pad_token_id=0, **COMMON)
    xlmr = XLMRobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, type_vocab_size=1, pad_token_id=1,
                            bos_token_id=0, eos_token_id=2, hidden_act="gelu", **COMMON)
    distil = DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, activation="gelu",
                              pad_token_id=0, **COMMON)
    return [("bert", BertModel, bert), ("xlm-roberta", XLMRobertaModel, xlmr),
            ("distilbert", DistilBertModel, distil)]


def spread(model: torch.nn.Module, gen: torch.Generator):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))


def make(out: Path):
    torch.set_num_threads(1)
    for i, (folder, cls, cfg) in enumerate(families()):
        torch.manual_seed(1000 + i)
        gen = torch.Generator().manual_seed(2000 + i)
        cfg._attn_implementation = "eager"
        model = cls(cfg).eval()
        spread(model, gen)
        pad = cfg.pad_token_id
        # Real tokens avoid the special ids 0..3 (and so the pad id).
        ids = torch.randint(4, cfg.vocab_size, (2, SEQ), generator=gen)
        mask = torch.ones(2, SEQ, dtype=torch.long)
        ids[1, REAL1:] = pad
        mask[1, REAL1:] = 0
        with torch.no_grad():
            o = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hs = o.hidden_states
        n_layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layers
        assert len(hs) == n_layers + 1, (folder, len(hs))
        assert torch.equal(hs[-1], o.last_hidden_state), folder
        d = out / folder
        d.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        # Loaded back: the saved file gives the same outputs.
        back = cls.from_pretrained(d, attn_implementation="eager").eval()
        with torch.no_grad():
            o2 = back(input_ids=ids, attention_mask=mask)
        assert torch.equal(o2.last_hidden_state, o.last_hidden_state), folder
        arrays = {
            "input_ids": ids.numpy().astype(np.int64),
            "attention_mask": mask.numpy().astype(np.int64),
            "last_hidden_state": o.last_hidden_state.numpy().astype(np.float32),
        }
        for k, h in enumerate(hs):
            arrays[f"hidden_states_{k}"] = h.numpy().astype(np.float32)
        np.savez(d / "reference.npz", **arrays)
        sizes = {f.name: f.stat().st_size for f in sorted(d.iterdir())}
        print(f"{folder}: {sizes}")


def digest(d: Path):
    return {str(f.relative_to(d)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(d.rglob("*")) if f.is_file() and f.name != "README.md"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=str(REPO / "fixtures" / "encoders"))
    ap.add_argument("--check", action="store_true",
                    help="rebuild in a temp dir and compare with OUT")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"numpy {np.__version__}")
    if not a.check:
        make(Path(a.out))
        return
    with tempfile.TemporaryDirectory() as tmp:
        make(Path(tmp))
        want, got = digest(Path(a.out)), digest(Path(tmp))
        # Compare what the tools compute, not only bytes: weights and references.
        diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        if diff:
            sys.exit(f"differs from {a.out}: {diff}")
        print(f"{len(want)} files identical")


if __name__ == "__main__":
    main()
