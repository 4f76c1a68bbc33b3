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

# export_failures PORT: the telemetry a service on 127.0.0.1:PORT lost so far (spans and
# metric points dropped at a full export queue or failed exports, from /healthz).
export_failures() {
  python3 -c "import json,urllib.request,sys; print(json.load(urllib.request.urlopen(sys.argv[1]))['telemetry_export_failures'])" \
    "http://127.0.0.1:$1/healthz"
}

# The machine's busy CPU share, in percent, over the next $1 seconds (/proc/stat).
cpu_busy_percent() {
  local label user nice system idle iowait irq softirq steal rest
  read -r label user nice system idle iowait irq softirq steal rest </proc/stat
  local total=$((user + nice + system + idle + iowait + irq + softirq + steal)) quiet=$((idle + iowait))
  sleep "$1"
  read -r label user nice system idle iowait irq softirq steal rest </proc/stat
  total=$((user + nice + system + idle + iowait + irq + softirq + steal - total))
  quiet=$((idle + iowait - quiet))
  echo $(( total > 0 ? 100 * (total - quiet) / total : 0 ))
}

# Waits until the machine is below $1 % busy over a second, at most $2 seconds, and
# prints the seconds waited: what one measured target leaves running (rotel's batches,
# ClickHouse's inserts and merges) must not fall into the next one's window.
settle() {
  local limit=$1 max=$2 waited=0
  while (( waited < max )) && (( $(cpu_busy_percent 1) >= limit )); do
    waited=$((waited + 1))
  done
  echo "$waited"
}

wait_http() {
  local waited=0
  until answers "$1"; do
    (( waited++ < 120 )) || die "$1 did not answer in 60 s"
    sleep 0.5
  done
}
