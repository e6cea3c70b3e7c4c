#!/usr/bin/env bash
# The page's one JavaScript library, uPlot (MIT; the charts), from the npm registry at a pinned
# version and checksum, into web/vendor/ (not committed). Run by trunk before each build
# (Trunk.toml's pre_build hook) and by scripts/web.sh; a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.6.32
integrity=sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==
out=web/vendor
if [ "$(cat "$out/VERSION" 2>/dev/null)" = "uplot $version" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@$version" >/dev/null)
got="sha512-$(openssl dgst -sha512 -binary "$tmp/uplot-$version.tgz" | base64 -w0)"
[ "$got" = "$integrity" ] || { echo "uplot-$version.tgz: checksum $got, expected $integrity" >&2; exit 1; }
tar xzf "$tmp/uplot-$version.tgz" -C "$tmp"
mkdir -p "$out"
cp "$tmp/package/dist/uPlot.esm.js" "$tmp/package/dist/uPlot.min.css" "$out/"
cp "$tmp/package/LICENSE" "$out/uPlot.LICENSE"
echo "uplot $version" > "$out/VERSION"
