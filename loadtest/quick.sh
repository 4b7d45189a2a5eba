#!/usr/bin/env bash
# A quick, bounded look at weir's throughput: wrk straight to an nginx upstream, then through weir
# doing a 90/10 split over two nginx upstreams. Loopback only; each run lasts DURATION.
# Usage: loadtest/quick.sh [DURATION=10s] [CONNECTIONS=50]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-50}
command -v wrk >/dev/null || apt-get install -y -qq wrk
command -v nginx >/dev/null || apt-get install -y -qq nginx

work=$(mktemp -d)
cleanup() {
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  [ -n "${weir_pid:-}" ] && kill "$weir_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:18001; keepalive_requests 1000000; location / { return 200 "stable"; } }
  server { listen 127.0.0.1:18002; keepalive_requests 1000000; location / { return 200 "canary"; } }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work"

cat >"$work/weir.yaml" <<YAML
listeners: [{ name: main, address: 127.0.0.1:18080 }]
admin: { address: 127.0.0.1:18081 }
upstreams:
  - { name: stable, endpoints: [127.0.0.1:18001] }
  - { name: canary, endpoints: [127.0.0.1:18002] }
routes:
  - name: app
    backends: [{ upstream: stable, weight: 90 }, { upstream: canary, weight: 10 }]
YAML
cargo build --release -q
RUST_LOG=warn ./target/release/weir run --config "$work/weir.yaml" --threads 1 &
weir_pid=$!
for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:18080/ && break; sleep 0.1; done

run() { wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$1" | awk -v n="$2" '
  /Requests\/sec/ { rps=$2 } /^ +50%/ { p50=$2 } /^ +99%/ { p99=$2 }
  END { printf "%-22s %12s req/s  p50 %8s  p99 %8s\n", n, rps, p50, p99 }'; }
echo "wrk -t1 -c$CONNS -d$DURATION, HTTP/1.1 keep-alive, weir with 1 worker thread"
run http://127.0.0.1:18001/ "direct (nginx)"
run http://127.0.0.1:18080/ "weir 90/10"
