#!/usr/bin/env bash
# Set up, then run the built-in default: SFT on the built-in tasks, then SGPO from it, and the
# scores of both next to the untrained model's. Run again to resume whatever was interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh

cargo build --release --locked
sgpo="$CARGO_TARGET_DIR/release/sgpo"
runs="${1:-runs/demo}"

resume() { [ -f "$1/latest" ] && echo --resume || true; }
"$sgpo" sft --out "$runs/sft" $(resume "$runs/sft")
"$sgpo" train --method sgpo --init "$runs/sft" --out "$runs/sgpo" $(resume "$runs/sgpo")

echo "== untrained model, held-out built-in tasks"
"$sgpo" eval --model "$runs/sft" --untrained
echo "== after SFT"
"$sgpo" eval --model "$runs/sft"
echo "== after SGPO"
"$sgpo" eval --model "$runs/sgpo"
