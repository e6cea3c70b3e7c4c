#!/usr/bin/env bash
# Shrink the engine's wasm in place with binaryen's wasm-opt -O1, the name section and producers
# stripped: 39.9 MB -> 25.9 MB, 6.9 -> 5.5 MB gzipped, about 70 s here (README, "In the
# browser"). Run by trunk after a release build (Trunk.toml's post_build hook) and by
# scripts/web.sh. binaryen 132 from the npm registry (run by node; pinned checksum): Debian's
# binaryen 108 breaks wasm-bindgen's externref table ("WebAssembly.Table.set(): Argument 1 is
# invalid"), and -Oz takes 4 minutes for a larger gzipped file. The --enable flags are the
# features rustc's wasm32 target emits.
set -euo pipefail
cd "$(dirname "$0")/.."
wasm="${1:-${TRUNK_STAGING_DIR:-dist}/sgpo_bg.wasm}"
if [ "${TRUNK_PROFILE:-release}" != release ]; then exit 0; fi
source scripts/env.sh
source scripts/npm-pack.sh
binaryen="$SGPO_TOOLS/binaryen"
npm_unpack binaryen 132.0.0 sha512-4Usg7yEvwO3FMso3Oov6qkOOHSod1IEv+boKkh77kTljM+eNBouqCTbqWswGzbG+vDNO/b/v2C4gfEh1WgB9Lg== "$binaryen"
node "$binaryen/bin/wasm-opt" -O1 --enable-bulk-memory --enable-nontrapping-float-to-int \
  --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
  --strip-debug --strip-producers "$wasm" -o "$wasm.opt"
mv "$wasm.opt" "$wasm"
