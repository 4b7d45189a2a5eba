# Shared set-up for the load scripts: two nginx upstreams answering "stable" and "canary", and
# weir in front with a 90/10 split. Loopback only. Source it; call `setup_split THREADS`;
# everything started is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx
need curl curl

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

WEIR=127.0.0.1:18080
WEIR_ADMIN=127.0.0.1:18081

wait_for() { for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

setup_split() {
  local threads=${1:-1}
  cat >"$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:18001; keepalive_requests 1000000; location / { return 200 "stable"; } }
  server { listen 127.0.0.1:18002; keepalive_requests 1000000; location / { return 200 "canary"; } }
}
NGINX
  nginx -c "$WORK/nginx.conf" -p "$WORK"
  cat >"$WORK/weir.yaml" <<YAML
listeners: [{ name: main, address: $WEIR }]
admin: { address: $WEIR_ADMIN }
upstreams:
  - { name: stable, endpoints: [127.0.0.1:18001] }
  - { name: canary, endpoints: [127.0.0.1:18002] }
routes:
  - name: app
    backends: [{ upstream: stable, weight: 90 }, { upstream: canary, weight: 10 }]
YAML
  cargo build --release -q
  RUST_LOG=warn ./target/release/weir run --config "$WORK/weir.yaml" --threads "$threads" &
  PIDS+=($!)
  wait_for "http://$WEIR/"
}
