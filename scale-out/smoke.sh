#!/usr/bin/env bash
# Opt-in smoke run of scale-out/dpo.py (not part of scripts/test.sh): export a tiny model with sgpo,
# take ONE TRL DPO step on the CPU, check the saved model loads in transformers and moved.
#
#   scale-out/smoke.sh [PAIRS.jsonl ...]     # default: a four-pair file written here
#
# Environment:
#   SGPO_SCALEOUT_VENV  Python venv (default /tmp/sgpo-scaleout-venv). Made and filled from PyPI with
#                       `pip install -r scale-out/requirements.txt` when it can't import trl, peft
#                       and datasets; an existing venv that can is used as it is.
#   SGPO_BIN            the sgpo binary (default $CARGO_TARGET_DIR/release/sgpo, as scripts/env.sh).
#   SGPO_SCALEOUT_WORK  scratch directory (default: a fresh mktemp -d, kept for inspection).
#
# From scratch this is plain pip (torch from PyPI is a few GB). To avoid a second torch where a
# venv with torch+transformers+accelerate already exists (say /tmp/pyenv), it was tested with:
#   python3 -m venv /tmp/scaleout-venv
#   echo /tmp/pyenv/lib/python3.11/site-packages > /tmp/scaleout-venv/lib/python3.11/site-packages/_pyenv.pth
#   /tmp/scaleout-venv/bin/pip install trl peft datasets   # lands in scaleout-venv; pyenv untouched
#   SGPO_SCALEOUT_VENV=/tmp/scaleout-venv SGPO_BIN=... scale-out/smoke.sh
# (pip never uninstalls outside its own venv: a different version would shadow, not replace.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="${SGPO_SCALEOUT_VENV:-/tmp/sgpo-scaleout-venv}"
sgpo="${SGPO_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/sgpo-target}/release/sgpo}"
[ -x "$sgpo" ] || { echo "no sgpo binary at $sgpo: cargo build --release, or set SGPO_BIN" >&2; exit 1; }

py="$venv/bin/python"
if ! { [ -x "$py" ] && "$py" -c "import trl, peft, datasets" 2>/dev/null; }; then
  echo "== making $venv from PyPI (scale-out/requirements.txt)"
  [ -x "$py" ] || python3 -m venv "$venv"
  "$py" -m pip install -q --upgrade pip
  "$py" -m pip install -q -r "$here/requirements.txt"
fi
"$py" -c "import torch, transformers, trl, peft; print('torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| peft', peft.__version__)"

work="${SGPO_SCALEOUT_WORK:-$(mktemp -d /tmp/sgpo-scaleout.XXXXXX)}"
mkdir -p "$work"
echo "== work directory $work"

# A committed random tiny Llama with a chat template, through sgpo's own exporter.
"$sgpo" export --model "$root/tests/fixtures/llama-tiny" --out "$work/model" --device cpu

if [ $# -gt 0 ]; then
  pairs=("$@")
else
  pairs=("$work/pairs-iter1.jsonl")
  cat > "${pairs[0]}" <<'JSONL'
{"prompt":"add: 2 + 3","chosen":"5","rejected":"6"}
{"prompt":"sort the numbers: 3 1 2","chosen":"1 2 3","rejected":"3 2 1"}
{"prompt":"uppercase: sun","chosen":"SUN","rejected":"sun"}
{"prompt":"remove duplicates: a b a","chosen":"a b","rejected":"a b a"}
JSONL
fi

echo "== one DPO step on the CPU"
start=$SECONDS
"$py" "$here/dpo.py" --model "$work/model" --pairs "${pairs[@]}" --out "$work/dpo" \
  --cpu --max-steps 1 --batch-size 2 --grad-accum 1
echo "== DPO run took $((SECONDS - start)) s (imports and saving included)"

"$py" - "$work/model" "$work/dpo" <<'PY'
import math, sys
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

before, after = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(after, dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(after)
ids = tok.apply_chat_template([{"role": "user", "content": "add: 2 + 3"}], add_generation_prompt=True,
                              return_tensors="pt", return_dict=True)["input_ids"]
with torch.no_grad():
    logits = model(ids).logits
assert torch.isfinite(logits).all(), "non-finite logits from the trained model"
a, b = load_file(f"{before}/model.safetensors"), load_file(f"{after}/model.safetensors")
assert a.keys() == b.keys(), f"tensor names differ: {sorted(a.keys() ^ b.keys())}"
moved = max((a[k] - b[k]).abs().max().item() for k in a)
assert moved > 0 and math.isfinite(moved), f"weights did not move (max |change| {moved})"
print(f"ok: {after} loads ({type(model).__name__}, {len(b)} tensors), max |weight change| {moved:.3g}")
PY
