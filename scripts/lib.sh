# Shared by scripts/run, scripts/test, scripts/bench and scripts/stack; sourced, not run.
#
#   ROOT                the work tree (set on sourcing)
#   lead_lab_venv       the stack's Python venv (LEADLAB_VENV, default $ROOT/.venv)
#   cargo_target_dir    where cargo puts builds (CARGO_TARGET_DIR or the workspace's)
#   rotel_agent         the rotel collector binary shipped in the venv's rotel wheel

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

lead_lab_venv() { printf '%s\n' "${LEADLAB_VENV:-$ROOT/.venv}"; }

cargo_target_dir() {
  cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

rotel_agent() {
  "$(lead_lab_venv)/bin/python" -c \
    'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))'
}
