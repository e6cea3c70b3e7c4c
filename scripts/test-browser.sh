#!/usr/bin/env bash
# Browser tests: the engine on WebGPU in headless Chromium (wasm-bindgen-test), then the page
# end to end (Playwright driving Debian's Chromium; no browser download). Needs chromium,
# chromium-driver and node; installs them on Debian when missing. Not yet part of .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
scripts/web.sh   # wasm-bindgen CLI (also brings wasm-bindgen-test-runner) and pkg/
source scripts/env.sh

export CHROMEDRIVER=/usr/bin/chromedriver
export WASM_BINDGEN_TEST_TIMEOUT=900
export WASM_BINDGEN_TEST_WEBDRIVER_JSON="$PWD/tests/browser/webdriver.json"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
cargo test --release --target wasm32-unknown-unknown --test web

(cd tests/browser && npm install --no-audit --no-fund --no-package-lock >/dev/null)
python3 -m http.server --bind 127.0.0.1 8080 >/dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
sleep 1
mkdir -p runs
node tests/browser/e2e.mjs http://127.0.0.1:8080/ runs/browser-e2e.png
# Without WebGPU: the page says so and runs on the CPU backend compiled to wasm.
NO_WEBGPU=1 node tests/browser/e2e.mjs http://127.0.0.1:8080/ runs/browser-cpu.png
echo "screenshots: runs/browser-e2e.png, runs/browser-cpu.png"
