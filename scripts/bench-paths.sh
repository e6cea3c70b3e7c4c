# Sourced by the bench scripts, before they cd: `bin` (our binary: SGPO_BIN, default the
# release build) and `out` (where JSONs go: SGPO_BENCH_OUT, default bench-results/), both made
# absolute against the caller's directory.
bin="${SGPO_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/sgpo-target}/release/sgpo}"
case "$bin" in /*) ;; */*) bin="$PWD/$bin" ;; esac
out="${SGPO_BENCH_OUT:-bench-results}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
