#!/usr/bin/env python3
"""Run a GGUF file through llama.cpp (via llama-cpp-python) and dump its outputs.

llama.cpp is the reference consumer of llama.cpp-convention GGUF files; this
script lets ferry's GGUF output be judged by it. It needs `llama_cpp` and
`numpy`, which the project's .venv does not have: use the separate venv built
from the llama-cpp-python sdist (wheel kept under target/llama-wheel/):

    python3 -m venv target/llama-venv
    target/llama-venv/bin/pip install target/llama-wheel/llama_cpp_python-*.whl numpy

Decoder (default): every position's logits, each row evaluated from a fresh
state (KV cache cleared), no BOS added -- the ids are fed exactly as given.

    target/llama-venv/bin/python scripts/llama_cpp_logits.py \
        --model m.gguf --ids ids.npy --out out.npz
    -> out.npz: logits float32 [batch, seq, vocab], ids int64 [batch, seq]

Embedding model (--embedding): per-token hidden states (pooling NONE, not
normalized).
    -> out.npz: embeddings float32 [batch, seq, n_embd], ids int64 [batch, seq]

--ids is an int64 .npy of shape [batch, seq] or [seq] (treated as batch 1), or a .json
list of equally long lists of token ids.

Made and measured by scripts/setup-llama-cpp.sh's llama-cpp-python 0.3.36 (llama.cpp
0c1e57098bba43ac29e6e3b677cdceebdd22334f); `--embedding` reaches into llama-cpp-python's
internal `_ctx`/`_batch` objects, so it is tied to that version.
"""

import argparse
import json
import sys
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--ids", required=True, help="int64 .npy, [batch, seq] or [seq]")
    ap.add_argument("--out", required=True, help="output .npz")
    ap.add_argument("--embedding", action="store_true",
                    help="embedding model: write per-token embeddings instead of logits")
    ap.add_argument("--n-ctx", type=int, default=0,
                    help="context size (default: seq length rounded up to 256)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--verbose", action="store_true", help="llama.cpp's own log")
    args = ap.parse_args()

    import llama_cpp

    if args.ids.endswith(".json"):
        with open(args.ids) as f:
            ids = np.array(json.load(f), dtype=np.int64)
    else:
        ids = np.load(args.ids).astype(np.int64)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2:
        sys.exit(f"--ids must be [batch, seq] or [seq], got shape {ids.shape}")
    batch, seq = ids.shape
    n_ctx = args.n_ctx or max(256, -(-seq // 256) * 256)

    t0 = time.perf_counter()
    kw = dict(model_path=args.model, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
              n_threads=args.threads, n_threads_batch=args.threads,
              verbose=args.verbose)
    if args.embedding:
        llm = llama_cpp.Llama(**kw, embedding=True,
                              pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE)
    else:
        llm = llama_cpp.Llama(**kw, logits_all=True)
    t_load = time.perf_counter() - t0

    n_vocab = llm.n_vocab()
    if ids.min() < 0 or ids.max() >= n_vocab:
        sys.exit(f"ids out of range for vocab {n_vocab}: [{ids.min()}, {ids.max()}]")

    t0 = time.perf_counter()
    if args.embedding:
        n_embd = llm.n_embd()
        out = np.empty((batch, seq, n_embd), dtype=np.float32)
        for b in range(batch):
            llm._ctx.kv_cache_clear()
            llm._batch.set_batch(batch=ids[b].tolist(), n_past=0, logits_all=True)
            llm._ctx.decode(llm._batch)
            ptr = llama_cpp.llama_get_embeddings(llm._ctx.ctx)
            out[b] = np.ctypeslib.as_array(ptr, shape=(seq * n_embd,)).reshape(seq, n_embd)
        key = "embeddings"
    else:
        out = np.empty((batch, seq, n_vocab), dtype=np.float32)
        for b in range(batch):
            llm.reset()  # n_tokens = 0; eval() then drops the whole KV cache
            llm.eval(ids[b].tolist())
            out[b] = llm.scores[:seq]
        key = "logits"
    t_run = time.perf_counter() - t0

    np.savez(args.out, **{key: out, "ids": ids})
    print(f"{args.model}: {key} {list(out.shape)}  load {t_load:.2f}s  run {t_run:.2f}s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
