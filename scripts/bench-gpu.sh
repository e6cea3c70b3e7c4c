#!/usr/bin/env bash
# The benchmark on a machine with a GPU: `sgpo bench` on wgpu at two model sizes, and on the
# CPU backend for comparison. SGPO_BIN names a prebuilt binary (default: the release build).
set -uo pipefail
cd "$(dirname "$0")/.."
bin="${SGPO_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/sgpo-target}/release/sgpo}"
"$bin" bench --device wgpu --preset small --batch-size 24
"$bin" bench --device wgpu --preset smollm2-135m --batch-size 8
"$bin" bench --device cpu --preset small --batch-size 24
