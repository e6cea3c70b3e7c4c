#!/usr/bin/env bash
# The benchmark on a machine with a GPU, in one go (README, performance):
#   1. smollm2-135m and small: `sgpo bench` on wgpu beside its PyTorch peer on CUDA (eager
#      transformers), with the ratios (scripts/bench-peer.sh);
#   2. tiny on wgpu, and every preset on our CPU backend on the same machine (is wgpu faster?);
#   3. what each decode kernel buys on this GPU (scripts/bench-kernels.sh, decoding only);
#   4. where a decode step's time goes (`sgpo bench --profile`), and smollm2-135m's training
#      steps without the one-pass AdamW kernel and without attention_softmax (one invocation
#      per row of keys: fastest on lavapipe, unmeasured on a GPU) (beside step 1's, which have
#      both), and without the tiled matrix product (matmul.wgsl: burn's fixed routine instead;
#      off on software adapters, so never measured before a GPU), and without the training
#      path's RMSNorm and SwiGLU kernels (rms_norm's backward is also off on software adapters),
#      and with each training step read back before the next (`--read-every 1`, as before
#      2026-12-06; the default reads every 8 steps, a 3-step timing once at its end);
#   5. with SGPO_BIN_AUTOTUNE (the same code built with `--features autotune`): smollm2-135m on
#      wgpu with burn's autotuned matrix products;
# then one table of wgpu vs CPU. SGPO_BIN names a prebuilt binary (default: the release
# build); `python3` must have torch and transformers (the lent GPU machines' image has both).
set -uo pipefail
cd "$(dirname "$0")/.."
export SGPO_BIN="${SGPO_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/sgpo-target}/release/sgpo}"
export SGPO_BENCH_OUT="${SGPO_BENCH_OUT:-$PWD/bench-results}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
mkdir -p "$SGPO_BENCH_OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for preset in smollm2-135m small; do
  SGPO_PYTHON="${SGPO_PYTHON:-python3}" SGPO_DEVICE=wgpu scripts/bench-peer.sh "$preset" --steps 3
done
"$SGPO_BIN" bench --device wgpu --preset tiny --json >"$SGPO_BENCH_OUT/tiny-wgpu.ours.json"
for preset in tiny small smollm2-135m; do
  echo "== $preset on our CPU backend" >&2
  "$SGPO_BIN" bench --device cpu --preset "$preset" --steps 1 --json >"$SGPO_BENCH_OUT/$preset-cpu.ours.json"
done
SGPO_KERNELS="linear_rows linear_qkv linear_swiglu cached_attention sample" scripts/bench-kernels.sh smollm2-135m --no-training
"$SGPO_BIN" bench --device wgpu --preset smollm2-135m --profile
echo "== smollm2-135m training on wgpu without the adamw kernel" >&2
"$SGPO_BIN" bench --device wgpu --preset smollm2-135m --steps 3 --no-generation --no-kernel adamw --json >"$SGPO_BENCH_OUT/smollm2-135m-wgpu-no-adamw.ours.json"
echo "== smollm2-135m training on wgpu without the attention_softmax kernel" >&2
"$SGPO_BIN" bench --device wgpu --preset smollm2-135m --steps 3 --no-generation --no-kernel attention_softmax --json >"$SGPO_BENCH_OUT/smollm2-135m-wgpu-no-attention-softmax.ours.json"
echo "== smollm2-135m and small training on wgpu without the tiled matmul kernel" >&2
for preset in smollm2-135m small; do
  "$SGPO_BIN" bench --device wgpu --preset "$preset" --steps 3 --no-generation --no-kernel matmul --json >"$SGPO_BENCH_OUT/$preset-wgpu-no-matmul.ours.json"
done
echo "== smollm2-135m training on wgpu without the rms_norm and swiglu kernels" >&2
"$SGPO_BIN" bench --device wgpu --preset smollm2-135m --steps 3 --no-generation --no-kernel rms_norm,swiglu --json >"$SGPO_BENCH_OUT/smollm2-135m-wgpu-no-norm-gate.ours.json"
echo "== smollm2-135m and small training on wgpu, each step read back before the next" >&2
for preset in smollm2-135m small; do
  "$SGPO_BIN" bench --device wgpu --preset "$preset" --steps 3 --no-generation --read-every 1 --json >"$SGPO_BENCH_OUT/$preset-wgpu-read-each-step.ours.json"
done
if [ -n "${SGPO_BIN_AUTOTUNE:-}" ]; then
  echo "== smollm2-135m on wgpu, burn autotune" >&2
  "$SGPO_BIN_AUTOTUNE" bench --device wgpu --preset smollm2-135m --steps 3 --json >"$SGPO_BENCH_OUT/smollm2-135m-wgpu-autotune.ours.json"
fi
python3 - "$SGPO_BENCH_OUT" <<'PY'
import json, os, sys
d = sys.argv[1]
print("\npreset | device | SFT step | DPO step | prefill tok/s | decode b=1 tok/s | decode b=16 tok/s")
for preset in ("tiny", "small", "smollm2-135m"):
    for device in ("wgpu", "wgpu-no-matmul", "wgpu-no-norm-gate", "wgpu-read-each-step", "wgpu-autotune", "cpu"):
        path = f"{d}/{preset}-{device}.ours.json"
        if not os.path.exists(path):
            continue
        r = json.load(open(path))
        dec = {g["batch_size"]: g["tokens_per_s"] for g in r["generation"] if g["cache"]}
        step = lambda k: f"{r[k]['step_s']:.4f} s" if r.get(k) else "-"
        print(f"{preset} | {device} | {step('sft')} | {step('dpo')} | {r.get('prefill_tokens_per_s') or 0:.0f} | {dec.get(1, 0):.1f} | {dec.get(16, 0):.1f}")
PY
