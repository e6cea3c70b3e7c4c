#!/usr/bin/env bash
# What each of our WGSL kernels buys: `sgpo bench` on wgpu with every kernel on, every kernel
# off, and each kernel off alone, then a table of time with it off / time with it on for each
# measurement (above 1: the kernel makes that faster; rates are turned into times).
#
#   scripts/bench-kernels.sh PRESET [BENCH FLAGS...]
#   scripts/bench-kernels.sh small --steps 1 --seq-len 64 --batch-size 4
#   SGPO_KERNELS="linear_rows sample" scripts/bench-kernels.sh smollm2-135m --no-training
#
# Environment: SGPO_BIN (default: the release build), SGPO_BENCH_OUT (default bench-results/),
# SGPO_KERNELS (the kernels to switch off one by one; default all), SGPO_REPEATS (runs of each
# setting, interleaved; the table shows the median; default 1).
set -euo pipefail
source "$(dirname "$0")/bench-paths.sh"
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 PRESET [BENCH FLAGS...]" >&2; exit 2; }
preset="$1"
shift
kernels="${SGPO_KERNELS:-token_logprobs linear_rows linear_swiglu linear_qkv rms_norm swiglu rope_into cached_attention sample adamw attention_softmax matmul}"
dir="$out/kernels-$preset"
mkdir -p "$dir"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
repeats="${SGPO_REPEATS:-1}"
bench() { "$bin" bench --preset "$preset" --device wgpu --json "$@"; }
for r in $(seq "$repeats"); do
  echo "== $preset (run $r of $repeats): all kernels on" >&2
  bench "$@" >"$dir/on.$r.json"
  echo "== $preset (run $r of $repeats): all kernels off" >&2
  bench "$@" --no-kernels >"$dir/off.$r.json"
  for k in $kernels; do
    echo "== $preset (run $r of $repeats): $k off" >&2
    bench "$@" --no-kernel "$k" >"$dir/$k.$r.json"
  done
done
python3 - "$dir" "$repeats" $kernels <<'PY'
import json, statistics, sys
d, repeats, kernels = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
runs = {name: [json.load(open(f"{d}/{name}.{r}.json")) for r in range(1, repeats + 1)] for name in ["on", "off", *kernels]}

def seconds(r):
    """Each measurement as seconds per unit of work (rates inverted), by name."""
    out = {}
    for step in ("sft", "dpo"):
        if r.get(step):
            out[f"{step} step"] = r[step]["step_s"]
    if r.get("prefill_tokens_per_s"):
        out["prefill"] = 1 / r["prefill_tokens_per_s"]
    for g in r.get("generation", []):
        if g["cache"]:
            out[f"decode b={g['batch_size']}"] = 1 / g["tokens_per_s"]
    return out

def median_seconds(reports):
    each = [seconds(r) for r in reports]
    return {name: statistics.median(e[name] for e in each) for name in each[0]}

medians = {name: median_seconds(reports) for name, reports in runs.items()}
on = medians["on"]
cols = ["off", *kernels]
header = ["measurement (on)"] + [f"{c} off" if c != "off" else "all off" for c in cols]
rows = [header]
for name, t in on.items():
    shown = f"{t:.4f} s" if "step" in name else f"{1 / t:.0f} tok/s"
    rows.append([f"{name} ({shown})"] + [f"{medians[c][name] / t:.2f}" for c in cols])
widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
for i, r in enumerate(rows):
    print(" | ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
    if i == 0:
        print("-|-".join("-" * w for w in widths))
r = runs["on"][0]
print(f"({r['preset']}, batch {r['batch_size']} x {r['seq_len']}, median of {repeats} run(s) each; cells: time with the kernel(s) off / time with all on)")
PY
