"""What scripts/make_tiny_encoders.py and scripts/make_tiny_decoders.py share: a seeded tiny model
with redrawn weights, its right-padded batch, the saved folder checked by loading it back, the
`reference.npz` of what transformers computed, and the command line (`[OUT_DIR]`, `--check`).

Imported by those scripts (run as `python scripts/make_tiny_<x>.py`, so this folder is on
`sys.path`); not run on its own.
"""
import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

REPO = Path(__file__).resolve().parent.parent


def new_model(cls, cfg, seed: int, gen_seed: int, spread):
    """`cls(cfg)` in eval mode with eager attention, initialised under `torch.manual_seed(seed)`,
    then its weights redrawn by `spread(model, gen)`; returns the model and `gen`, the generator
    seeded with `gen_seed` (it goes on to draw the batch)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(gen_seed)
    cfg._attn_implementation = "eager"
    model = cls(cfg).eval()
    spread(model, gen)
    return model, gen


def right_padded_batch(gen: torch.Generator, low: int, vocab: int, seq: int, real1: int, pad: int):
    """Two rows of `seq` token ids drawn from `low..vocab` by `gen`, and their attention mask: row
    0 all real tokens, row 1 `real1` real tokens then `pad` (mask 0)."""
    ids = torch.randint(low, vocab, (2, seq), generator=gen)
    mask = torch.ones(2, seq, dtype=torch.long)
    ids[1, real1:] = pad
    mask[1, real1:] = 0
    return ids, mask


def save_and_reload(model, cls, d: Path, ids, mask):
    """Saves `model` to the folder `d` (`save_pretrained`, safetensors), loads it back with
    eager attention, and returns what the loaded model computes on the batch (so the caller can
    check that the saved folder gives the same outputs)."""
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    back = cls.from_pretrained(d, attn_implementation="eager").eval()
    with torch.no_grad():
        return back(input_ids=ids, attention_mask=mask)


def reference_arrays(ids, mask, outputs: dict, hidden_states) -> dict:
    """The arrays of `reference.npz`, in file order: `input_ids` and `attention_mask` (int64),
    then `outputs` (name to tensor, f32) and `hidden_states_<i>` (f32) for each hidden state."""
    arrays = {
        "input_ids": ids.numpy().astype(np.int64),
        "attention_mask": mask.numpy().astype(np.int64),
    }
    for k, t in outputs.items():
        arrays[k] = t.numpy().astype(np.float32)
    for k, h in enumerate(hidden_states):
        arrays[f"hidden_states_{k}"] = h.numpy().astype(np.float32)
    return arrays


def save_reference(d: Path, folder: str, arrays: dict):
    """Writes `arrays` to `d/reference.npz` and prints the size of each file in `d`."""
    np.savez(d / "reference.npz", **arrays)
    sizes = {f.name: f.stat().st_size for f in sorted(d.iterdir())}
    print(f"{folder}: {sizes}")


def digest(d: Path):
    """The SHA-256 of every file below `d` but the README."""
    return {str(f.relative_to(d)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(d.rglob("*")) if f.is_file() and f.name != "README.md"}


def main(doc: str, default_out: Path, make):
    """The scripts' command line (`doc`: the script's docstring): `make(OUT_DIR)` (default
    `default_out`), or with `--check` `make` into a temp dir and compare it with OUT_DIR."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("out", nargs="?", default=str(default_out))
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
        diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        if diff:
            sys.exit(f"differs from {a.out}: {diff}")
        print(f"{len(want)} files identical")
