#!/usr/bin/env bash
# Build the browser page's wasm (into pkg/) and, with `serve`, serve the repo root on
# http://127.0.0.1:8080 (WebGPU needs a secure context; localhost counts).
# Trunk integration is still to come; this uses wasm-bindgen directly, with the version
# Cargo.lock pins.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh

version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if ! wasm-bindgen --version 2>/dev/null | grep -q "$version"; then
  # Without --locked: with it a locked dependency is missing from the registry (TOOLCHAIN.md).
  cargo install wasm-bindgen-cli --version "$version"
fi
cargo build --release --locked --lib --target wasm32-unknown-unknown
wasm-bindgen --target web --no-typescript --out-dir pkg "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/sgpo.wasm"
echo "built pkg/ ($(du -sh pkg | cut -f1))"
if [ "${1:-}" = serve ]; then
  exec python3 -m http.server --bind 127.0.0.1 8080
fi
