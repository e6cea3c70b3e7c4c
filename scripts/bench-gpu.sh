#!/usr/bin/env bash
# The benchmark on a machine with a GPU: `sgpo bench` on wgpu beside its PyTorch peer on CUDA
# (eager transformers; scripts/bench-peer.sh prints the ratios) for each preset, then our CPU
# backend for comparison. SGPO_BIN names a prebuilt binary (default: the release build);
# `python3` must have torch and transformers (the lent GPU machines' image has both).
set -uo pipefail
cd "$(dirname "$0")/.."
bin="${SGPO_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/sgpo-target}/release/sgpo}"
for preset in tiny small smollm2-135m; do
  SGPO_BIN="$bin" SGPO_PYTHON="${SGPO_PYTHON:-python3}" SGPO_DEVICE=wgpu scripts/bench-peer.sh "$preset" --steps 3
done
"$bin" bench --device cpu --preset small
