#!/usr/bin/env bash
# The test command: native tests (CPU backend and wgpu on whatever adapter there is, lavapipe
# without a GPU), then a check that the library builds for the browser.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh

cargo test --release --locked
cargo check --release --locked --lib --target wasm32-unknown-unknown
echo "wasm32: library compiles"
