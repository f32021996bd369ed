#!/usr/bin/env bash
# Makes fixtures/langid-demo/: the model `ferry migrate` migrates when given no input (compiled
# into ferry-migrate). It is trained by ferry itself from configs/langid-demo.toml on the
# repo's UDHR corpus; the card's `eval_data` (an absolute path on the machine that trained it)
# is cleared, as the demo runs anywhere and verifies on the embedded UDHR probes instead.
#   bash scripts/make_langid_demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# The binary embeds the committed fixture, so building it needs one (git keeps it).
cargo build --release -q -p ferry-cli
rm -rf target/tmp/langid-demo
./target/release/ferry train --config configs/langid-demo.toml --quiet
out=fixtures/langid-demo
mkdir -p "$out"
cp target/tmp/langid-demo/best/model.safetensors target/tmp/langid-demo/best/tokenizer.json "$out/"
python3 - "$out" <<'PY'
import json, sys
src = "target/tmp/langid-demo/best/ferry-model.json"
card = json.load(open(src))
card["eval_data"] = None
json.dump(card, open(f"{sys.argv[1]}/ferry-model.json", "w"), indent=2)
open(f"{sys.argv[1]}/ferry-model.json", "a").write("\n")
PY
cp target/tmp/langid-demo/report.md "$out/training-report.md"
echo "wrote $out"
