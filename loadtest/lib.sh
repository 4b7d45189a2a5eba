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

# A self-signed certificate for localhost / 127.0.0.1, in $WORK.
make_cert() {
  openssl req -x509 -nodes -days 2 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
}

# nginx as a peer doing weir's job: a 90/10 split over the same two upstreams with keep-alive,
# one worker, access log off. Plain HTTP on $1 (HTTP/1.1), TLS on $2 (h2 and http/1.1) if given.
start_nginx_proxy() {
  local plain=$1 tls=${2:-}
  mkdir -p "$WORK/proxy"
  {
    echo "worker_processes 1; pid $WORK/proxy/nginx.pid; error_log $WORK/proxy/error.log;"
    echo "events { worker_connections 8192; }"
    echo "http { access_log off;"
    echo "  upstream stable { server 127.0.0.1:18001; keepalive 64; }"
    echo "  upstream canary { server 127.0.0.1:18002; keepalive 64; }"
    echo "  split_clients \"\${request_id}\" \$pool { 90% stable; * canary; }"
    echo "  server { listen 127.0.0.1:$plain; keepalive_requests 1000000;"
    echo "    location / { proxy_pass http://\$pool; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
    if [ -n "$tls" ]; then
      echo "  server { listen 127.0.0.1:$tls ssl http2; keepalive_requests 1000000;"
      echo "    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;"
      echo "    location / { proxy_pass http://\$pool; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
    fi
    echo "}"
  } >"$WORK/proxy/nginx.conf"
  nginx -c "$WORK/proxy/nginx.conf" -p "$WORK/proxy"
  PIDS+=("$(sleep 0.2; cat "$WORK/proxy/nginx.pid")")
}

# wrk summary on one line: LABEL req/s p50 p99.
wrk_line() {
  local label=$1; shift
  wrk "$@" --latency | awk -v n="$label" '
    /Requests\/sec/ { rps=$2 } /^ +50%/ { p50=$2 } /^ +99%/ { p99=$2 } /Non-2xx|Socket errors/ { err=err" "$0 }
    END { printf "%-34s %10s req/s  p50 %8s  p99 %8s%s\n", n, rps, p50, p99, err }'
}

# h2load summary on one line: LABEL req/s and failures.
h2load_line() {
  local label=$1; shift
  h2load "$@" 2>&1 | awk -v n="$label" '
    /^finished in/ { rps=$4 } /^requests:/ { failed=$10; errored=$12 }
    END { printf "%-34s %10s req/s  failed %s errored %s\n", n, rps, failed, errored }'
}
