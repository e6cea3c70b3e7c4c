# Sourced by the scripts: one build directory outside the checkout, so a fresh clone on the same
# machine (as CI makes) reuses the compiled dependencies, and quiet, private Mesa runtime dirs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sgpo-target}"
# trunk, wasm-pack and wasm-bindgen as scripts/tools.sh installs them.
case ":$PATH:" in *":$HOME/.cache/sgpo-tools/bin:"*) ;; *) export PATH="$HOME/.cache/sgpo-tools/bin:$PATH" ;; esac
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR="$HOME/.cache/sgpo-xdg"
  mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
fi
