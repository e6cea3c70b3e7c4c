#!/usr/bin/env bash
# Shrink the engine's wasm in place: binaryen's wasm-opt at -Oz, the name section and producers
# stripped (39.9 MB -> 21.2 MB, 6.9 -> 5.7 MB gzipped; README, "The page"). Run by trunk after a
# release build (Trunk.toml's post_build hook) and by scripts/web.sh. The --enable flags are the
# features rustc's wasm32 target emits by default, which older wasm-opt builds do not assume.
set -euo pipefail
wasm="${1:-${TRUNK_STAGING_DIR:-dist}/sgpo_bg.wasm}"
if [ "${TRUNK_PROFILE:-release}" != release ]; then exit 0; fi
if ! command -v wasm-opt >/dev/null; then
  echo "warning: wasm-opt (Debian/npm package binaryen) not found: $wasm left unoptimised" >&2
  exit 0
fi
wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  --strip-debug --strip-producers "$wasm" -o "$wasm.opt"
mv "$wasm.opt" "$wasm"
