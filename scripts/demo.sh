#!/usr/bin/env bash
# Set up, then run the built-in default: SFT on the built-in tasks, and its score next to the
# untrained model's. Run again to resume an interrupted run (or to just re-score a finished one).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh

cargo build --release --locked
sgpo="$CARGO_TARGET_DIR/release/sgpo"
run="${1:-runs/demo}"

if [ -f "$run/latest" ]; then
  "$sgpo" sft --out "$run" --resume
else
  "$sgpo" sft --out "$run"
fi
echo "== trained model, held-out built-in tasks"
"$sgpo" eval --model "$run"
echo "== the same model untrained"
"$sgpo" eval --model "$run" --untrained
