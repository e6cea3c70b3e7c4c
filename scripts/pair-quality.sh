#!/usr/bin/env bash
# Pair quality by improver target and filter: SGPO from one SFT run with each variant, then
# the judge's verdict on the kept pairs per iteration (pairs_judged, chosen_is_greedy in
# metrics.jsonl). Usage: scripts/pair-quality.sh SFT_RUN OUT_DIR   (README: "Pair quality").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
sft="${1:?SFT run directory}"; out="${2:?output directory}"
sgpo="${SGPO_BIN:-$CARGO_TARGET_DIR/release/sgpo}"
variants=(
  "edit --improver-targets edit:0.5"
  "words --improver-targets words:0.5"
  "conf --pair-filter confidence:0"
  "wordsconf --improver-targets words:0.5 --pair-filter confidence:0"
  "maj --pair-filter majority:3:0.67"
)
for v in "${variants[@]}"; do
  set -- $v; name=$1; shift
  [ -f "$out/$name/latest" ] && continue
  "$sgpo" train --method sgpo --init "$sft" --out "$out/$name" "$@" --device cpu >"$out-$name.log" 2>&1
done
for v in "${variants[@]}"; do
  name=${v%% *}
  python3 - "$out/$name/metrics.jsonl" "$name" <<'PY'
import json, sys
its = [json.loads(l) for l in open(sys.argv[1]) if '"event":"iteration"' in l]
its = [e for e in its if e["iteration"] > 0]
j = [sum((e.get("pairs_judged") or [0, 0, 0])[i] for e in its) for i in range(3)]
kept = [e["pairs_built"] for e in its]
greedy = sum((e.get("chosen_is_greedy") or 0) * e["pairs_built"] for e in its) / max(1, sum(kept))
print(f"{sys.argv[2]}: kept {kept}, judge better/tied/worse {j}, better share {j[0] / max(1, sum(j)):.2f}, "
      f"chosen = greedy {greedy:.2f}, win rate vs SFT {its[-1]['policy_win_rate_vs_sft']:.3f}")
PY
done
