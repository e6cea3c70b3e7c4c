#!/usr/bin/env bash
# The page's one JavaScript library, uPlot (MIT; the charts), from the npm registry at a pinned
# version and checksum, into web/vendor/ (not committed). Run by trunk before each build
# (Trunk.toml's pre_build hook) and by scripts/web.sh; a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/npm-pack.sh
package="$SGPO_TOOLS/uplot"
npm_unpack uplot 1.6.32 sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw== "$package"
mkdir -p web/vendor
for f in dist/uPlot.esm.js dist/uPlot.min.css LICENSE; do
  cmp -s "$package/$f" "web/vendor/$(basename "$f")" || cp "$package/$f" web/vendor/
done
