#!/usr/bin/env python3
"""Tiny randomly initialised Llama-family decoders, made by transformers, with reference outputs
for ferry-runtime's decoder tests (crates/ferry-runtime/tests/decoders.rs).

Usage:
    .venv/bin/python scripts/make_tiny_decoders.py [OUT_DIR]          # default fixtures/decoders
    .venv/bin/python scripts/make_tiny_decoders.py --check            # rebuild in a temp dir,
                                                                      # compare with fixtures/decoders

For each model (`mistral`: MistralForCausalLM, `qwen2`: Qwen2ForCausalLM with Q/K/V biases and
a tied head, `llama-gqa`: LlamaForCausalLM with grouped-query attention, an explicit head_dim
that is not hidden / heads, attention biases and an untied head) it writes `OUT_DIR/<name>/`
with `config.json` and `model.safetensors` (`save_pretrained`) and `reference.npz`:

    input_ids          int64 [2, 16]  row 0: 16 real tokens; row 1: 9 real tokens, then
                                      pad_token_id 0 (right padding)
    attention_mask     int64 [2, 16]  1 for real tokens
    logits             f32 [2, 16, 512]
    hidden_states_<i>  f32 [2, 16, 32] for i in 0..=n_layers: transformers'
                                      `output_hidden_states=True`: 0 is the embedding output,
                                      i the output of block i - 1, and the last one the final
                                      RMS norm of the last block's output
    last_block_output  f32 [2, 16, 32] the last block's output before the final norm (a forward
                                      hook: transformers' hidden states skip it)

`mistral` also holds `logits_sliding_window_4`: the logits with `sliding_window` set to 4 in the
same model (each query sees itself and the 3 keys before it), which the tests compare with a
copy of the folder whose config says so.

Computed in eval mode, float32, eager attention, one thread. The weights are redrawn with a
larger spread than transformers' init (std 0.02 makes attention nearly uniform and the blocks
nearly the identity, which would hide a wrong mask, rotary base or head grouping): every matrix
~ N(0, 0.15), the token embedding ~ N(0, 1), every bias ~ N(0, 0.5), RMS norm weights
1 + N(0, 0.1).
"""
from pathlib import Path

import numpy as np
import torch
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

import tiny_models
from tiny_models import (REPO, new_model, reference_arrays, right_padded_batch, save_and_reload,
                         save_reference)

SEQ, REAL1, PAD = 16, 9, 0
WINDOW = 4
# rope_theta is not 10000, so a runtime that misses it (or reads it from the wrong key) drifts.
ROPE = {"rope_type": "default", "rope_theta": 50000.0}
COMMON = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, vocab_size=512,
              max_position_embeddings=128, rms_norm_eps=1e-6, pad_token_id=PAD,
              bos_token_id=1, eos_token_id=2, rope_parameters=ROPE)


def models():
    """(folder, model class, config) per model."""
    mistral = MistralConfig(num_attention_heads=4, num_key_value_heads=2,
                            tie_word_embeddings=False, **COMMON)
    qwen2 = Qwen2Config(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                        **COMMON)
    llama = LlamaConfig(num_attention_heads=8, num_key_value_heads=2, head_dim=8,
                        attention_bias=True, tie_word_embeddings=False, **COMMON)
    return [("mistral", MistralForCausalLM, mistral), ("qwen2", Qwen2ForCausalLM, qwen2),
            ("llama-gqa", LlamaForCausalLM, llama)]


def spread(model: torch.nn.Module, gen: torch.Generator):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


def run(model, ids, mask):
    """Logits, transformers' hidden states and the last block's output (hooked)."""
    seen = {}
    hook = model.model.layers[-1].register_forward_hook(
        lambda mod, args, out: seen.__setitem__("last", out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        o = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    hook.remove()
    return o.logits, o.hidden_states, seen["last"]


def make(out: Path):
    torch.set_num_threads(1)
    for i, (folder, cls, cfg) in enumerate(models()):
        model, gen = new_model(cls, cfg, 3000 + i, 4000 + i, spread)
        if cfg.tie_word_embeddings:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        # Real tokens avoid the special ids 0..2 (and so the pad id).
        ids, mask = right_padded_batch(gen, 3, cfg.vocab_size, SEQ, REAL1, PAD)
        logits, hs, last = run(model, ids, mask)
        n_layers = cfg.num_hidden_layers
        assert len(hs) == n_layers + 1, (folder, len(hs))
        assert torch.equal(hs[-1], model.model.norm(last)), folder
        d = out / folder
        # Loaded back: the saved folder gives the same outputs.
        o2 = save_and_reload(model, cls, d, ids, mask)
        assert torch.equal(o2.logits, logits), folder
        arrays = reference_arrays(ids, mask, {"logits": logits, "last_block_output": last}, hs)
        if folder == "mistral":
            assert cfg.sliding_window >= SEQ, "the folder's window must not matter at SEQ"
            model.config.sliding_window = WINDOW
            with torch.no_grad():
                w = model(input_ids=ids, attention_mask=mask).logits
            model.config.sliding_window = cfg.sliding_window
            assert (w - logits).abs().max() > 1e-2, "the window made no difference"
            arrays[f"logits_sliding_window_{WINDOW}"] = w.numpy().astype(np.float32)
        save_reference(d, folder, arrays)


if __name__ == "__main__":
    tiny_models.main(__doc__, REPO / "fixtures" / "decoders", make)
