#!/usr/bin/env bash
# The test command: native tests (CPU backend, and wgpu on whatever adapter there is: lavapipe
# without a GPU), then the browser tests (the engine on WebGPU in headless Chromium, and the
# page end to end: a run, a reload that resumes it, downloads the CLI reads).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --locked 2>&1 | tee "$log"
scripts/test-browser.sh 2>&1 | tee -a "$log"
# One closing line over every test binary (cargo's own last line is the doc-tests', often 0),
# the wasm tests in Chromium included, and the page runs.
awk '/^test result:/ { p += $4; f += $6 } /^e2e passed:/ { e++ }
     END { printf "tests: %d passed, %d failed; browser end-to-end runs: %d passed\n", p, f, e }' "$log"
