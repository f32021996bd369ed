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
from pathlib import Path

import torch
from transformers import (BertConfig, BertModel, DistilBertConfig, DistilBertModel,
                          XLMRobertaConfig, XLMRobertaModel)

import tiny_models
from tiny_models import (REPO, new_model, reference_arrays, right_padded_batch, save_and_reload,
                         save_reference)

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
        model, gen = new_model(cls, cfg, 1000 + i, 2000 + i, spread)
        # Real tokens avoid the special ids 0..3 (and so the pad id).
        ids, mask = right_padded_batch(gen, 4, cfg.vocab_size, SEQ, REAL1, cfg.pad_token_id)
        with torch.no_grad():
            o = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hs = o.hidden_states
        n_layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layers
        assert len(hs) == n_layers + 1, (folder, len(hs))
        assert torch.equal(hs[-1], o.last_hidden_state), folder
        d = out / folder
        # Loaded back: the saved file gives the same outputs.
        o2 = save_and_reload(model, cls, d, ids, mask)
        assert torch.equal(o2.last_hidden_state, o.last_hidden_state), folder
        arrays = reference_arrays(ids, mask, {"last_hidden_state": o.last_hidden_state}, hs)
        save_reference(d, folder, arrays)


if __name__ == "__main__":
    tiny_models.main(__doc__, REPO / "fixtures" / "encoders", make)
