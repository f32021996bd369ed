#!/usr/bin/env bash
# Seed corpora for the fuzz targets, copied (and, for pickles and npy members, extracted) from
# fixtures/ into fuzz/corpus/<target>/. Idempotent; fuzz/corpus is git-ignored (libFuzzer adds
# what it finds there). Needs `unzip`. SEED_SKIP="bombs hostile_onnx" leaves out fixture
# folders (known, unfixed findings stop a target at its first input: skip them to look for
# new ones).
set -euo pipefail
cd "$(dirname "$0")"
fx=../fixtures
skipped() { local d; for d in ${SEED_SKIP:-}; do case $1 in "$fx/$d"/*) return 0 ;; esac; done; return 1; }
seed() { # seed TARGET FILE [NAME]: copy FILE into corpus/TARGET as NAME (default: its path)
  skipped "$2" && return 0
  local name=${3:-${2#"$fx/"}}
  mkdir -p "corpus/$1"
  cp "$2" "corpus/$1/${name//\//_}"
}
is_zip() { [ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' ')" = 504b0304 ]; }
small() { [ "$(stat -c %s "$1")" -le "$2" ]; }

# pickle: the hostile pickles, legacy torch.save files, and every *.pkl inside the torch zips.
for f in "$fx"/hostile/*.pkl "$fx"/hostile/*.pth "$fx"/pytorch/legacy.pth; do seed pickle "$f"; done
# zip: every torch / TorchScript zip and npz.
while IFS= read -r f; do
  is_zip "$f" && ! skipped "$f" || continue
  small "$f" 65536 && seed zip "$f"
  for e in $(unzip -Z1 "$f" | grep '\.pkl$' || true); do
    mkdir -p corpus/pickle
    unzip -p "$f" "$e" > "corpus/pickle/$(echo "${f#"$fx/"}:$e" | tr '/:' '__')"
  done
done < <(find "$fx" -type f \( -name '*.pth' -o -name '*.pt' -o -name '*.npz' \) | sort)
# safetensors: every file up to 64 KiB (single, shards, training references).
while IFS= read -r f; do small "$f" 65536 && seed safetensors "$f"; done \
  < <(find "$fx" -type f -name '*.safetensors' | sort)
# sharded_index: the real index, plus one naming itself (issue 14, finding 2).
seed sharded_index "$fx/safetensors/sharded/model.safetensors.index.json"
printf '{"metadata":{"total_size":4},"weight_map":{"a":"model.safetensors.index.json","b":"model-00001-of-00003.safetensors"}}' \
  > corpus/sharded_index/self_reference.json
# gguf: v1, v2, v3.
for f in "$fx"/gguf/*.gguf; do seed gguf "$f"; done
# numpy: the .npy files, the small .npz files, and the .npy members of fixtures/numpy/*.npz.
for f in "$fx"/numpy/*; do seed numpy "$f"; done
while IFS= read -r f; do small "$f" 32768 && seed numpy "$f"; done \
  < <(find "$fx" -type f -name '*.npz' ! -path "$fx/numpy/*" | sort)
for f in "$fx"/numpy/arrays.npz; do
  for e in $(unzip -Z1 "$f"); do unzip -p "$f" "$e" > "corpus/numpy/arrays.npz_$e"; done
done
# onnx: every graph up to 256 KiB (encoder.onnx, 390 KB, is left out: too slow to mutate).
while IFS= read -r f; do small "$f" 262144 && seed onnx "$f"; done \
  < <(find "$fx" -type f -name '*.onnx' | sort)

for d in corpus/*/; do printf '%-14s %3d seeds\n' "$(basename "$d")" "$(ls "$d" | wc -l)"; done
