#!/usr/bin/env bash
# `sgpo bench` beside its PyTorch peer (benches/torch_peer.py: transformers' LlamaForCausalLM,
# the same measurements and definitions), back to back on the same flags and thread count, then
# a table of ours/peer ratios.
#
#   scripts/bench-peer.sh [PRESET...] [BENCH FLAGS...]
#   scripts/bench-peer.sh small smollm2-135m            # the default presets
#   scripts/bench-peer.sh tiny --steps 1 --seq-len 32   # flags go to both benches
#
# Environment:
#   SGPO_BIN         our binary (default: the release build in $CARGO_TARGET_DIR)
#   SGPO_DEVICE      our --device (default cpu); the peer runs on cpu for cpu, else cuda
#   SGPO_PEER_DEVICE the peer's --device (cpu|cuda), to override that mapping
#   SGPO_PYTHON      a python that already has torch and transformers (no venv then)
#   SGPO_PY_VENV     the venv to reuse, or create from PyPI (default /tmp/sgpo-peer-venv);
#                    PyPI's Linux torch is the CUDA build: for a CPU-only one set
#                    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
#   SGPO_THREADS     threads for both (default: all cores; ours gets RAYON_NUM_THREADS then)
#   SGPO_BENCH_OUT   where the JSONs go (default bench-results/)
set -euo pipefail
source "$(dirname "$0")/bench-paths.sh"
cd "$(dirname "$0")/.."

presets=()
while [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; do
  presets+=("$1")
  shift
done
[ ${#presets[@]} -gt 0 ] || presets=(small smollm2-135m)
extra=("$@")

device="${SGPO_DEVICE:-cpu}"
if [ -n "${SGPO_PEER_DEVICE:-}" ]; then
  peer_device="$SGPO_PEER_DEVICE"
elif [ "$device" = cpu ]; then
  peer_device=cpu
else
  peer_device=cuda
fi
threads="${SGPO_THREADS:-$(nproc)}"
if [ -n "${SGPO_THREADS:-}" ]; then
  export RAYON_NUM_THREADS="$SGPO_THREADS"
fi

if [ ! -x "$bin" ]; then
  echo "bench-peer: no sgpo binary at $bin (build it: cargo build --release, or set SGPO_BIN)" >&2
  exit 1
fi

# The peer's python: SGPO_PYTHON as given, else a venv that can import torch and transformers.
if [ -n "${SGPO_PYTHON:-}" ]; then
  py="$SGPO_PYTHON"
else
  venv="${SGPO_PY_VENV:-/tmp/sgpo-peer-venv}"
  py="$venv/bin/python"
  if ! "$py" -c 'import torch, transformers' 2>/dev/null; then
    echo "bench-peer: installing torch and transformers into $venv" >&2
    [ -x "$py" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch transformers gguf
  fi
fi

mkdir -p "$out"
for preset in "${presets[@]}"; do
  ours="$out/$preset-$device.ours.json"
  peer="$out/$preset-$device.peer.json"
  echo "== $preset: sgpo bench on $device, torch peer on $peer_device, $threads threads" >&2
  "$bin" bench --preset "$preset" --json --device "$device" "${extra[@]}" >"$ours"
  "$py" benches/torch_peer.py --preset "$preset" --json --device "$peer_device" --threads "$threads" "${extra[@]}" >"$peer"
  "$py" - "$ours" "$peer" <<'EOF'
import json, sys

ours, peer = (json.load(open(p)) for p in sys.argv[1:3])
print(f"\n{ours['preset']}: batch {ours['batch_size']} x {ours['seq_len']} tokens, {ours['parameters']} parameters")
print(f"peer: {peer.get('peer', '?')}")
for key in ("parameters", "batch_size", "seq_len"):
    if ours.get(key) != peer.get(key):
        print(f"WARNING: {key} differs: ours {ours.get(key)}, peer {peer.get(key)}")

rows = []  # (measurement, ours, peer, kind): kind time | rate | memory

def add(name, a, b, kind):
    if a is not None or b is not None:
        rows.append((name, a, b, kind))

mib = 1 << 20
for step in ("sft", "dpo"):
    o, p = ours.get(step), peer.get(step)
    if not o or not p:
        continue
    add(f"{step} step (s)", o["step_s"], p["step_s"], "time")
    add(f"{step} tokens/s", o["tokens_per_s"], p["tokens_per_s"], "rate")
    mem = lambda c, k: None if c.get(k) is None else c[k] / mib
    add(f"{step} peak RSS (MiB)", mem(o, "host_peak_bytes"), mem(p, "host_peak_bytes"), "memory")
    add(f"{step} device reserved (MiB)", mem(o, "device_reserved_bytes"), mem(p, "device_reserved_bytes"), "memory")
add("prefill tokens/s", ours.get("prefill_tokens_per_s"), peer.get("prefill_tokens_per_s"), "rate")
peer_gen = {(g["batch_size"], g["cache"]): g for g in peer.get("generation", [])}
for g in ours.get("generation", []):
    p = peer_gen.pop((g["batch_size"], g["cache"]), None)
    add(f"decode b={g['batch_size']} {'cache' if g['cache'] else 'no cache'} tok/s", g["tokens_per_s"],
        p and p["tokens_per_s"], "rate")
for (b, cache), p in peer_gen.items():
    add(f"decode b={b} {'cache' if cache else 'no cache'} tok/s", None, p["tokens_per_s"], "rate")

def fmt(v):
    if v is None:
        return "-"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.0f}"

def ratio(a, b, kind):
    if a is None or b is None or a == 0 or b == 0:
        return "-"
    # Times and memory: ours / peer. Rates: peer / ours. Either way > 1 means we are worse.
    return f"{(b / a) if kind == 'rate' else (a / b):.2f}"

header = ("measurement", "ours", "peer", "ours/peer time (>1: we are slower/bigger)")
table = [header] + [(n, fmt(a), fmt(b), ratio(a, b, k)) for n, a, b, k in rows]
widths = [max(len(r[i]) for r in table) for i in range(3)]
for i, r in enumerate(table):
    print(f"{r[0]:<{widths[0]}} | {r[1]:>{widths[1]}} | {r[2]:>{widths[2]}} | {r[3]}")
    if i == 0:
        print("-+-".join("-" * w for w in widths) + "-+-" + "-" * len(header[3]))
print("(rates: the ratio is peer rate / our rate, i.e. our time / peer time; memory: ours / peer)")
EOF
  echo "saved: $ours $peer" >&2
done
