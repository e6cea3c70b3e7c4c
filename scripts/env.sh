# Sourced by the scripts: one build directory outside the checkout, so a fresh clone on the same
# machine (as CI makes) reuses the compiled dependencies, and quiet, private Mesa runtime dirs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sgpo-target}"
# The pinned tools (scripts/tools.sh: trunk, wasm-pack, wasm-bindgen; npm's binaryen and uPlot),
# kept outside the checkout like the build directory.
export SGPO_TOOLS="${SGPO_TOOLS:-$HOME/.cache/sgpo-tools}"
case ":$PATH:" in *":$SGPO_TOOLS/bin:"*) ;; *) export PATH="$SGPO_TOOLS/bin:$PATH" ;; esac
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR="$HOME/.cache/sgpo-xdg"
  mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
fi
