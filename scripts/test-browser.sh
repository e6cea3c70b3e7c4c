#!/usr/bin/env bash
# Browser tests: the engine on WebGPU in headless Chromium (wasm-bindgen tests run by
# `wasm-pack test --headless --chrome`), then the page, built by trunk, end to end (Playwright
# driving Debian's Chromium; no browser download): a short SGPO run, a reload that resumes it,
# downloads that the native CLI reads; and the same without WebGPU on the CPU backend compiled
# to wasm (scripts/setup.sh installs Chromium and node).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/web.sh   # dist/ by trunk, and the pinned tools (scripts/tools.sh)
source scripts/env.sh

# Offline: wasm-pack installs nothing (--mode no-install): it takes the wasm-bindgen on PATH
# (Cargo.lock's version, with its test runner) and Debian's chromedriver.
export WASM_BINDGEN_TEST_TIMEOUT=900
export WASM_BINDGEN_TEST_WEBDRIVER_JSON="$PWD/tests/browser/webdriver.json"
wasm-pack test --headless --chrome --chromedriver /usr/bin/chromedriver --release --mode no-install -- --locked --test web

(cd tests/browser && npm install --no-audit --no-fund --no-package-lock >/dev/null)
python3 -m http.server --bind 127.0.0.1 --directory dist 8080 >/dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
sleep 1
out=runs/browser
rm -rf "$out"
node tests/browser/e2e.mjs http://127.0.0.1:8080/ "$out/webgpu"
echo "e2e passed: WebGPU"
# The checkpoint downloaded from the page is a run directory the native CLI reads.
tar xf "$out/webgpu/sgpo-run.tar" -C "$out/webgpu"
cargo run --release --locked --quiet -- eval --model "$out/webgpu/sgpo-run" --device cpu
# Without WebGPU: the page says so and runs on the CPU backend compiled to wasm.
NO_WEBGPU=1 node tests/browser/e2e.mjs http://127.0.0.1:8080/ "$out/cpu"
echo "e2e passed: CPU fallback"
echo "browser tests passed; screenshots: $out/webgpu/page.png, $out/cpu/page.png"
