#!/usr/bin/env bash
# The test command: native tests (CPU backend and wgpu on whatever adapter there is, lavapipe
# without a GPU), then a check that the library builds for the browser.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --locked 2>&1 | tee "$log"
cargo check --release --locked --lib --target wasm32-unknown-unknown
echo "wasm32: library compiles"
# One closing line over every test binary (cargo's own last line is the doc-tests', often 0).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
