# Shared by the scripts under scripts/; sourced, not run.
#
#   ROOT                the work tree (set on sourcing)
#   lead_lab_venv       the stack's Python venv (LEADLAB_VENV, default $ROOT/.venv)
#   cargo_target_dir    where cargo puts builds (CARGO_TARGET_DIR or the workspace's)
#   rotel_agent         the rotel collector binary shipped in the venv's rotel wheel
#   answers URL         true when URL answers 2xx within a second
#   wait_http URL       waits up to 60 s for URL to answer, else calls the script's die

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

answers() {
  python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null
}

wait_http() {
  local waited=0
  until answers "$1"; do
    (( waited++ < 120 )) || die "$1 did not answer in 60 s"
    sleep 0.5
  done
}
