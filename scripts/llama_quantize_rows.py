#!/usr/bin/env python3
"""Quantize rows of f32 with llama.cpp's own kernels, weighted by an importance vector.

The reference for ferry's importance-weighted q4_0/q4_1/q5_0/q5_1
(crates/ferry-io/src/quant/weighted.rs, tested in crates/ferry-io/tests/imatrix.rs):
calls ggml's `ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, imatrix)`
through ctypes, exactly what `llama-quantize --imatrix` runs per tensor (with
`imatrix` the importance of each of a row's columns, `in_sum2 / counts`).

    target/llama-venv/bin/python scripts/llama_quantize_rows.py \
        --type q5_0 --rows rows.npy --importance importance.npy --out q.bin

--rows is a float32 .npy of shape [nrows, n_per_row]; --importance a float32
.npy of shape [n_per_row] (leave it out for llama.cpp's unweighted kernel);
--out receives the GGML blocks, row after row, and nothing else.

Needs `llama_cpp` (llama-cpp-python, whose wheel ships libggml-base.so) and
numpy: scripts/setup-llama-cpp.sh builds that venv. Made with llama-cpp-python
0.3.36 (llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f), whose ggml-base is
compiled for the x86-64 baseline (no fused multiply-add).
"""

import argparse
import ctypes
import os
import sys

import numpy as np

# ggml's `enum ggml_type` values (ggml/include/ggml.h).
GGML_TYPES = {"q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
              "q2_k": 10, "q3_k": 11, "q4_k": 12, "q5_k": 13, "q6_k": 14}


def ggml_base() -> ctypes.CDLL:
    """libggml-base from llama_cpp's own lib/ folder (the library llama.cpp itself runs)."""
    import llama_cpp

    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    lib = ctypes.CDLL(os.path.join(lib_dir, "libggml-base.so"))
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_row_size.restype = ctypes.c_size_t
    return lib


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--type", required=True, choices=sorted(GGML_TYPES))
    ap.add_argument("--rows", required=True, help="float32 .npy [nrows, n_per_row]")
    ap.add_argument("--importance", help="float32 .npy [n_per_row]; omit for unweighted")
    ap.add_argument("--out", required=True, help="file for the quantized blocks")
    args = ap.parse_args()

    rows = np.ascontiguousarray(np.load(args.rows), dtype=np.float32)
    if rows.ndim != 2:
        sys.exit(f"{args.rows}: expected [nrows, n_per_row], got shape {rows.shape}")
    nrows, n_per_row = rows.shape
    imatrix = None
    if args.importance:
        imatrix = np.ascontiguousarray(np.load(args.importance), dtype=np.float32)
        if imatrix.shape != (n_per_row,):
            sys.exit(f"{args.importance}: expected [{n_per_row}], got shape {imatrix.shape}")

    lib = ggml_base()
    t = GGML_TYPES[args.type]
    lib.ggml_quantize_init(t)
    size = lib.ggml_row_size(t, n_per_row) * nrows
    dst = ctypes.create_string_buffer(size)
    wrote = lib.ggml_quantize_chunk(
        t, rows.ctypes.data, dst, 0, nrows, n_per_row,
        None if imatrix is None else imatrix.ctypes.data)
    if wrote != size:
        sys.exit(f"ggml_quantize_chunk wrote {wrote} bytes, expected {size}")
    with open(args.out, "wb") as f:
        f.write(dst.raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
