#!/usr/bin/env bash
# Prepares scripts/bench-gpu.sh for a lent GPU machine (the device tool; README, performance):
# builds the release binary as it is, with burn's autotune (`--features autotune`) and with
# burn's fusion (`--features fusion`), strips and compresses the three into .gpu/ (ignored by
# git: a call carries at most 64 MiB, and one stripped binary is about 66 MB, 18 MB compressed), downloads the Vulkan loader there (the
# machine has NVIDIA's driver but may lack libvulkan), and prints the command to run there with
# `carry: [".gpu"]`. Build here, never there: the machine's time is counted.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
rm -rf .gpu && mkdir .gpu
built="$CARGO_TARGET_DIR/release/sgpo"
cargo build --release --locked --features autotune
strip -o .gpu/sgpo-autotune "$built"
cargo build --release --locked --features fusion
strip -o .gpu/sgpo-fusion "$built"
cargo build --release --locked
strip -o .gpu/sgpo "$built"
gzip -9 .gpu/sgpo .gpu/sgpo-autotune .gpu/sgpo-fusion
(cd .gpu && apt-get download libvulkan1 >/dev/null)
du -sh .gpu >&2
cat <<'RUN'
for f in .gpu/*.deb; do dpkg -x $f /; done; ldconfig; mkdir -p /tmp/sgpo-bin; for b in sgpo sgpo-autotune sgpo-fusion; do gunzip -c .gpu/$b.gz >/tmp/sgpo-bin/$b; chmod +x /tmp/sgpo-bin/$b; done; icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; [ -e $icd ] && export VK_DRIVER_FILES=$icd; SGPO_BIN=/tmp/sgpo-bin/sgpo SGPO_BIN_AUTOTUNE=/tmp/sgpo-bin/sgpo-autotune SGPO_BIN_FUSION=/tmp/sgpo-bin/sgpo-fusion SGPO_BENCH_OUT=/tmp/sgpo-bench SGPO_BENCH_PACK=$OUT/bench.tar.gz PYTHONUNBUFFERED=1 scripts/bench-gpu.sh
RUN
