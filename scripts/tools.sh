#!/usr/bin/env bash
# The command-line tools the page's build and the browser tests use, at pinned versions, from
# crates.io: wasm-bindgen (Cargo.lock's version; it brings wasm-bindgen-test-runner), trunk
# (builds the page) and wasm-pack (runs the wasm tests). Installed under
# $SGPO_TOOLS (scripts/env.sh: ~/.cache/sgpo-tools), outside the checkout, so a fresh clone on the same machine (as CI
# makes) finds them; a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
root="$SGPO_TOOLS"

has() { "$1" --version 2>/dev/null | grep -q "$2"; }

bindgen=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
grep -q "wasm_bindgen = \"$bindgen\"" Trunk.toml || { echo "Trunk.toml must pin wasm_bindgen = \"$bindgen\" (Cargo.lock's)" >&2; exit 1; }
# Without --locked: with it a locked dependency is missing from the registry (TOOLCHAIN.md).
has wasm-bindgen "$bindgen" || cargo install --root "$root" wasm-bindgen-cli --version "$bindgen"
# trunk and wasm-pack mostly start other programs: unoptimised builds do that as well and
# compile in a third of the time (trunk: 1 min 46 s instead of 5 min 8 s with its fat LTO).
# wasm-bindgen rewrites a 40 MB module: it stays optimised.
quick=(--debug --config profile.dev.debug=0)
# trunk 0.22 needs a newer rustc than stable here; 0.21 builds the same page.
has trunk 0.21.14 || cargo install "${quick[@]}" --root "$root" trunk --version 0.21.14 --locked
has wasm-pack 0.15.1 || cargo install "${quick[@]}" --root "$root" wasm-pack --version 0.15.1 --locked
