#!/usr/bin/env bash
# Build the page into dist/: index.html, web/, and the engine compiled to wasm with its
# wasm-bindgen glue (sgpo.js, sgpo_bg.wasm) for the worker. With trunk on PATH this is
# `trunk build` (Trunk.toml); without it, the same steps by hand, giving the same files (CI
# takes this road: installing trunk costs ~14 min of a cold run).
# `scripts/web.sh serve` then serves dist/ on http://127.0.0.1:8080 (WebGPU needs a secure
# context; localhost counts).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh

version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
grep -q "wasm_bindgen = \"$version\"" Trunk.toml || { echo "Trunk.toml must pin wasm_bindgen = \"$version\" (Cargo.lock's)"; exit 1; }
if ! wasm-bindgen --version 2>/dev/null | grep -q "$version"; then
  # Without --locked: with it a locked dependency is missing from the registry (TOOLCHAIN.md).
  cargo install wasm-bindgen-cli --version "$version"
fi
if command -v trunk >/dev/null && [ "${SGPO_NO_TRUNK:-}" != 1 ]; then
  trunk build --release
else
  cargo build --release --locked --lib --target wasm32-unknown-unknown
  rm -rf dist && mkdir -p dist
  wasm-bindgen --target web --no-typescript --out-dir dist "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/sgpo.wasm"
  cp index.html dist/ && cp -r web dist/
fi
echo "built dist/ ($(du -sh dist | cut -f1))"
if [ "${1:-}" = serve ]; then
  exec python3 -m http.server --bind 127.0.0.1 --directory dist 8080
fi
