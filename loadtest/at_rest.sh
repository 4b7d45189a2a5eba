#!/usr/bin/env bash
# CPU and memory of an idle weir serving a large config: N routes (default 100,000), no traffic,
# measured over SECS seconds (default 30) after start-up, from /proc/PID/stat (user + system
# ticks). What the reload poll costs when nothing changes.
# Usage: loadtest/at_rest.sh [ROUTES=100000] [SECS=30] [WEIR_BINARY=target/release/weir]
source "$(dirname "$0")/lib.sh"
ROUTES=${1:-100000}
SECS=${2:-30}
BIN=${3:-}
if [ -z "$BIN" ]; then cargo build --release -q; BIN=./target/release/weir; fi

CONFIG="$WORK/big.yaml"
{
  echo "listeners: [{ name: main, address: $WEIR }]"
  echo "admin: { address: $WEIR_ADMIN }"
  echo "upstreams:"
  echo "  - { name: stable, endpoints: [127.0.0.1:18001] }"
  echo "  - { name: canary, endpoints: [127.0.0.1:18002] }"
  echo "routes:"
  awk -v n="$ROUTES" 'BEGIN { for (i = 0; i < n; i++) printf "  - { name: r%d, match: { path_prefix: /p%d }, backends: [{ upstream: stable, weight: 90 }, { upstream: canary, weight: 10 }] }\n", i, i }'
} >"$CONFIG"
echo "config: $ROUTES routes, $(du -h "$CONFIG" | cut -f1)"

RUST_LOG=warn "$BIN" run --config "$CONFIG" --threads 2 &
PID=$!
PIDS+=("$PID")
for _ in $(seq 600); do curl -sf -o /dev/null "http://$WEIR_ADMIN/readyz" && break; sleep 0.2; done
sleep 3
ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
t0=$(ticks)
sleep "$SECS"
t1=$(ticks)
hz=$(getconf CLK_TCK)
echo "$BIN at rest: $(( t1 - t0 )) ticks in ${SECS}s = $(awk -v t=$(( t1 - t0 )) -v s="$SECS" -v hz="$hz" 'BEGIN { printf "%.1f", 100 * t / (s * hz) }')% of one core; RSS $(awk '/VmRSS/ { print $2 }' "/proc/$PID/status") KB"
