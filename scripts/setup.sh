#!/usr/bin/env bash
# Installs what building and testing sgpo needs on a Debian/Ubuntu machine, then nothing else.
# Idempotent: a second run only checks.
set -euo pipefail

need_apt=()
# A Vulkan driver for wgpu. On a machine without a GPU, Mesa's lavapipe runs Vulkan on the CPU.
if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
  need_apt+=(mesa-vulkan-drivers)
fi
# The browser tests: Debian's Chromium (it bundles SwiftShader, a software WebGPU) and its
# WebDriver, and node for the page test (playwright-core from npm drives that same Chromium).
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The browser build target; a hang here has been seen once, so retry.
if ! rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown; then
  for _ in 1 2 3; do
    timeout 180 rustup target add wasm32-unknown-unknown && break
  done
fi
