#!/usr/bin/env bash
# Build the page into dist/: index.html, web/, and the engine compiled to wasm with its
# wasm-bindgen glue (sgpo.js, sgpo_bg.wasm) for the worker, by `trunk build` (Trunk.toml; the
# tools come from scripts/tools.sh). SGPO_NO_TRUNK=1 takes the same steps by hand, giving the
# same files, for a machine without trunk.
# `scripts/web.sh serve` then serves dist/ on http://127.0.0.1:8080 (WebGPU needs a secure
# context; localhost counts).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh

scripts/tools.sh
if [ "${SGPO_NO_TRUNK:-}" != 1 ]; then
  trunk build --release --locked
else
  cargo build --release --locked --lib --target wasm32-unknown-unknown
  scripts/vendor.sh   # uPlot into web/vendor/ (trunk runs it as a hook)
  rm -rf dist && mkdir -p dist
  wasm-bindgen --target web --no-typescript --out-dir dist "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/sgpo.wasm"
  scripts/wasm-opt.sh dist/sgpo_bg.wasm
  cp index.html dist/ && cp -r web dist/
fi
echo "built dist/ ($(du -sh dist | cut -f1))"
if [ "${1:-}" = serve ]; then
  exec python3 -m http.server --bind 127.0.0.1 --directory dist 8080
fi
