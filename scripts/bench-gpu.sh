#!/usr/bin/env bash
# The benchmark on a machine with a GPU, in one go (README, performance). The parts run in the
# order of what their numbers decide, each under a time limit, so that a run cut short (a lent
# GPU machine allows 10 minutes a command; parts 0-4 fit in that by their limits, 575 s) still leaves
# the first parts' JSONs and this log (bench-gpu.log) in $SGPO_BENCH_OUT, and, where
# SGPO_BENCH_PACK names a .tar.gz, all of it packed there after every part (a lent machine
# returns at most 8 files from $OUT: scripts/gpu-stage.sh prepares the binaries and prints the
# command that runs this there). SGPO_PARTS="5 6 7" runs only those parts (a second call).
#   0. each binary's logits on this GPU against the CPU backend's on the same weights
#      (`sgpo bench --check`: the forward and a cached decode; smollm2-135m with the default
#      binary, small with the autotune and fusion ones): the kernels have been compared on
#      lavapipe and in Chromium, never on a GPU, so a failure here says its times are void;
#   1. smollm2-135m: `sgpo bench` on wgpu beside its PyTorch peer on CUDA (eager
#      transformers), with the ratios (scripts/bench-peer.sh): the issue's targets;
#   2. smollm2-135m's training steps with each switch only a GPU can judge: without the tiled
#      matrix product (matmul.wgsl, off on software adapters, so never measured: burn's fixed
#      routine instead), without the training path's RMSNorm and SwiGLU kernels (on a GPU
#      RMSNorm's take a workgroup per row, a variant lavapipe never runs), each step read back before the next
#      (`--read-every 1`, as before 2026-12-06; the default reads every 8 steps);
#   3. what the decode kernels new since the H100 run buy on this GPU (linear_qkv,
#      linear_swiglu; scripts/bench-kernels.sh, decoding with the KV cache only);
#   4. with SGPO_BIN_AUTOTUNE (the same code built with `--features autotune`): smollm2-135m
#      with burn's autotuned matrix products, training and decoding; with SGPO_BIN_FUSION
#      (built with `--features fusion`) the same with burn's fusion;
#   5. burn's fusion with our kernels off; small beside its peer; where a decode step's time
#      goes (`sgpo bench --profile`); the other decode kernels one by one;
#   6. smollm2-135m's training without the one-pass AdamW kernel and without
#      attention_softmax (one invocation per row of keys: fastest on lavapipe), small's without
#      matmul and read back each step;
#   7. tiny on wgpu, and every preset on our CPU backend on the same machine (is wgpu faster?);
# then one table of wgpu vs CPU from whatever finished. SGPO_BIN names a prebuilt binary
# (default: the release build); `python3` must have torch and transformers (the lent GPU
# machines' image has both). SGPO_PART_SCALE multiplies every part's time limit (default 1).
set -uo pipefail
cd "$(dirname "$0")/.."
export SGPO_BIN="${SGPO_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/sgpo-target}/release/sgpo}"
export SGPO_BENCH_OUT="${SGPO_BENCH_OUT:-$PWD/bench-results}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
mkdir -p "$SGPO_BENCH_OUT"
exec > >(tee -a "$SGPO_BENCH_OUT/bench-gpu.log") 2>&1
started=$SECONDS

# part N LIMIT NAME COMMAND...: part N of the list above, unless SGPO_PARTS leaves it out: run
# COMMAND (a program or one of the functions below) for at most LIMIT seconds (times
# SGPO_PART_SCALE), saying how long it took, or that it failed or was cut; the next part runs
# either way. Then the pack, made beside and moved into place, so that a call killed meanwhile
# still returns the last whole one.
part() {
  local number="$1" limit name
  case " ${SGPO_PARTS:-0 1 2 3 4 5 6 7} " in *" $number "*) ;; *) return 0 ;; esac
  limit=$(python3 -c "import sys; print(max(1, round($2 * float(sys.argv[1]))))" "${SGPO_PART_SCALE:-1}")
  name="$number. $3"
  shift 3
  echo "== [$((SECONDS - started)) s] $name (limit $limit s)"
  local t0=$SECONDS
  timeout -k 10 "$limit" bash -c '"$@"' part "$@"
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "== $name: cut at $limit s"
  elif [ $rc -ne 0 ]; then
    echo "== $name: failed (exit $rc)"
  else
    echo "== $name: $((SECONDS - t0)) s"
  fi
  pack
}
# The results so far as one file, where SGPO_BENCH_PACK names it (tar may say the log changed
# while it read it: the log is still being written).
pack() {
  [ -n "${SGPO_BENCH_PACK:-}" ] || return 0
  tar czf "$SGPO_BENCH_PACK.part" -C "$SGPO_BENCH_OUT" . 2>/dev/null
  mv -f "$SGPO_BENCH_PACK.part" "$SGPO_BENCH_PACK"
}
# check BINARY NAME FLAGS...: `BINARY bench --check --json FLAGS...` on wgpu into NAME.check.json
# (it fails past the tolerance, after writing the numbers).
check() {
  local bin="$1" out="$2"
  shift 2
  "$bin" bench --check --json --device wgpu "$@" >"$SGPO_BENCH_OUT/$out.check.json"
}
# ours BINARY NAME FLAGS...: `BINARY bench --json FLAGS...` into NAME.ours.json.
ours() {
  local bin="$1" out="$2"
  shift 2
  "$bin" bench --json "$@" >"$SGPO_BENCH_OUT/$out.ours.json"
}
train() {
  local out="$1"
  shift
  ours "$SGPO_BIN" "$out" --device wgpu --steps 3 --no-generation "$@"
}
peer() { SGPO_PYTHON="${SGPO_PYTHON:-python3}" SGPO_DEVICE=wgpu scripts/bench-peer.sh "$1" --steps 3; }
export -f check ours train peer

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
part 0 30 "smollm2-135m's logits against the CPU backend" check "$SGPO_BIN" smollm2-135m --preset smollm2-135m
[ -n "${SGPO_BIN_AUTOTUNE:-}" ] && part 0 15 "small's logits with burn autotune" check "$SGPO_BIN_AUTOTUNE" small-autotune --preset small
[ -n "${SGPO_BIN_FUSION:-}" ] && part 0 10 "small's logits with burn fusion" check "$SGPO_BIN_FUSION" small-fusion --preset small
part 1 140 "smollm2-135m on wgpu beside PyTorch on CUDA" peer smollm2-135m
part 2 45 "smollm2-135m training without matmul" train smollm2-135m-wgpu-no-matmul --preset smollm2-135m --no-kernel matmul
part 2 45 "smollm2-135m training without rms_norm and swiglu" train smollm2-135m-wgpu-no-norm-gate --preset smollm2-135m --no-kernel rms_norm,swiglu
part 2 45 "smollm2-135m training, each step read back" train smollm2-135m-wgpu-read-each-step --preset smollm2-135m --read-every 1
part 3 85 "decode kernels new since the H100 run, smollm2-135m" env SGPO_KERNELS="linear_qkv linear_swiglu" SGPO_BENCH_OUT="$SGPO_BENCH_OUT/new" scripts/bench-kernels.sh smollm2-135m --no-training --cache-only
if [ -n "${SGPO_BIN_AUTOTUNE:-}" ]; then
  part 4 100 "smollm2-135m with burn autotune" ours "$SGPO_BIN_AUTOTUNE" smollm2-135m-wgpu-autotune --device wgpu --preset smollm2-135m --steps 3 --cache-only
fi
if [ -n "${SGPO_BIN_FUSION:-}" ]; then
  part 4 60 "smollm2-135m with burn fusion" ours "$SGPO_BIN_FUSION" smollm2-135m-wgpu-fusion --device wgpu --preset smollm2-135m --steps 3 --cache-only
  part 5 60 "smollm2-135m with burn fusion, our kernels off" ours "$SGPO_BIN_FUSION" smollm2-135m-wgpu-fusion-no-kernels --device wgpu --preset smollm2-135m --steps 3 --cache-only --no-kernels
fi
part 5 120 "small on wgpu beside PyTorch on CUDA" peer small
part 5 60 "a decode step's time, smollm2-135m" "$SGPO_BIN" bench --device wgpu --preset smollm2-135m --profile
part 5 120 "the other decode kernels, smollm2-135m" env SGPO_KERNELS="linear_rows cached_attention sample" scripts/bench-kernels.sh smollm2-135m --no-training --cache-only
part 6 60 "smollm2-135m training without adamw" train smollm2-135m-wgpu-no-adamw --preset smollm2-135m --no-kernel adamw
part 6 60 "smollm2-135m training without attention_softmax" train smollm2-135m-wgpu-no-attention-softmax --preset smollm2-135m --no-kernel attention_softmax
part 6 45 "small training without matmul" train small-wgpu-no-matmul --preset small --no-kernel matmul
part 6 45 "small training, each step read back" train small-wgpu-read-each-step --preset small --read-every 1
part 7 45 "tiny on wgpu" ours "$SGPO_BIN" tiny-wgpu --device wgpu --preset tiny
for preset in tiny small smollm2-135m; do
  part 7 240 "$preset on our CPU backend" ours "$SGPO_BIN" "$preset-cpu" --device cpu --preset "$preset" --steps 1 --cache-only
done
echo "== [$((SECONDS - started)) s] done"
python3 - "$SGPO_BENCH_OUT" <<'PY' | tee "$SGPO_BENCH_OUT/table.txt"
import glob, json, os, sys
d = sys.argv[1]
print("\nlogits against the CPU backend | forward max diff | cached decode max diff | allowed | passed")
for path in sorted(glob.glob(f"{d}/*.check.json")):
    try:
        c = json.load(open(path))
    except (OSError, ValueError):
        continue
    print(f"{os.path.basename(path)[:-11]} | {c['forward_max_diff']:.1e} | {c['decode_max_diff']:.1e} | {c['allowed']:.1e} | {c['passed']}")
print("\npreset | device | SFT step | DPO step | prefill tok/s | decode b=1 tok/s | decode b=16 tok/s")
for preset in ("tiny", "small", "smollm2-135m"):
    for device in ("wgpu", "wgpu-no-matmul", "wgpu-no-norm-gate", "wgpu-read-each-step", "wgpu-autotune", "wgpu-fusion", "wgpu-fusion-no-kernels", "wgpu-no-adamw", "wgpu-no-attention-softmax", "cpu"):
        path = f"{d}/{preset}-{device}.ours.json"
        try:
            r = json.load(open(path))
        except (OSError, ValueError):
            continue  # not run, or cut before it wrote its report
        dec = {g["batch_size"]: g["tokens_per_s"] for g in r["generation"] if g["cache"]}
        step = lambda k: f"{r[k]['step_s']:.4f} s" if r.get(k) else "-"
        print(f"{preset} | {device} | {step('sft')} | {step('dpo')} | {r.get('prefill_tokens_per_s') or 0:.0f} | {dec.get(1, 0):.1f} | {dec.get(16, 0):.1f}")
PY
pack
