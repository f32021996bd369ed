#!/usr/bin/env bash
# Provenance: ../shared/cuda/toolchain.sh of the ferry workplace (2026-12), kept here so a clean clone (CI) can
# build the `cuda` feature; see docs/architecture.md, "CUDA without a GPU here".
# Builds a CUDA 13.0 toolchain for compiling candle's `cuda` feature on a machine with no CUDA toolkit and no GPU,
# from NVIDIA's wheels on PyPI. Usage: toolchain.sh DIR   (then: source DIR/env.sh; cargo build --release --features cuda)
# Pinned to 13.0 on purpose: driver 580 accepts PTX 9.0 (nvcc 13.0); a newer nvcc emits PTX that driver rejects.
set -euo pipefail
D=$(mkdir -p "${1:?usage: toolchain.sh DIR}" && cd "$1" && pwd)
[ -x "$D/venv/bin/python" ] || python3 -m venv "$D/venv"
"$D/venv/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-cccl==13.0.85
CU=$(echo "$D"/venv/lib/python3*/site-packages/nvidia/cu13)
mkdir -p "$D/root/lib64" "$D/stub"
ln -sfn "$CU/bin" "$D/root/bin"; ln -sfn "$CU/include" "$D/root/include"
for l in cudart cublas cublasLt nvrtc; do ln -sf "$CU/lib/lib$l.so.13" "$D/root/lib64/lib$l.so"; done
ln -sf "$CU/lib/libcurand.so.10" "$D/root/lib64/libcurand.so"
# Link-time stub of the driver library (soname libcuda.so.1): every cu* entry point of cuda.h returns
# CUDA_ERROR_STUB_LIBRARY. The real libcuda.so.1 comes from the NVIDIA driver on the GPU machine.
echo '#include <cuda.h>' | gcc -E -I"$CU/include" -x c - >"$D/stub/cuda_pp.h"
( grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' "$D/stub/cuda_pp.h"; grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' "$CU/include/cuda.h" ) \
  | sed -E 's/[[:space:]]*\($//' | sort -u | sed 's/.*/int &(void){return 34;}/' >"$D/stub/libcuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 "$D/stub/libcuda_stub.c" -o "$D/root/lib64/libcuda.so"
cat >"$D/env.sh" <<ENV
export PATH="$D/root/bin:\$PATH" CUDA_HOME="$D/root" CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH="$D/root/lib64\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
ENV
"$D/root/bin/nvcc" --version | tail -1
echo "toolchain ready: source $D/env.sh"
