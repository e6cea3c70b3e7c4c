#!/usr/bin/env bash
# Rebuild tests/fixtures/ (tiny HF checkpoints and transformers' outputs on them) in a venv
# from PyPI. Not part of the test command: the fixtures are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SGPO_PY_VENV:-$HOME/.cache/sgpo-py}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch transformers safetensors tokenizers
fi
rm -rf tests/fixtures/llama-tiny tests/fixtures/qwen2-tiny tests/fixtures/llama-tiny-f16
"$venv/bin/python" scripts/make-fixtures.py tests/fixtures
