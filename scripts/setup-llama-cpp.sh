#!/usr/bin/env bash
# Creates target/llama-venv with llama.cpp itself (llama-cpp-python 0.3.36, which vendors
# llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f), the consumer that judges ferry's GGUF
# files in crates/ferry-verify/tests/consumers.rs (through scripts/llama_cpp_logits.py).
# PyPI has only its source: it is built here (CPU, AVX2 kernels, and AVX-512 ones where this CPU
# has AVX-512F: a build with them dies of SIGILL on a CPU without; no tests, examples, server or
# multimodal library (LLAVA_BUILD=OFF: ferry's scripts never load it)): a few minutes on 2 cores,
# 0.7 GB peak memory. The wheel is kept in target/llama-wheel/<isa>/ so a second run installs it
# in seconds (not in pip's cache: that one is keyed by the source alone, and would hand an
# AVX-512 build to a CPU without). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/llama-venv
version=0.3.36
py=${PYTHON:-python3}
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then isa=avx512; avx512=ON; else isa=avx2; avx512=OFF; fi
if [ -x $venv/bin/python ] && [ "$(cat $venv/ferry-isa 2>/dev/null)" = "$isa" ] \
    && $venv/bin/python -c "import llama_cpp, numpy; assert llama_cpp.__version__ == '$version'" 2>/dev/null; then
    echo "setup-llama-cpp: $venv is complete"
    exit 0
fi
"$py" -m venv $venv
$venv/bin/python -m pip install --quiet --upgrade pip
$venv/bin/python -m pip install --quiet numpy cmake ninja
wheels=target/llama-wheel/$isa
mkdir -p $wheels
if ! ls $wheels/llama_cpp_python-$version-*.whl >/dev/null 2>&1; then
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=$avx512 -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF" \
    MAKEFLAGS=-j"$(nproc)" \
        $venv/bin/python -m pip wheel --quiet --no-cache-dir --no-deps --no-binary llama-cpp-python \
        -w $wheels "llama-cpp-python==$version"
fi
$venv/bin/python -m pip install --quiet --no-deps --force-reinstall $wheels/llama_cpp_python-$version-*.whl
echo $isa > $venv/ferry-isa
$venv/bin/python -m pip install --quiet diskcache jinja2 typing-extensions
$venv/bin/python -c "import llama_cpp; print('setup-llama-cpp: llama-cpp-python', llama_cpp.__version__, '($isa)')"
